"""Shared fixtures: the engines every parity test runs on (``support/engine_cases.py``).

``tests/`` mirrors the package: one folder per package of ``src/handprop``
(``teaching/`` holds ``gradcheck`` and ``trace``, ``project/`` the README,
packaging and error-message checks), and ``support/`` the CUDA host emulator
and the CuPy stand-in that the CPU suite runs the cuda engine on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

from engine_cases import ENGINE_PARAMS, FUSED_ENGINE_PARAMS, make_engine  # noqa: E402

from handprop.engines import get_engine  # noqa: E402


@pytest.fixture(params=ENGINE_PARAMS)
def engine(request):
    """Every engine that can run here, the reference included."""
    return make_engine(request.param)


@pytest.fixture(params=FUSED_ENGINE_PARAMS)
def fused_engine(request):
    """Every engine except the reference, to compare against ``cpu``."""
    return make_engine(request.param)


@pytest.fixture
def cpu():
    return get_engine("cpu")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
