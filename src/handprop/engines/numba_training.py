"""Compiled training on the ``numba`` engine: many optimizer steps per JIT call.

``compiled_epoch(model, loss, optimizer, l2, batch_size)`` answers the
trainer's question (``Engine.compiled_epoch``): a ``CompiledEpoch`` when the
configuration is one the kernels know, else ``None`` and the reason. Known:
``Sequential`` stacks of ``Dense`` layers (any activation, with or without a
bias), each optionally followed by an ``Activation`` (after an identity
Dense) and a ``Dropout``; the three losses; SGD, momentum, Nesterov and Adam
with any schedule and weight decay; L2; float32 and float64.

Parameters, gradients and optimizer state are the model's and optimizer's
flat buffers, so checkpoints, evaluation and early stopping read exactly what
the kernels update. Every other buffer is allocated once here. Learning rates
come from the schedule, evaluated on the host for each step of a chunk, and
dropout masks from each Dropout layer's own generator in the layer path's
order (one draw per chunk gives the same numbers as one per batch).
"""

from __future__ import annotations

import math

import numpy as np

from ..nn.layers import Activation, BatchNorm, Dense, Dropout
from ..nn.losses import BinaryCrossEntropy, MeanSquaredError, SoftmaxCrossEntropy
from ..optim.optimizers import SGD, Adam, Momentum, Nesterov
from . import numba_training_kernels as kernels
from .base import activation_code
from .numba_training_losses import BCE, MSE, XENT

LOSS_KINDS = {SoftmaxCrossEntropy: XENT, MeanSquaredError: MSE, BinaryCrossEntropy: BCE}
OPTIMIZER_KINDS = {SGD: kernels.SGD, Momentum: kernels.MOMENTUM, Nesterov: kernels.NESTEROV,
                   Adam: kernels.ADAM}
#: Most uniforms drawn for one chunk's dropout masks (float64 each): 32 MB.
MASK_BUDGET = 4_000_000

_blas_ready = False


def numpy_blas_gemm() -> dict | None:
    """Addresses of ``sgemm``/``dgemm`` in the OpenBLAS NumPy itself calls, when it exports
    them with 64-bit integers (``scipy_sgemm_64_``, as NumPy's wheels do), else None."""
    import ctypes
    import os

    import numpy
    from threadpoolctl import ThreadpoolController

    numpy_dir = os.path.dirname(os.path.abspath(numpy.__file__))
    for lib in ThreadpoolController().select(internal_api="openblas").lib_controllers:
        path = os.path.abspath(lib.filepath)
        # NumPy's own copy: inside the numpy package or its wheel's numpy.libs/.
        if not (path.startswith(numpy_dir + os.sep) or path.startswith(numpy_dir + ".libs")):
            continue
        try:
            so = ctypes.CDLL(path)
            return {dtype: ctypes.cast(getattr(so, f"scipy_{letter}gemm_64_"), ctypes.c_void_p).value
                    for dtype, letter in (("float32", "s"), ("float64", "d"))}
        except (OSError, AttributeError):
            return None
    return None


def register_blas() -> None:
    """Give the BLAS the kernels call its symbol names: NumPy's own OpenBLAS where it can
    be reached, else SciPy's ``cython_blas``.

    One BLAS for the whole process matters: each OpenBLAS keeps its own threads, which
    spin for a while after their last product. With the epoch's GEMMs in SciPy's copy and
    the evaluation's in NumPy's, NumPy's spinning threads took the cores from the next
    epoch's products (back-to-back epochs of 784-100-10 at batch 64, 2 threads: 87-122k
    samples/s, against 194-201k with NumPy's pool held to one thread)."""
    global _blas_ready
    if _blas_ready:
        return
    import llvmlite.binding as llvm
    from numba.extending import get_cython_function_address

    for dtype, symbol in kernels.BLAS_SYMBOLS[32].items():
        name = "sgemm" if dtype == "float32" else "dgemm"
        llvm.add_symbol(symbol, get_cython_function_address("scipy.linalg.cython_blas", name))
    numpy_gemm = numpy_blas_gemm()
    if numpy_gemm:
        for dtype, symbol in kernels.BLAS_SYMBOLS[64].items():
            llvm.add_symbol(symbol, numpy_gemm[dtype])
    kernels.BLAS_INT_BITS[0] = 64 if numpy_gemm else 32
    _blas_ready = True


