"""Side-by-side measurement: every runner of one configuration in each repeat,
in a rotating order, so slow drifts of a shared machine hit all alike."""

from __future__ import annotations

import time

from .comparators import COMPARATORS, handprop_rows, make_comparator
from .runners import HandpropRunner, ceiling_runner, sgemm_gflops
from .stats import Stat, throughput
from .workload import (bench_engines, default_steps, model_name, model_step_flops, plan_configs,
                       torch_available)


def make_runners(model, batch: int, optimizer: str, engines, *, steps: int,
                 comparators=(), with_ceiling: bool = True, seed: int = 0) -> list:
    """handprop's rows for ``engines``, then the comparators, then the ceiling."""
    runners = []
    try:
        for label, engine, compile in handprop_rows(engines, model):
            runners.append(HandpropRunner(engine, model, batch, optimizer, steps, seed=seed,
                                          compile=compile, label=label))
        for name in comparators:
            runners.append(make_comparator(name, model, batch, optimizer, steps, seed=seed))
        if with_ceiling:
            runners.append(ceiling_runner(model, batch, steps, seed=seed))
    except BaseException:
        for runner in runners:
            runner.close()
        raise
    return runners


def measure_config(model, batch: int, optimizer: str, engines, *, steps: int,
                   repeats: int = 5, with_torch: bool = True, with_ceiling: bool = True,
                   comparators=None, warmup: int = 1, seed: int = 0, settle: float = 0.2,
                   warmups: dict | None = None) -> dict[str, Stat]:
    """Seconds per timed epoch for every runner of one (model, batch, optimizer),
    side by side (see ``interleave``). ``comparators`` defaults to PyTorch eager
    when ``with_torch``; ``warmups`` (a dict) receives each runner's warm-up seconds."""
    if comparators is None:
        comparators = ["torch"] if with_torch else []
    runners = make_runners(model, batch, optimizer, engines, steps=steps,
                           comparators=comparators, with_ceiling=with_ceiling, seed=seed)
    try:
        seconds = interleave(runners, repeats, warmup=warmup, settle=settle)
    finally:
        for runner in runners:
            runner.close()
    if warmups is not None:
        warmups.update({r.label: r.warmup_seconds for r in runners})
    return seconds


def interleave(runners, repeats: int, *, warmup: int = 1, settle: float = 0.2) -> dict[str, Stat]:
    """Warm every runner up, then ``repeats`` rounds of one run each, rotating the
    order by one every round; seconds per run, by runner label.

    ``settle`` seconds pass (untimed) before each run, so the thread pool the
    previous runner used goes idle first: OpenBLAS workers busy-wait about
    0.1 s after their last GEMM, which on a 2-core machine halves PyTorch's
    speed for that long when its run follows NumPy's."""
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


def measure_training(models=None, batches=None, optimizers=None, engines=None, *,
                     repeats: int = 5, steps: int | None = None, scale: float = 1.0,
                     with_torch: bool | None = None, comparators=None,
                     with_ceiling: bool = True, sgemm: Stat | None = None, log=None,
                     before_config=None) -> list[dict]:
    """One row per handprop row label and (model, batch, optimizer) of the plan (see
    ``plan_configs``) with samples/s (median, min, max), each comparator's and the
    GEMM-only ceiling's figures measured in the same run, and ratios of medians.

    ``comparators`` defaults to PyTorch eager when ``with_torch`` (default: when
    installed)."""
    engines = bench_engines(engines)
    if comparators is None:
        if with_torch is None:
            with_torch = torch_available()
        comparators = ["torch"] if with_torch else []
    if sgemm is None and with_ceiling:
        sgemm = sgemm_gflops(repeats=max(3, repeats))
    rows = []
    for model, batch, optimizer in plan_configs(models, batches, optimizers):
        name = model_name(model)
        n_steps = steps or default_steps(name, batch, scale)
        if before_config:
            before_config()
        if log:
            log(f"  {name}, batch {batch}, {optimizer}: {n_steps} steps x {repeats}")
        warmups: dict = {}
        secs = measure_config(model, batch, optimizer, engines, steps=n_steps, repeats=repeats,
                              comparators=comparators, with_ceiling=with_ceiling,
                              warmups=warmups)
        tput = {k: throughput(v, n_steps * batch) for k, v in secs.items()}
        flops = model_step_flops(model, batch) / batch  # per sample
        for label, _, _ in handprop_rows(engines, model):
            t = tput[label]
            row = {"engine": label, "model": name, "batch": batch, "optimizer": optimizer,
                   "steps": n_steps, "repeats": repeats, **t.as_dict("samples_per_s"),
                   # the trainer's per-epoch gradient-norm probe (0: off) in the timed epochs
                   "gradient_probe": HandpropRunner.gradient_probe}
            cpu = tput.get("cpu")
            row["ratio_to_cpu"] = t.median / cpu.median if cpu else None
            # "best": ratios of the fastest repeats, the least disturbed by other
            # jobs on a shared machine (reported next to the median ratios).
            row["ratio_to_cpu_best"] = t.max / cpu.max if cpu else None
            for comparator in comparators:
                key, other = COMPARATORS[comparator], tput[comparator]
                row.update(other.as_dict(f"{key}_samples_per_s"))
                row[f"ratio_to_{key}"] = t.median / other.median
                row[f"ratio_to_{key}_best"] = t.max / other.max
                # Compilation happens in the warm-up: what it cost, outside the timing.
                row[f"{key}_warmup_seconds"] = warmups.get(comparator)
            if with_ceiling:
                row.update(tput["ceiling"].as_dict("ceiling_samples_per_s"))
                row["ceiling_share"] = t.median / tput["ceiling"].median
                row["ceiling_share_best"] = t.max / tput["ceiling"].max
                row["gflops"] = t.median * flops / 1e9
                row["ceiling_gflops"] = tput["ceiling"].median * flops / 1e9
                row["sgemm_gflops"] = sgemm.median
                row["sgemm_share"] = row["gflops"] / sgemm.median
            rows.append(row)
    return rows
