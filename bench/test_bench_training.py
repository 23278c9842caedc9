"""Whole training steps through the library's own loop (``Trainer.fit``), per engine,
next to PyTorch CPU eager and the GEMM-only ceiling.

Each benchmark round is one epoch of ``steps`` mini-batches (setup and a
warm-up round excluded); ``extra_info["samples_per_s"]`` is the median
throughput as the trainer's own epoch clock measured it. The
``test_side_by_side`` benchmarks time every engine, PyTorch and the ceiling
interleaved in one run and store the ratios in ``extra_info``.
"""

from __future__ import annotations

import pytest
from benchlib import ENGINES, USABLE_ENGINES, needs_torch

from handprop import bench as hb

MODELS = list(hb.MODELS)
ROUNDS = 5


def _steps(model, batch):
    return hb.default_steps(model, batch)


def _finish(benchmark, record, runner, seconds):
    samples = runner.steps * runner.batch
    med = sorted(seconds)[len(seconds) // 2]
    record(samples_per_step=runner.batch, steps=runner.steps,
           samples_per_s=samples / med, samples_per_s_min=samples / max(seconds),
           samples_per_s_max=samples / min(seconds))


def _run(benchmark, record, runner):
    runner.warmup()
    seconds = []

    def one_epoch():
        seconds.append(runner.run())

    benchmark.pedantic(one_epoch, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    _finish(benchmark, record, runner, seconds)


@pytest.mark.parametrize("optimizer", hb.BENCH_OPTIMIZERS)
@pytest.mark.parametrize("batch", hb.BATCHES)
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("engine", ENGINES)
def test_training(benchmark, record, engine, model, batch, optimizer):
    benchmark.group = f"train {model} b{batch} {optimizer}"
    _run(benchmark, record,
         hb.HandpropRunner(engine, model, batch, optimizer, _steps(model, batch)))


@needs_torch
@pytest.mark.parametrize("optimizer", hb.BENCH_OPTIMIZERS)
@pytest.mark.parametrize("batch", hb.BATCHES)
@pytest.mark.parametrize("model", MODELS)
def test_torch(benchmark, record, model, batch, optimizer):
    benchmark.group = f"train {model} b{batch} {optimizer}"
    _run(benchmark, record, hb.TorchRunner(model, batch, optimizer, _steps(model, batch)))


@pytest.mark.parametrize("batch", hb.BATCHES)
@pytest.mark.parametrize("model", MODELS)
def test_gemm_ceiling(benchmark, record, model, batch):
    benchmark.group = f"train {model} b{batch} sgd"
    runner = hb.CeilingRunner(model, batch, _steps(model, batch))
    _run(benchmark, record, runner)
    record(flops_per_step=runner.flops_per_step)


@pytest.mark.parametrize("n", [2048, 4096])
def test_sgemm(benchmark, record, n):
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty_like(a)
    benchmark.group = "sgemm"
    benchmark.pedantic(np.matmul, args=(a, b), kwargs={"out": c}, rounds=5, iterations=1,
                       warmup_rounds=1)
    if benchmark.stats is not None:  # None under --benchmark-disable (a smoke run)
        record(gflops=2 * n ** 3 / benchmark.stats.stats.median / 1e9,
               gflops_max=2 * n ** 3 / benchmark.stats.stats.min / 1e9)


@pytest.mark.parametrize("batch", hb.BATCHES)
@pytest.mark.parametrize("model", MODELS)
def test_side_by_side(benchmark, record, model, batch):
    """Every engine, PyTorch and the ceiling interleaved (SGD); ratios in extra_info."""
    engines = list(USABLE_ENGINES)
    benchmark.group = "side by side"
    result = {}

    def measure():
        result["rows"] = hb.measure_training([model], [batch], ["sgd"], engines, repeats=ROUNDS,
                                             sgemm=hb.sgemm_gflops(repeats=3))

    benchmark.pedantic(measure, rounds=1, iterations=1)
    for row in result["rows"]:
        e = row["engine"]
        record(**{f"{e}_samples_per_s": row["samples_per_s"],
                  f"{e}_ratio_to_cpu": row["ratio_to_cpu"],
                  f"{e}_ratio_to_torch": row.get("ratio_to_torch"),
                  f"{e}_ceiling_share": row["ceiling_share"],
                  f"{e}_sgemm_share": row["sgemm_share"]})