def plan_layers(model) -> tuple[list[dict] | None, str]:
    """The model as Dense layers with their activation and dropout, or the reason it
    is not one the compiled path knows."""
    plan: list[dict] = []
    for i, layer in enumerate(model.layers):
        kind = type(layer)
        if kind is Dense:
            plan.append({"layer": layer, "activation": layer.activation, "alpha": layer.alpha,
                         "dropout": None})
        elif kind is BatchNorm:
            return None, ("batch norm: the compiled path does not support it yet; "
                          "running layer by layer")
        elif kind is Activation and plan and plan[-1]["activation"] == "identity" \
                and plan[-1]["dropout"] is None and not plan[-1].get("folded"):
            plan[-1].update(activation=layer.kind, alpha=layer.alpha, folded=True)
        elif kind is Dropout and plan and plan[-1]["dropout"] is None:
            if layer.rate > 0.0:
                plan[-1]["dropout"] = layer
        else:
            return None, (f"layer {i} ({layer.describe()}) here: the compiled path runs "
                          f"Dense layers, each with an optional Activation and Dropout after "
                          f"it; running layer by layer")
    if not plan:
        return None, "the model has no Dense layer; running layer by layer"
    if plan[-1]["dropout"] is not None:
        return None, "dropout after the output layer: running layer by layer"
    return plan, ""


def compiled_epoch(model, loss, optimizer, l2: float, batch_size: int):
    """``(CompiledEpoch, "")`` or ``(None, reason)``; never raises for a configuration
    it does not know."""
    if getattr(model, "flat_params", None) is None or not hasattr(model, "layers"):
        return None, "the model has no flat parameter buffer (build it first)"
    plan, reason = plan_layers(model)
    if plan is None:
        return None, reason
    if type(loss) not in LOSS_KINDS:
        return None, f"loss {getattr(loss, 'name', type(loss).__name__)!r}: the compiled " \
                     f"path knows {', '.join(c.name for c in LOSS_KINDS)}"
    if type(optimizer) not in OPTIMIZER_KINDS:
        return None, f"optimizer {getattr(optimizer, 'name', type(optimizer).__name__)!r}: " \
                     f"the compiled path knows sgd, momentum, nesterov and adam"
    try:
        import scipy.linalg.cython_blas  # noqa: F401
    except ImportError as exc:
        return None, f"SciPy's BLAS is needed for compiled training ({exc}); pip install scipy"
    return CompiledEpoch(model, loss, optimizer, l2, batch_size, plan), ""


def warmup(engine, dtype: str) -> None:
    """Compile (or load from the cache) ``train_steps`` for ``dtype``: one signature
    serves every model, loss and optimizer."""
    from ..nn.model import Sequential

    model = Sequential([Dense(3, "tanh"), Dense(2)], input_dim=2, engine=engine, dtype=dtype)
    runner, reason = compiled_epoch(model, SoftmaxCrossEntropy(), SGD(lr=0.1), 0.0, 2)
    if runner is None:
        return
    runner.bind(np.zeros((2, 2), dtype), np.zeros(2, np.int64))
    runner.run(np.arange(2), 0, 1, np.zeros(1), np.zeros(1))


