"""The checks every numba primitive runs at its boundary before calling a kernel.

They run on every call: plain loops, since a generator in ``all()`` alone cost more than a
small kernel.
"""

from __future__ import annotations

import numpy as np

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def floats(first, *rest) -> bool:
    """All plain ndarrays of one supported (native-order) float dtype."""
    if type(first) is not np.ndarray:
        return False
    dt = first.dtype
    if dt not in FLOATS:
        return False
    for a in rest:
        if type(a) is not np.ndarray or a.dtype != dt:
            return False
    return True


def inplace_ok(*arrays) -> bool:
    """Every array C-contiguous and writeable (updated in place by a kernel)."""
    for a in arrays:
        flags = a.flags
        if not (flags.c_contiguous and flags.writeable):
            return False
    return True
