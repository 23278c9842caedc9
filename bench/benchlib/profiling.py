"""Where a training step's time goes, phase by phase, in microseconds."""

from __future__ import annotations

import statistics
import time

import numpy as np

from handprop.bench import CeilingRunner, HandpropRunner, default_steps, resolve_model
from handprop.bench.report import fmt, table

PRIMITIVES = ("bias_act", "act_backward", "bias_grad", "softmax_xent", "sgd_update",
              "adam_update")


def timed_trainer(spent: dict):
    """A ``Trainer`` that adds the seconds of its public ``count_correct`` to
    ``spent["correct"]`` (a subclass: the trainer's public seam for profilers)."""
    from handprop.train.trainer import Trainer

    class TimedTrainer(Trainer):
        def count_correct(self, outputs, y):
            t0 = time.perf_counter()
            try:
                return super().count_correct(outputs, y)
            finally:
                spent["correct"] = spent.get("correct", 0.0) + time.perf_counter() - t0

    return TimedTrainer


def profile_steps(engine: str, model, batch: int, optimizer: str = "sgd",
                  steps: int | None = None, repeats: int = 7) -> dict:
    """Per-step breakdown of one engine's training step, in microseconds:

    * ``total``: the trainer's epoch clock / steps;
    * one entry per fused primitive (instance methods wrapped with a clock);
    * ``correct``: the trainer's per-batch accuracy count (``Trainer.count_correct``,
      timed in a subclass of the trainer);
    * ``gemm_ceiling``: the same GEMMs preallocated (CeilingRunner, measured
      right after, same shapes);
    * ``gemm_alloc_extra``: what the same GEMMs cost more when each allocates
      its output (``a @ b``, as the layers do) instead of writing a buffer;
    * ``gather``: the two ``take`` calls that build a batch (timed apart);
    * ``other``: the rest (Python in layers, model, optimizer and trainer loop,
      temporaries of the element-wise work).

    The trainer is ``HandpropRunner``'s, with its gradient-norm probe off, so
    ``total`` is training steps only; ``gradient_probe`` in the result says so.
    """
    name, _ = resolve_model(model)
    steps = steps or default_steps(name, batch)
    spent: dict[str, float] = {}

    def wrap(label, fn):
        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - t0
        return timed

    # The layer-by-layer path: a compiled epoch has no primitives to time one by one.
    runner = HandpropRunner(engine, model, batch, optimizer, steps, compile=False,
                            trainer_class=timed_trainer(spent))
    runner.warmup()
    eng = runner.engine
    totals, per_rep = [], []
    for p in PRIMITIVES:
        setattr(eng, p, wrap(p, getattr(eng, p)))
    try:
        for _ in range(repeats):
            spent.clear()
            totals.append(runner.run())
            per_rep.append(dict(spent))
    finally:
        for p in PRIMITIVES:
            eng.__dict__.pop(p, None)
    ceiling = CeilingRunner(model, batch, steps)
    allocating = CeilingRunner(model, batch, steps, allocate=True)
    ceiling.warmup()
    allocating.warmup()
    gemm, gemm_alloc = [], []
    for _ in range(repeats):
        gemm.append(ceiling.run())
        gemm_alloc.append(allocating.run())
    gemm, gemm_alloc = statistics.median(gemm), statistics.median(gemm_alloc)
    x, y = runner.x, runner.y
    xp = eng.xp
    idx = eng.asarray(np.random.default_rng(0).permutation(len(x))[:batch])
    xs, ys = eng.asarray(x), eng.asarray(y)
    gathers = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(steps):
            xp.take(xs, idx, axis=0), xp.take(ys, idx, axis=0)
        gathers.append(time.perf_counter() - t0)
    gather = statistics.median(gathers)
    us = 1e6 / steps
    out = {"engine": engine, "model": name, "batch": batch, "optimizer": optimizer,
           "steps": steps, "repeats": repeats, "total": statistics.median(totals) * us,
           "gemm_ceiling": gemm * us,
           "gemm_alloc_extra": max(0.0, gemm_alloc - gemm) * us, "gather": gather * us,
           # HandpropRunner's trainer: its per-epoch gradient-norm probe (0: off, not timed)
           "gradient_probe": runner.trainer.gradient_probe}
    # Each phase: its median over the repeats.
    for label in per_rep[0]:
        out[label] = statistics.median(r.get(label, 0.0) for r in per_rep) * us
    known = (out["gemm_ceiling"] + out["gemm_alloc_extra"] + out["gather"]
             + sum(out[label] for label in per_rep[0]))
    out["other"] = out["total"] - known
    return out


def format_profile_table(rows: list[dict], markdown: bool = False) -> str:
    cols = ["total", "gemm_ceiling", "gemm_alloc_extra", "gather", *PRIMITIVES, "correct",
            "other"]
    cols = [c for c in cols if any(c in r for r in rows)]
    head = ["engine", "model", "batch", "opt", *[f"{c} us" for c in cols]]
    body = [[r["engine"], r["model"], str(r["batch"]), r["optimizer"],
             *[fmt(r.get(c), ".0f") for c in cols]] for r in rows]
    return table(head, body, markdown)
