"""Whole training steps through the library's own loop (``Trainer.fit``), per engine,
next to PyTorch (eager and torch.compile), JAX (epoch under ``lax.scan``, jitted
step) and the GEMM-only ceiling, over the benchmark's plan of configurations and the
MNIST CNN's (batch 64/128, SGD and Adam).

Each benchmark round is one epoch of ``steps`` mini-batches (setup and a
warm-up round excluded; compilation happens in the warm-up);
``extra_info["samples_per_s"]`` is the median throughput as the runner's own
clock measured it. The ``test_side_by_side`` benchmarks time every engine, every
installed comparator and the ceiling interleaved in one run and store the
ratios in ``extra_info``.
"""

from __future__ import annotations

import pytest
from benchlib import ENGINES, USABLE_ENGINES, needs

from handprop import bench as hb
from handprop.bench.comparators import COMPARATORS, available_comparators, make_comparator

CONFIGS = hb.plan_configs() + hb.plan_configs([hb.CNN_MODEL])  # the MLP plan, then the CNN
CONFIG_IDS = [f"{m.split()[0]}-b{b}-{o}" for m, b, o in CONFIGS]
SHAPES = list(dict.fromkeys((m, b) for m, b, _ in CONFIGS))
ROUNDS = 5


def _steps(model, batch):
    return hb.default_steps(model, batch)


def _finish(benchmark, record, runner, seconds):
    samples = runner.steps * runner.batch
    med = sorted(seconds)[len(seconds) // 2]
    record(samples_per_step=runner.batch, steps=runner.steps,
           samples_per_s=samples / med, samples_per_s_min=samples / max(seconds),
           samples_per_s_max=samples / min(seconds), warmup_seconds=runner.warmup_seconds)


def _run(benchmark, record, runner):
    try:
        runner.warmup()
        seconds = []

        def one_epoch():
            seconds.append(runner.run())

        benchmark.pedantic(one_epoch, rounds=ROUNDS, iterations=1, warmup_rounds=0)
        _finish(benchmark, record, runner, seconds)
    finally:
        runner.close()


@pytest.mark.parametrize("model, batch, optimizer", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("engine", ENGINES)
def test_training(benchmark, record, engine, model, batch, optimizer):
    benchmark.group = f"train {model} b{batch} {optimizer}"
    _run(benchmark, record,
         hb.HandpropRunner(engine, model, batch, optimizer, _steps(model, batch)))


@pytest.mark.parametrize("model, batch, optimizer", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("comparator", [pytest.param(c, marks=needs(c), id=c.replace(" ", "-"))
                                        for c in COMPARATORS])
def test_comparator(benchmark, record, comparator, model, batch, optimizer):
    benchmark.group = f"train {model} b{batch} {optimizer}"
    _run(benchmark, record,
         make_comparator(comparator, model, batch, optimizer, _steps(model, batch)))


@pytest.mark.parametrize("model, batch", SHAPES, ids=[f"{m.split()[0]}-b{b}" for m, b in SHAPES])
def test_gemm_ceiling(benchmark, record, model, batch):
    benchmark.group = f"train {model} b{batch} sgd"
    runner = hb.ceiling_runner(model, batch, _steps(model, batch))
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


@pytest.mark.parametrize("model, batch, optimizer", CONFIGS, ids=CONFIG_IDS)
def test_side_by_side(benchmark, record, model, batch, optimizer):
    """Every engine, every installed comparator and the ceiling interleaved; ratios
    of medians in extra_info."""
    engines = list(USABLE_ENGINES)
    comparators = available_comparators()
    benchmark.group = "side by side"
    result = {}

    def measure():
        result["rows"] = hb.measure_training([model], [batch], [optimizer], engines,
                                             repeats=ROUNDS, comparators=comparators,
                                             sgemm=hb.sgemm_gflops(repeats=3))

    benchmark.pedantic(measure, rounds=1, iterations=1)
    for row in result["rows"]:
        e = row["engine"]
        record(**{f"{e}_samples_per_s": row["samples_per_s"],
                  f"{e}_ratio_to_cpu": row["ratio_to_cpu"],
                  f"{e}_ceiling_share": row["ceiling_share"],
                  f"{e}_sgemm_share": row["sgemm_share"],
                  **{f"{e}_ratio_to_{COMPARATORS[c]}": row[f"ratio_to_{COMPARATORS[c]}"]
                     for c in comparators}})
