"""The ``numba`` engine's wing: NumPy arrays, Numba-JIT kernels on the hot paths.

``engine`` (the dense and element-wise primitives) and ``windows`` (convolution and pooling)
check inputs at the boundary and call the kernels: ``kernels`` (element-wise),
``window_kernels`` (im2col, tiled products), ``direct_kernels`` (direct convolutions, on
``simd``'s vector loops), ``pool_kernels``; ``threads`` shares their work between threads,
``blas`` calls BLAS from compiled code, and ``epoch`` compiles a whole training epoch
(``epoch_kernels``, ``loss_kernels``, ``math_kernels``).
"""
