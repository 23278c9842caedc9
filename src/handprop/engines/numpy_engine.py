"""The ``cpu`` engine: NumPy arrays and the reference primitives, unchanged."""

from __future__ import annotations

import array_api_compat.numpy as np_xp

from .base import Engine


class NumpyEngine(Engine):
    name = "cpu"

    def __init__(self):
        super().__init__(np_xp)
