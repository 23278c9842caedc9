"""Compiled training on the ``numba`` engine: an ``EpochPlan`` run as many optimizer steps
per JIT call.

``compile_plan(plan)`` answers the engine's side of the trainer's question
(``Engine.compiled_epoch``): a ``CompiledEpoch``. Every buffer but the plan's parameters,
gradients and optimizer state is allocated once here. Learning rates come from the plan,
evaluated on the host for each step of a chunk, and dropout masks from each dropout layer's
own generator in the layer path's order (one draw per chunk gives the same numbers as one
per batch).
"""

from __future__ import annotations

import numpy as np

from ..base import activation_code
from ..plan import DenseStep, EpochPlan
from . import epoch_kernels as kernels
from . import simd, threads
from .blas import register_blas
from .loss_kernels import BCE, MSE, XENT

LOSS_KINDS = {"softmax_cross_entropy": XENT, "mean_squared_error": MSE,
              "binary_cross_entropy": BCE}
OPTIMIZER_KINDS = {"sgd": kernels.SGD, "momentum": kernels.MOMENTUM,
                   "nesterov": kernels.NESTEROV, "adam": kernels.ADAM}
#: Most uniforms drawn for one chunk's dropout masks (float64 each): 32 MB.
MASK_BUDGET = 4_000_000


def unavailable_reason() -> str:
    """"" when the compiled epoch can run here, else why not."""
    try:
        import scipy.linalg.cython_blas  # noqa: F401
    except ImportError as exc:
        return f"SciPy's BLAS is needed for compiled training ({exc}); pip install scipy"
    return ""


def compile_plan(plan: EpochPlan):
    """``(CompiledEpoch, "")``; every plan ``train/compile.py`` makes is one the kernels run."""
    return CompiledEpoch(plan), ""


def warmup(dtype: str) -> None:
    """Compile (or load from the cache) ``train_steps`` for ``dtype``: one signature serves
    every model, loss and optimizer."""
    dt = np.dtype(dtype)
    params, grads = np.zeros(17, dt), np.zeros(17, dt)
    plan = EpochPlan(
        dtype=dt, input_dim=2, batch_size=2,
        layers=(DenseStep(2, 3, 0, 6, "tanh", 0.01), DenseStep(3, 2, 9, 15, "identity", 0.01)),
        loss="softmax_cross_entropy", threshold=0.5, optimizer="sgd",
        hyper=dict.fromkeys(("momentum", "beta1", "beta2", "eps", "weight_decay"), 0.0), l2=0.0,
        params=params, grads=grads, state=dict, step_hyperparameters=lambda count: np.full(
            (count, 2), 0.1), advance=lambda steps: None)
    runner = CompiledEpoch(plan)
    runner.bind(np.zeros((2, 2), dt), np.zeros(2, np.int64))
    runner.run(np.arange(2), 0, 1, np.zeros(1), np.zeros(1))


