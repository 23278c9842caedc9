"""The benchmark's own names do not clash with the library's."""

from __future__ import annotations

import pytest

from handprop import bench
from handprop.engines import available_engines
from handprop.errors import HandpropError
from handprop.optim.optimizers import OPTIMIZERS


def test_no_clashing_names():
    assert not hasattr(bench, "available_engines")  # engines.available_engines is the statuses
    assert not hasattr(bench, "OPTIMIZERS")  # optim.OPTIMIZERS is every optimizer


def test_bench_engines_are_the_usable_ones():
    usable = [s.name for s in available_engines() if s.available]
    assert bench.bench_engines() == usable
    assert bench.bench_engines(["cpu"]) == ["cpu"]
    with pytest.raises(HandpropError, match="unknown engine"):
        bench.bench_engines(["nosuch"])


def test_bench_optimizers_are_library_optimizers():
    assert bench.BENCH_OPTIMIZERS == ("sgd", "adam")
    assert set(bench.BENCH_OPTIMIZERS) <= set(OPTIMIZERS)
    assert set(bench.LEARNING_RATES) == set(bench.BENCH_OPTIMIZERS)