class CompiledEpoch:
    """Runs chunks of an epoch's mini-batches in ``train_steps``, one call each."""

    path = "compiled"
    description = ("compiled (chunks of mini-batches in one Numba call each, BLAS from "
                   "compiled code)")

    def __init__(self, model, loss, optimizer, l2, batch_size, plan):
        register_blas()
        self.kernels = kernels
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.l2, self.batch_size = float(l2), int(batch_size)
        self.plan = plan
        self.dtype = np.dtype(model.dtype)
        self.layout = self._layout(model, plan, self.batch_size)
        self.work = np.zeros(self._work_size, self.dtype)
        self.picked = np.zeros(self.batch_size)
        widest = int(self.layout[:, kernels.UNITS].max())
        self.acc = np.zeros(widest)
        self.nz = np.zeros(model.input_dim, np.int64)
        self.row = np.zeros(widest, self.dtype)
        self.alphas = np.array([e["alpha"] for e in plan], np.float64)
        self.rates = np.array([e["dropout"].rate if e["dropout"] else 0.0 for e in plan])
        # The layer path's mask value: (u >= rate) / (1 - rate) in float64, then its dtype.
        self.scales = 1.0 / (1.0 - self.rates)
        self.masks = np.zeros(0)
        self.loss_kind = LOSS_KINDS[type(loss)]
        self.threshold = float(loss.single_output_threshold)
        self.kind = OPTIMIZER_KINDS[type(optimizer)]
        self._empty = np.zeros(0, self.dtype)
        self._data = None

    def _layout(self, model, plan, bs) -> np.ndarray:
        """Offsets of every layer's parameters (in the model's flat buffers) and of its
        activations (in one work buffer), as ``train_steps`` reads them."""
        k = self.kernels
        offsets = {name: offset for name, offset, _ in model.param_layout}
        index = {id(layer): i for i, layer in enumerate(model.layers)}
        layout = np.zeros((len(plan), k.LAYOUT_COLUMNS), np.int64)
        cursor = bs * model.input_dim  # the gathered batch comes first
        previous_out = 0
        for l, entry in enumerate(plan):
            dense, name = entry["layer"], f"layer{index[id(entry['layer'])]}"
            row = layout[l]
            row[k.FAN_IN], row[k.UNITS] = dense.input_dim, dense.units
            row[k.W_AT] = offsets[f"{name}.W"]
            row[k.B_AT] = offsets.get(f"{name}.b", 0)
            row[k.HAS_BIAS] = int(dense.use_bias)
            row[k.CODE] = activation_code(entry["activation"])
            row[k.IN_AT] = previous_out
            size = bs * dense.units
            row[k.A_AT], cursor = cursor, cursor + size
            if entry["dropout"] is not None:
                row[k.D_AT], cursor = cursor, cursor + size
            else:
                row[k.D_AT] = row[k.A_AT]
            row[k.G_AT], cursor = cursor, cursor + size
            previous_out = row[k.D_AT]
        self._work_size = cursor
        return layout

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
        model, opt, bs = self.model, self.optimizer, self.batch_size
        order = np.ascontiguousarray(order, dtype=np.int64)
        rows = sum(min(bs, order.shape[0] - b * bs) for b in range(first, first + count))
        self._draw_masks(rows)
        flat = opt.bind(model)
        s1 = flat.get("velocity", flat.get("m", self._empty))
        s2 = flat.get("v", self._empty)
        done = self.kernels.train_steps(
            xs, labels, targets, use_labels, order, first, count, bs,
            self.layout, self.alphas, self.rates, self.scales, self.masks, self.work,
            self.picked, self.acc, self.nz, self.row, model.flat_params, model.flat_grads, s1, s2,
            self.loss_kind, self.threshold, self.kind, self._hyperparameters(count),
            float(getattr(opt, "momentum", 0.0)), float(getattr(opt, "beta1", 0.0)),
            float(getattr(opt, "beta2", 0.0)), float(getattr(opt, "eps", 0.0)),
            float(opt.weight_decay), self.l2, batch_loss, correct)
        opt.t += done
        return done

    def _draw_masks(self, rows: int) -> None:
        """Each Dropout layer's uniforms for ``rows`` samples from its own generator, into
        its segment of ``masks``: the numbers the layer path draws batch by batch."""
        k = self.kernels
        need = rows * self.layout[:, k.UNITS] * (self.rates > 0)
        if self.masks.shape[0] < need.sum():
            self.masks = np.zeros(int(need.sum()))
        cursor = 0
        for l, entry in enumerate(self.plan):
            self.layout[l, k.MASK_AT] = cursor
            if need[l]:
                entry["dropout"].rng.random(out=self.masks[cursor:cursor + need[l]])
                cursor += need[l]

    def _hyperparameters(self, count: int) -> np.ndarray:
        """Per step: the learning rate from the schedule at the optimizer's counter
        (for Adam: ``lr / (1 - beta1**t)``) and Adam's ``sqrt(1 - beta2**t)``, computed as
        ``NumbaEngine.adam_update`` computes them."""
        opt = self.optimizer
        hyper = np.ones((count, 2))
        for s in range(count):
            t = opt.t + s
            lr = float(opt.schedule(t))
            if self.kind == kernels.ADAM:
                step = t + 1
                beta1, beta2 = float(opt.beta1), float(opt.beta2)
                hyper[s, 0] = lr / (1.0 - beta1**step)
                hyper[s, 1] = math.sqrt(1.0 - beta2**step)
            else:
                hyper[s, 0] = lr
        return hyper
