"""The ``cuda`` engine's wing: CuPy arrays, cuBLAS, and the CUDA C kernels in ``kernels/``
(package data), found by ``source`` and launched by ``engine`` and ``windows``."""
