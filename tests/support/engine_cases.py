"""The engines a test or benchmark runs on, built once at import.

``cpu`` is always there; ``numba`` when it imports; ``cuda`` only with a
usable GPU (marked ``gpu``); and ``cuda-emulated`` -- the exact
``kernels/*.cu`` source compiled as C++ for the host -- wherever a C++
compiler is present, so the CUDA kernels are checked on every machine.
``bench/`` takes its list from here too (without the emulator).
"""

from __future__ import annotations

import pytest

from handprop.engines import ENGINE_NAMES, engine_status, get_engine

EMULATED = "cuda-emulated"


def engine_params(names=None, emulated: bool = True) -> list:
    """One ``pytest.param`` per engine in ``names`` (default: every known engine),
    skipped with the reason where it cannot run here."""
    params = []
    for name in names or ENGINE_NAMES:
        status = engine_status(name)
        marks = [pytest.mark.gpu] if name == "cuda" else []
        if not status.available:
            why = f"no usable GPU: {status.reason}" if name == "cuda" else \
                f"{name} engine unavailable: {status.reason}"
            marks.append(pytest.mark.skip(reason=why))
        params.append(pytest.param(name, id=name, marks=marks))
    if emulated:
        params.append(pytest.param(EMULATED, id=EMULATED))
    return params


ENGINE_PARAMS = engine_params()
FUSED_ENGINE_PARAMS = [p for p in ENGINE_PARAMS if p.values[0] != "cpu"]


def make_engine(name: str):
    if name == EMULATED:
        from cuda_emulation import emulated_engine

        return emulated_engine()
    return get_engine(name)
