"""How cost grows: samples/s against batch size (1..4096) and hidden width
(32..2048) per engine, PyTorch and the GEMM ceiling, side by side; writes
``scaling.png`` and ``scaling.json`` to ``$HANDPROP_BENCH_OUT`` (default
``bench/out``). Also the time-to-accuracy of the README's best MNIST recipe
(marked ``slow``: minutes per engine)."""

from __future__ import annotations

import json

import pytest
from benchlib import ENGINES, USABLE_ENGINES
from benchlib.accuracy import time_to_accuracy
from benchlib.scaling import measure_scaling, plot_scaling

from handprop import bench as hb


def test_scaling(benchmark, record, out_dir):
    engines = list(USABLE_ENGINES)
    result = {}

    def measure():
        result["rows"] = measure_scaling(engines, repeats=3)

    benchmark.group = "scaling"
    benchmark.pedantic(measure, rounds=1, iterations=1)
    rows = result["rows"]
    (out_dir / "scaling.json").write_text(json.dumps(rows, indent=2))
    plot_scaling(rows, out_dir / "scaling.png")
    record(rows=rows)


@pytest.mark.slow
@pytest.mark.parametrize("engine", [*ENGINES, pytest.param("torch", id="torch", marks=[
    pytest.mark.skipif(not hb.torch_available(), reason="PyTorch not installed")])])
def test_time_to_accuracy(benchmark, record, out_dir, engine):
    result = {}

    def train():
        result["r"] = time_to_accuracy(engine, max_epochs=20)

    benchmark.group = "time to 97/98% test accuracy"
    benchmark.pedantic(train, rounds=1, iterations=1)
    record(**result["r"])
    (out_dir / f"time_to_accuracy_{engine}.json").write_text(json.dumps(result["r"], indent=2))
