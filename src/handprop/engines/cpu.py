"""The ``cpu`` engine: NumPy arrays and the reference primitives, unchanged."""

from __future__ import annotations

import array_api_compat.numpy as np_xp
import numpy as np

from .base import Engine
from .host_memory import keep_freed_memory


class NumpyEngine(Engine):
    name = "cpu"

    def __init__(self):
        super().__init__(np_xp)
        keep_freed_memory()  # no page faults for each step's big arrays (host_memory.py)

    def matmul(self, a, b, out=None):
        # BLAS writes straight into ``out``: no temporary, no copy.
        if (type(out) is np.ndarray and type(a) is np.ndarray and type(b) is np.ndarray
                and a.dtype == b.dtype == out.dtype and out.flags.c_contiguous
                and a.ndim == b.ndim == 2 and out.shape == (a.shape[0], b.shape[1])):
            return np.matmul(a, b, out=out)
        return super().matmul(a, b, out)