class CompiledEpoch:
    """Runs chunks of an epoch's mini-batches in ``train_steps``, one call each."""

    path = "compiled"

    def __init__(self, plan: EpochPlan):
        register_blas()
        self.kernels = kernels
        self.plan = plan
        self.batch_size = int(plan.batch_size)
        self.dtype = np.dtype(plan.dtype)
        self.layout = self._layout(plan, self.batch_size)
        self.work = np.zeros(self._work_size, self.dtype)
        self.picked = np.zeros(self.batch_size)
        widest = int(self.layout[:, kernels.UNITS].max())
        self.batch_labels = np.zeros(self.batch_size, np.int64)
        self.nz = np.zeros(plan.input_dim, np.int64)
        self.row = np.zeros(widest, self.dtype)
        self.alphas = np.array([step.alpha for step in plan.layers], np.float64)
        self.rates = np.array([step.dropout for step in plan.layers])
        # The layer path's mask value: (u >= rate) / (1 - rate) in float64, then its dtype.
        self.scales = 1.0 / (1.0 - self.rates)
        self.masks = np.zeros(0)
        self.loss_kind = LOSS_KINDS[plan.loss]
        #: handprop's own products on the target's vectors, on threads of its own, where the
        #: target has them and batches are big enough to share; else BLAS on one thread
        #: (which skips a small batch's zero inputs in its first layer).
        self.dense = (DenseSteps(self.layout, self.batch_size, self.dtype)
                      if simd.vector_kernels() and self.batch_size > kernels.SMALL_BATCH
                      else None)
        self.kind = OPTIMIZER_KINDS[plan.optimizer]
        self._empty = np.zeros(0, self.dtype)
        self._data = None

    def _layout(self, plan: EpochPlan, bs: int) -> np.ndarray:
        """Offsets of every layer's parameters (in the flat buffers) and of its activations
        (in one work buffer), as ``train_steps`` reads them."""
        k = self.kernels
        layout = np.zeros((len(plan.layers), k.LAYOUT_COLUMNS), np.int64)
        cursor = bs * plan.input_dim  # the gathered batch comes first
        previous_out = 0
        for row, step in zip(layout, plan.layers):
            row[k.FAN_IN], row[k.UNITS] = step.fan_in, step.units
            row[k.W_AT] = step.weight_at
            row[k.B_AT] = step.bias_at or 0
            row[k.HAS_BIAS] = int(step.bias_at is not None)
            row[k.CODE] = activation_code(step.activation)
            row[k.IN_AT] = previous_out
            size = bs * step.units
            row[k.A_AT], cursor = cursor, cursor + size
            if step.dropout > 0:
                row[k.D_AT], cursor = cursor, cursor + size
            else:
                row[k.D_AT] = row[k.A_AT]
            row[k.G_AT], cursor = cursor, cursor + size
            previous_out = row[k.D_AT]
        self._work_size = cursor
        return layout

    @property
    def description(self) -> str:
        if self.dense is None:
            return "compiled (chunks of mini-batches in one Numba call each, BLAS from " \
                   "compiled code)"
        return (f"compiled (chunks of mini-batches in one Numba call each, handprop's own "
                f"{simd.ISA.upper()} products on {self.dense.threads} "
                f"thread{'s' if self.dense.threads > 1 else ''})")

    def describe(self) -> str:
        return self.description

    # ------------------------------------------------------------------ data
    def bind(self, xs, ys) -> None:
        """Hold the training arrays (checked and on the engine already) in the layouts
        the kernel reads: C-contiguous inputs, int64 labels or targets in the dtype."""
        xs = np.ascontiguousarray(xs, dtype=self.dtype)
        ys = np.asarray(ys)
        if ys.ndim == 1:
            labels, targets = np.ascontiguousarray(ys, dtype=np.int64), np.zeros((1, 1), self.dtype)
        else:
            labels, targets = np.zeros(1, np.int64), np.ascontiguousarray(ys, dtype=self.dtype)
        self._data = (xs, labels, targets, ys.ndim == 1)

    def max_chunk(self) -> int:
        """Most batches one call may take, so that the chunk's dropout masks fit the budget."""
        units = self.layout[:, self.kernels.UNITS]
        per_batch = self.batch_size * int(units[self.rates > 0].sum())
        return max(1, MASK_BUDGET // per_batch) if per_batch else 1 << 30

    # ------------------------------------------------------------------- run
    def run(self, order, first: int, count: int, batch_loss, correct) -> int:
        """Train on batches ``first .. first + count - 1`` of ``order`` (host sample
        indices); write their losses and correct counts into the first ``count`` entries
        of ``batch_loss``/``correct`` (float64); advance the optimizer's step counter.
        Returns the steps done: fewer than ``count`` only when a loss was not finite
        (the last one)."""
        if self._data is None:
            raise RuntimeError("CompiledEpoch.run needs bind(xs, ys) first")
        xs, labels, targets, use_labels = self._data
        plan, bs = self.plan, self.batch_size
        order = np.ascontiguousarray(order, dtype=np.int64)
        rows = sum(min(bs, order.shape[0] - b * bs) for b in range(first, first + count))
        self._draw_masks(rows)
        state = plan.state()
        s1 = state.get("velocity", state.get("m", self._empty))
        s2 = state.get("v", self._empty)
        hyper = plan.hyper
        common = (xs, labels, targets, use_labels, order, first, count, bs, self.layout,
                  self.alphas, self.rates, self.scales, self.masks, self.work, self.picked,
                  self.batch_labels)
        settings = (self.loss_kind, plan.threshold, self.kind, plan.step_hyperparameters(count),
                    hyper["momentum"], hyper["beta1"], hyper["beta2"], hyper["eps"],
                    hyper["weight_decay"], plan.l2, batch_loss, correct)
        if self.dense is None:
            done = self.kernels.train_steps(*common, self.nz, self.row, plan.params,
                                            plan.grads, s1, s2, *settings)
        else:
            done = self.dense.run(common, (plan.params, plan.grads, s1, s2), settings)
        plan.advance(done)
        return done

    def _draw_masks(self, rows: int) -> None:
        """Each dropout layer's uniforms for ``rows`` samples from its own generator, into
        its segment of ``masks``: the numbers the layer path draws batch by batch."""
        k = self.kernels
        need = rows * self.layout[:, k.UNITS] * (self.rates > 0)
        if self.masks.shape[0] < need.sum():
            self.masks = np.zeros(int(need.sum()))
        cursor = 0
        for l, step in enumerate(self.plan.layers):
            self.layout[l, k.MASK_AT] = cursor
            if need[l]:
                step.draw_uniforms(out=self.masks[cursor:cursor + need[l]])
                cursor += need[l]


class DenseSteps:
    """The buffers of ``dense_epoch.dense_steps`` and its threads, for one layout."""

    def __init__(self, layout, batch_size: int, dtype):
        from .dense_epoch import UNIT_ROWS

        k = kernels
        sizes = layout[:, k.FAN_IN] * layout[:, k.UNITS]
        self.wt_at = np.concatenate([[0], np.cumsum(sizes)])[:-1].astype(np.int64)
        self.wt = np.zeros(int(sizes.sum()), dtype)
        units = -(-batch_size // UNIT_ROWS)
        self.unit_loss, self.unit_correct = np.zeros(units), np.zeros(units)
        self.tmp = np.zeros(batch_size * int(layout[:, k.FAN_IN].max()), dtype)
        self.threads = max(1, min(threads.kernel_threads(), units))

    def run(self, common, buffers, settings) -> int:
        from .dense_epoch import dense_steps

        sync = np.zeros(1, np.int64)
        done = threads.run_together(dense_steps, self.threads, (
            *common, *buffers, *settings, self.wt, self.wt_at, self.unit_loss,
            self.unit_correct, self.tmp, sync, self.threads))
        return int(done[0])