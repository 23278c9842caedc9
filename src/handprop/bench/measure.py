"""Side-by-side measurement by one clock: every contender of one configuration runs one
round (a lead-in epoch, then the timed epoch) in turn, the order rotating by one every
round, so slow drifts of a shared machine hit all alike; ratios are taken round by round."""

from __future__ import annotations

import math
import time

from .comparators import COMPARATORS, handprop_rows, make_comparator
from .runners import HandpropRunner, ceiling_runner, sgemm_gflops
from .stats import Stat, ratio_stat, spread, throughput
from .workload import (MIN_EPOCH_SECONDS, bench_engines, default_steps, model_name,
                       model_step_flops, plan_configs, torch_available)

#: A row whose own samples/s vary by more than this (max - min over the median) is noisy.
NOISY_SPREAD = 0.25
#: Rebuilds allowed when the fastest contender's epoch came out shorter than the minimum.
MAX_RESIZES = 2


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
        close_all(runners)
        raise
    return runners


def close_all(runners) -> None:
    for runner in runners:
        runner.close()


def shortest_epoch(runners) -> float:
    """The shortest steady-state epoch of the warm-up (the last epoch each contender warmed
    up; the GEMM-only ceiling is a limit, not a contender)."""
    return min(r.warmup_epochs[-1] for r in runners
               if r.warmup_epochs and r.label != "ceiling")


def measure_config(model, batch: int, optimizer: str, engines, *, steps: int,
                   repeats: int = 5, with_torch: bool = True, with_ceiling: bool = True,
                   comparators=None, warmup: int = 1, seed: int = 0, settle: float = 0.2,
                   warmups: dict | None = None, min_seconds: float = MIN_EPOCH_SECONDS,
                   log=None) -> tuple[dict[str, Stat], int]:
    """``(seconds per timed epoch of every runner, round by round; the steps an epoch had)``
    for one (model, batch, optimizer), side by side (see ``interleave``). Where the fastest
    contender's warm-up epoch took less than ``min_seconds``, the epoch is lengthened and
    the runners built again. ``comparators`` defaults to PyTorch eager when ``with_torch``;
    ``warmups`` (a dict) receives each runner's warm-up seconds."""
    if comparators is None:
        comparators = ["torch"] if with_torch else []
    for _ in range(MAX_RESIZES + 1):
        runners = make_runners(model, batch, optimizer, engines, steps=steps,
                               comparators=comparators, with_ceiling=with_ceiling, seed=seed)
        try:
            for runner in runners:
                runner.warmup(warmup)
            fastest = shortest_epoch(runners)
            if fastest >= min_seconds:
                seconds = interleave(runners, repeats, warmup=0, settle=settle)
                break
        except BaseException:
            close_all(runners)
            raise
        close_all(runners)
        longer = math.ceil(steps * 1.2 * min_seconds / max(fastest, 1e-6))
        if log:
            log(f"    the fastest epoch took {fastest:.3f} s (< {min_seconds} s): "
                f"{steps} -> {longer} steps")
        steps = longer
    else:
        raise RuntimeError(f"{model_name(model)}: epochs stayed under {min_seconds} s")
    close_all(runners)
    if warmups is not None:
        warmups.update({r.label: r.warmup_seconds for r in runners})
    return seconds, steps


def interleave(runners, repeats: int, *, warmup: int = 1, settle: float = 0.2) -> dict[str, Stat]:
    """Warm every runner up (``warmup`` epochs; 0: already warm), then ``repeats`` rounds
    of one ``run()`` each (a lead-in and a timed epoch), rotating the order by one every
    round; the timed seconds, round by round, by runner label.

    ``settle`` seconds pass (untimed) before each run, so the thread pool the
    previous runner used goes idle first: OpenBLAS workers busy-wait about
    0.1 s after their last GEMM, which on a 2-core machine halves PyTorch's
    speed for that long when its run follows NumPy's."""
    if warmup:
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


