"""Helpers shared by the benchmark suites (imported by name: ``from benchlib import ...``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from handprop import bench as hb


def _engines():
    from handprop.engines import ENGINE_NAMES, engine_status

    wanted = os.environ.get("HANDPROP_BENCH_ENGINES")
    names = [n.strip() for n in wanted.split(",")] if wanted else list(ENGINE_NAMES)
    params = []
    for name in names:
        status = engine_status(name)
        marks = [] if status.available else [pytest.mark.skip(reason=f"{name}: {status.reason}")]
        params.append(pytest.param(name, id=name, marks=marks))
    return params


ENGINES = _engines()
OUT = Path(os.environ.get("HANDPROP_BENCH_OUT", Path(__file__).parent / "out"))

needs_torch = pytest.mark.skipif(not hb.torch_available(),
                                 reason="PyTorch not installed (pip install 'handprop[compare]')")
