"""Helpers shared by the benchmark suites (imported by name: ``from benchlib import ...``).

The measurements only these suites and ``make_results.py`` use live beside this
file and do not ship in the wheel: ``primitives`` (each fused primitive alone),
``scaling`` (cost against batch size and width), ``profiling`` (where a step's
time goes) and ``accuracy`` (time to a test accuracy).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "support"))


def _engines():
    """The tests' engine list (``tests/support/engine_cases.py``), without the host
    emulator; ``HANDPROP_BENCH_ENGINES=cpu,numba`` narrows it."""
    from engine_cases import engine_params

    wanted = os.environ.get("HANDPROP_BENCH_ENGINES")
    names = [n.strip() for n in wanted.split(",")] if wanted else None
    return engine_params(names, emulated=False)


ENGINES = _engines()
#: the names in ENGINES that can run here (not skipped)
USABLE_ENGINES = [p.values[0] for p in ENGINES if not any(m.name == "skip" for m in p.marks)]
OUT = Path(os.environ.get("HANDPROP_BENCH_OUT", Path(__file__).resolve().parents[1] / "out"))

def needs(comparator: str):
    """Skip (with the reason) where ``comparator`` cannot run."""
    from handprop.bench.comparators import comparator_unavailable

    why = comparator_unavailable(comparator)
    return pytest.mark.skipif(bool(why), reason=f"{comparator}: {why}")
