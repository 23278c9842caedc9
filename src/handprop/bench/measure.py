"""Side-by-side measurement: every runner of one configuration in each repeat,
in a rotating order, so slow drifts of a shared machine hit all alike."""

from __future__ import annotations

import time

from .runners import CeilingRunner, HandpropRunner, sgemm_gflops
from .stats import Stat, throughput
from .workload import (BATCHES, BENCH_OPTIMIZERS, CLASSES, INPUT_DIM, MODELS, bench_engines,
                       default_steps, resolve_model, step_flops, torch_available)


def measure_config(model, batch: int, optimizer: str, engines, *, steps: int,
                   repeats: int = 5, with_torch: bool = True, with_ceiling: bool = True,
                   warmup: int = 1, seed: int = 0, settle: float = 0.2) -> dict[str, Stat]:
    """Seconds per timed epoch for every runner of one (model, batch, optimizer),
    side by side: each repeat runs every runner once, in a rotating order.

    ``settle`` seconds pass (untimed) before each run, so the thread pool the
    previous runner used goes idle first: OpenBLAS workers busy-wait about
    0.1 s after their last GEMM, which on a 2-core machine halves PyTorch's
    speed for that long when its run follows NumPy's."""
    runners = [HandpropRunner(e, model, batch, optimizer, steps, seed=seed) for e in engines]
    if with_torch:
        from .torch_runner import TorchRunner

        runners.append(TorchRunner(model, batch, optimizer, steps, seed=seed))
    if with_ceiling:
        runners.append(CeilingRunner(model, batch, steps, seed=seed))
    return interleave(runners, repeats, warmup=warmup, settle=settle)


def interleave(runners, repeats: int, *, warmup: int = 1, settle: float = 0.2) -> dict[str, Stat]:
    """Warm every runner up, then ``repeats`` rounds of one run each, rotating the
    order by one every round; seconds per run, by runner label."""
    for runner in runners:
        runner.warmup(warmup)
    seconds = {r.label: Stat() for r in runners}
    for rep in range(repeats):
        k = rep % len(runners)
        for runner in runners[k:] + runners[:k]:
            if settle:
                time.sleep(settle)
            seconds[runner.label].values.append(runner.run())
    return seconds


def measure_training(models=tuple(MODELS), batches=BATCHES, optimizers=BENCH_OPTIMIZERS,
                     engines=None, *, repeats: int = 5, steps: int | None = None,
                     scale: float = 1.0, with_torch: bool | None = None,
                     with_ceiling: bool = True, sgemm: Stat | None = None, log=None,
                     before_config=None) -> list[dict]:
    """One row per (engine, model, batch, optimizer) with samples/s (median, min, max),
    the torch figure and the GEMM-only ceiling measured in the same run, and ratios."""
    engines = bench_engines(engines)
    if with_torch is None:
        with_torch = torch_available()
    if sgemm is None and with_ceiling:
        sgemm = sgemm_gflops(repeats=max(3, repeats))
    rows = []
    for model in models:
        name, (hidden, _) = resolve_model(model)
        dims = [INPUT_DIM, *hidden, CLASSES]
        for batch in batches:
            n_steps = steps or default_steps(name, batch, scale)
            samples = n_steps * batch
            for optimizer in optimizers:
                if before_config:
                    before_config()
                if log:
                    log(f"  {name}, batch {batch}, {optimizer}: {n_steps} steps x {repeats}")
                secs = measure_config(model, batch, optimizer, engines, steps=n_steps,
                                      repeats=repeats, with_torch=with_torch,
                                      with_ceiling=with_ceiling)
                tput = {k: throughput(v, samples) for k, v in secs.items()}
                for engine in engines:
                    t = tput[engine]
                    row = {"engine": engine, "model": name, "batch": batch,
                           "optimizer": optimizer, "steps": n_steps, "repeats": repeats,
                           **t.as_dict("samples_per_s")}
                    cpu = tput.get("cpu")
                    row["ratio_to_cpu"] = t.median / cpu.median if cpu else None
                    # "best": ratios of the fastest repeats, the least disturbed by other
                    # jobs on a shared machine (reported next to the median ratios).
                    row["ratio_to_cpu_best"] = t.max / cpu.max if cpu else None
                    if with_torch:
                        row.update(tput["torch"].as_dict("torch_samples_per_s"))
                        row["ratio_to_torch"] = t.median / tput["torch"].median
                        row["ratio_to_torch_best"] = t.max / tput["torch"].max
                    if with_ceiling:
                        row.update(tput["ceiling"].as_dict("ceiling_samples_per_s"))
                        row["ceiling_share"] = t.median / tput["ceiling"].median
                        row["ceiling_share_best"] = t.max / tput["ceiling"].max
                        flops = step_flops(dims, batch) / batch  # per sample
                        row["gflops"] = t.median * flops / 1e9
                        row["ceiling_gflops"] = tput["ceiling"].median * flops / 1e9
                        row["sgemm_gflops"] = sgemm.median
                        row["sgemm_share"] = row["gflops"] / sgemm.median
                    rows.append(row)
    return rows