def comparison(label: str, secs: dict[str, Stat], samples: int, comparators,
               with_ceiling: bool, warmups: dict) -> dict:
    """One row's figures against everything measured beside it, round by round."""
    own = secs[label]
    t = throughput(own, samples)
    row = {**t.as_dict("samples_per_s"), "spread": spread(t),
           "noisy": spread(t) > NOISY_SPREAD, "seconds": list(own.values)}
    if "cpu" in secs:
        row.update(ratio_stat(secs["cpu"], own).as_dict("ratio_to_cpu"))
    for comparator in comparators:
        key, other = COMPARATORS[comparator], secs[comparator]
        row.update(throughput(other, samples).as_dict(f"{key}_samples_per_s"))
        row[f"{key}_spread"] = spread(throughput(other, samples))
        row.update(ratio_stat(other, own).as_dict(f"ratio_to_{key}"))
        # Compilation happens in the warm-up: what it cost, outside the timing.
        row[f"{key}_warmup_seconds"] = warmups.get(comparator)
    if with_ceiling:
        row.update(throughput(secs["ceiling"], samples).as_dict("ceiling_samples_per_s"))
        row.update(ratio_stat(secs["ceiling"], own).as_dict("ceiling_share"))
    return row


def measure_training(models=None, batches=None, optimizers=None, engines=None, *,
                     repeats: int = 5, steps: int | None = None, scale: float = 1.0,
                     with_torch: bool | None = None, comparators=None,
                     with_ceiling: bool = True, sgemm: Stat | None = None, log=None,
                     before_config=None, min_seconds: float | None = None,
                     fma_peak: float | None = None) -> list[dict]:
    """One row per handprop row label and (model, batch, optimizer) of the plan (see
    ``plan_configs``): samples/s round by round (median, min, max, spread), and every
    comparator's and the GEMM-only ceiling's figures measured in the same rounds, with
    ratios as the median [min, max] of the per-round ratios.

    ``steps`` pins the epoch length (for tests: then epochs may be shorter than
    ``min_seconds``, which defaults to ``MIN_EPOCH_SECONDS`` otherwise and 0 with it);
    ``scale`` multiplies the plan's samples per epoch. ``comparators`` defaults to
    PyTorch eager when ``with_torch`` (default: when installed). ``fma_peak`` (GFLOP/s,
    ``peak.fma_peak_gflops``) adds each row's share of it."""
    engines = bench_engines(engines)
    if comparators is None:
        if with_torch is None:
            with_torch = torch_available()
        comparators = ["torch"] if with_torch else []
    if min_seconds is None:
        min_seconds = 0.0 if steps else MIN_EPOCH_SECONDS
    if sgemm is None and with_ceiling:
        sgemm = sgemm_gflops(repeats=max(3, repeats))
    rows = []
    for model, batch, optimizer in plan_configs(models, batches, optimizers):
        name = model_name(model)
        n_steps = steps or default_steps(name, batch, scale)
        if before_config:
            before_config()
        if log:
            log(f"  {name}, batch {batch}, {optimizer}: {n_steps} steps x {repeats} rounds")
        warmups: dict = {}
        secs, n_steps = measure_config(model, batch, optimizer, engines, steps=n_steps,
                                       repeats=repeats, comparators=comparators,
                                       with_ceiling=with_ceiling, warmups=warmups,
                                       min_seconds=min_seconds, log=log)
        samples = n_steps * batch
        flops = model_step_flops(model, batch) / batch  # per sample
        for label, _, _ in handprop_rows(engines, model):
            row = {"engine": label, "model": name, "batch": batch, "optimizer": optimizer,
                   "steps": n_steps, "epoch_samples": samples, "repeats": repeats,
                   "min_epoch_seconds": min(min(s.values) for s in secs.values()),
                   "clock": "wall time between consecutive epoch ends, after a lead-in epoch",
                   # the trainer's per-epoch gradient-norm probe (0: off) in the timed epochs
                   "gradient_probe": HandpropRunner.gradient_probe}
            row.update(comparison(label, secs, samples, comparators, with_ceiling, warmups))
            if with_ceiling:
                row["gflops"] = row["samples_per_s"] * flops / 1e9
                row["ceiling_gflops"] = row["ceiling_samples_per_s"] * flops / 1e9
                row["sgemm_gflops"] = sgemm.median
                row["sgemm_share"] = row["gflops"] / sgemm.median
            if fma_peak:
                row["fma_peak_gflops"] = fma_peak
                row["fma_share"] = row["samples_per_s"] * flops / 1e9 / fma_peak
            rows.append(row)
    return rows
