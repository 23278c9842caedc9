"""The library's own runners: whole epochs through ``Trainer.fit``, and the
GEMM-only ceiling (only a step's matrix products, preallocated).

Every runner (these, PyTorch's, JAX's) is a ``Runner``.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .stats import Stat
from .workload import (CLASSES, CNN_GEMMS, INPUT_DIM, LEARNING_RATES, bench_data, bench_model,
                       is_cnn, mnist_slice, model_name, model_step_flops, resolve_model,
                       step_flops)


#: Epochs each contender runs per round: a lead-in, then the timed one.
LEAD_EPOCHS = 1


class Runner:
    """One contestant: ``label`` names its row or column. Every contender is timed by the
    same clock over the same unit of work: ``epochs(count)`` runs ``count`` consecutive
    epochs of ``steps`` mini-batches of ``batch`` as its user runs them and returns the
    wall-clock seconds from the call's start to the first epoch's end, then between
    consecutive epoch ends. ``run()`` is one round: a lead-in epoch, then the timed epoch
    (whose seconds it returns), so once-per-call costs (handprop's input checks, a
    comparator's first-call overhead) fall on the lead-in. ``warmup(epochs)`` runs untimed
    epochs first (JIT, compilation, first allocations) and keeps their seconds in
    ``warmup_seconds`` and ``warmup_epochs``; ``batch_losses()`` is every mini-batch's loss
    so far; ``close()`` frees what the runner holds."""

    label: str
    batch: int
    steps: int
    warmup_seconds: float | None = None
    warmup_epochs: list | None = None

    def warmup(self, epochs: int = 1) -> None:
        started = time.perf_counter()
        self.warmup_epochs = self.epochs(LEAD_EPOCHS + max(1, int(epochs)))
        self.warmup_seconds = time.perf_counter() - started

    def epochs(self, count: int) -> list[float]:
        raise NotImplementedError

    def run(self) -> float:
        return self.epochs(LEAD_EPOCHS + 1)[-1]

    def batch_losses(self) -> list[float]:
        raise NotImplementedError(f"{self.label} does not train")

    def close(self) -> None:
        pass


def epoch_seconds(ends: list[float]) -> list[float]:
    """Seconds between consecutive clock readings (a start, then each epoch's end)."""
    return [b - a for a, b in zip(ends, ends[1:])]


class HandpropRunner(Runner):
    """Times epochs of ``steps`` mini-batches through ``Trainer.fit``: ``epochs(n)`` is one
    ``fit`` call of ``n`` epochs, read at each epoch end (its ``on_epoch_end`` hook).

    ``compile`` is passed to the trainer only when it is not None (the trainer's
    default otherwise); ``label`` names the row (default: the engine's name).
    ``trainer_class`` lets a profiler time the trainer's public methods by
    subclassing it. The trainer runs with its gradient-norm probe off
    (``gradient_probe=0``), so a timed epoch is only the training steps.
    """

    #: The trainer's per-epoch gradient-norm probe, off: no comparator computes gradient
    #: norms.
    gradient_probe = 0

    def __init__(self, engine: str, model, batch: int, optimizer: str, steps: int,
                 seed: int = 0, lr: float | None = None, *, compile: bool | None = None,
                 label: str | None = None, trainer_class=None):
        from ..engines import get_engine
        from ..optim.optimizers import make_optimizer
        from ..train.trainer import Trainer

        self.label = label or engine
        self.engine = get_engine(engine)
        self.model_name = model_name(model)
        self.batch, self.steps = int(batch), int(steps)
        self.x, self.y = bench_data(model, self.steps * self.batch)
        self.model = bench_model(model, engine=self.engine, seed=seed)
        opt = make_optimizer(optimizer, lr=lr or LEARNING_RATES[optimizer])
        options = {} if compile is None else {"compile": compile}
        self._ends: list[float] = []
        self.trainer = (trainer_class or Trainer)(
            self.model, "softmax_cross_entropy", opt, batch_size=self.batch, epochs=1,
            seed=seed, checkpoint_dir=None, progress=False, gradient_probe=self.gradient_probe,
            on_epoch_end=lambda _trainer, _row: self._ends.append(time.perf_counter()),
            **options)

    def warmup(self, epochs: int = 1) -> None:
        self.engine.warmup()
        super().warmup(epochs)

    def epochs(self, count: int) -> list[float]:
        """One ``Trainer.fit`` of ``count`` more epochs, timed between epoch ends."""
        self._ends = [time.perf_counter()]
        self.trainer.fit(self.x, self.y, more_epochs=count)
        rows = self.trainer.history.rows[-count:]
        if not all(math.isfinite(row["train_loss"]) for row in rows):
            raise RuntimeError(f"{self.label}: training diverged")
        return epoch_seconds(self._ends)

    def batch_losses(self) -> list[float]:
        return list(self.trainer.batch_losses)


class CeilingRunner(Runner):
    """Only each step's GEMMs, as the library's Dense does them, preallocated.

    Forward ``z = x @ W``; backward ``dW = x.T @ dz`` for every layer and
    ``dx = dz @ W.T`` for all but the first. ``np.matmul(..., out=...)``
    into arrays allocated once, on a batch gathered once.
    """

    label = "ceiling"

    def __init__(self, model, batch: int, steps: int, seed: int = 0, allocate: bool = False):
        #: allocate=True: fresh outputs every GEMM (``a @ b``), as the layers do;
        #: only for the profile, to price the allocations.
        self.allocate = bool(allocate)
        self.model_name, (hidden, _) = resolve_model(model)
        self.batch, self.steps = int(batch), int(steps)
        dims = [INPUT_DIM, *hidden, CLASSES]
        self.dims = dims
        rng = np.random.default_rng(seed)
        x, _ = mnist_slice(self.batch)
        f32 = np.float32
        self.x = np.ascontiguousarray(x)
        self.W = [rng.standard_normal((a, b)).astype(f32) * f32(0.05)
                  for a, b in zip(dims[:-1], dims[1:])]
        self.z = [np.empty((self.batch, b), f32) for b in dims[1:]]
        self.dz = [rng.standard_normal((self.batch, b)).astype(f32) for b in dims[1:]]
        self.dW = [np.empty_like(w) for w in self.W]
        self.dx = [np.empty((self.batch, a), f32) for a in dims[:-1]]
        self.flops_per_step = step_flops(dims, self.batch)

    def step(self) -> None:
        if self.allocate:
            return self._step_allocating()
        mm, W, z, dz, dW, dx = np.matmul, self.W, self.z, self.dz, self.dW, self.dx
        a = self.x
        for i in range(len(W)):
            mm(a, W[i], out=z[i])
            a = z[i]
        for i in range(len(W) - 1, -1, -1):
            inp = self.x if i == 0 else z[i - 1]
            mm(inp.T, dz[i], out=dW[i])
            if i > 0:
                mm(dz[i], W[i].T, out=dx[i])

    def _step_allocating(self) -> None:
        W, dz = self.W, self.dz
        acts = [self.x]
        for w in W:
            acts.append(acts[-1] @ w)
        for i in range(len(W) - 1, -1, -1):
            acts[i].T @ dz[i]
            if i > 0:
                dz[i] @ W[i].T

    def epochs(self, count: int) -> list[float]:
        return step_epochs(self.step, self.steps, count)


def step_epochs(step, steps: int, count: int) -> list[float]:
    """``count`` epochs of ``steps`` calls of ``step``, timed between epoch ends."""
    ends = [time.perf_counter()]
    for _ in range(count):
        for _ in range(steps):
            step()
        ends.append(time.perf_counter())
    return epoch_seconds(ends)


class CnnCeilingRunner(Runner):
    """Only the CNN step's GEMMs, as ``Conv2D`` and ``Dense`` do them, on preallocated
    im2col-shaped buffers: per convolution ``z = cols @ W2.T``, ``dW = (cols.T @ dz).T`` and,
    but for the first, ``dcols = dz @ W2``; the dense layer as in ``CeilingRunner``. No
    im2col, col2im, pooling or element-wise work."""

    label = "ceiling"

    def __init__(self, batch: int, steps: int, seed: int = 0):
        from .workload import CNN_MODEL

        self.model_name, self.batch, self.steps = CNN_MODEL, int(batch), int(steps)
        rng = np.random.default_rng(seed)
        f32 = np.float32
        self.layers = []
        for rows, inner, out, grad_in in CNN_GEMMS:
            m = rows * self.batch
            W = rng.standard_normal((out, inner)).astype(f32) * f32(0.05)
            if rows == 1:  # the dense layer keeps W as (in, out)
                W = np.ascontiguousarray(W.T).T
            self.layers.append({
                "cols": rng.random((m, inner), dtype=f32), "W": W,
                "dz": rng.standard_normal((m, out)).astype(f32),
                "z": np.empty((m, out), f32), "dWT": np.empty((inner, out), f32),
                "dcols": np.empty((m, inner), f32) if grad_in else None})
        self.flops_per_step = model_step_flops(CNN_MODEL, self.batch)

    def step(self) -> None:
        mm = np.matmul
        for layer in self.layers:
            mm(layer["cols"], layer["W"].T, out=layer["z"])
        for layer in reversed(self.layers):
            mm(layer["cols"].T, layer["dz"], out=layer["dWT"])  # dW, transposed
            if layer["dcols"] is not None:
                mm(layer["dz"], layer["W"], out=layer["dcols"])

    def epochs(self, count: int) -> list[float]:
        return step_epochs(self.step, self.steps, count)


def ceiling_runner(model, batch: int, steps: int, seed: int = 0) -> Runner:
    """The GEMM-only ceiling of ``model``: the CNN's or an MLP's."""
    if is_cnn(model):
        return CnnCeilingRunner(batch, steps, seed=seed)
    return CeilingRunner(model, batch, steps, seed=seed)


def sgemm_gflops(n: int = 2048, repeats: int = 5, calls: int | None = None) -> Stat:
    """float32 GEMM GFLOP/s at ``n`` x ``n`` (preallocated output), per repeat."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    np.matmul(a, b, out=c)  # warm-up: first touch, thread start
    flops = 2.0 * n ** 3
    calls = calls or max(1, int(4e10 // flops))  # about 40 GFLOP per repeat
    stat = Stat()
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            np.matmul(a, b, out=c)
        stat.values.append(flops * calls / (time.perf_counter() - started) / 1e9)
    return stat
