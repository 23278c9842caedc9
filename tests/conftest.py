"""Shared fixtures: the list of engines every parity test runs on.

The list is built at import. ``cpu`` is always there; ``numba`` when it
imports; ``cuda`` only with a usable GPU (marked ``gpu``); and
``cuda-emulated`` -- the exact ``kernels/*.cu`` source compiled as C++ for the
host -- wherever a C++ compiler is present, so the CUDA kernels are checked on
every machine.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from handprop.engines import engine_status, get_engine


def _engine_params():
    params = [pytest.param("cpu", id="cpu")]
    status = engine_status("numba")
    params.append(
        pytest.param("numba", id="numba", marks=[] if status.available else
                     pytest.mark.skip(reason=f"numba engine unavailable: {status.reason}"))
    )
    status = engine_status("cuda")
    params.append(
        pytest.param("cuda", id="cuda", marks=[pytest.mark.gpu] + ([] if status.available else
                     [pytest.mark.skip(reason=f"no usable GPU: {status.reason}")]))
    )
    if importlib.util.find_spec("cuda_emulation") is not None or _local_module("cuda_emulation"):
        params.append(pytest.param("cuda-emulated", id="cuda-emulated"))
    return params


def _local_module(name: str) -> bool:
    from pathlib import Path

    return (Path(__file__).parent / f"{name}.py").exists()


ENGINE_PARAMS = _engine_params()
FUSED_ENGINE_PARAMS = [p for p in ENGINE_PARAMS if p.values[0] != "cpu"]


def make_engine(name: str):
    if name == "cuda-emulated":
        from cuda_emulation import emulated_engine

        return emulated_engine()
    return get_engine(name)


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
