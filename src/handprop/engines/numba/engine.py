"""The ``numba`` engine: NumPy arrays, Numba-JIT fused kernels on the hot paths.

Every override checks its inputs at the boundary and calls the reference
(``super()``) for anything the kernels do not handle, so the answer is always
the reference's answer, only faster where it can be:

* Arrays must be plain ``numpy.ndarray`` of float32 or float64, all of one
  dtype and of the shapes the primitive documents; otherwise -> reference.
* Inputs that are only read and are not C-contiguous are copied to
  C-contiguous first (one cheap copy, then the fused kernel).
* Arrays updated in place (optimizer parameters and state) that are not
  C-contiguous or not writeable -> reference, which updates strided views
  in place correctly.
* Convolution and pooling kernels read images of any memory layout (no copy
  of a convolution's transposed output).
* ``softmax_xent`` labels must be integers; they are checked inside the
  kernel, and an out-of-range label raises ``ConfigError`` naming it (the
  reference would silently give a wrong loss).

Numba itself is imported only when this engine is constructed or asked
whether it is available, so ``import handprop`` stays light.
"""

from __future__ import annotations

import importlib
import math

import numpy as np

from ...errors import ConfigError
from ..base import ACTIVATION_CODES, LECUN_A, LECUN_S, activation_code
from ..cpu import NumpyEngine
from .arrays import floats, inplace_ok
from .windows import ROWS_PER_RUN, WindowPrimitives, _vector_aligned

#: Oldest Numba whose behaviour the kernels were written against.
MIN_NUMBA = (0, 58)

_RELU, _LEAKY, _SIGMOID, _TANH, _LECUN, _IDENTITY = (
    ACTIVATION_CODES[k] for k in ("relu", "leaky_relu", "sigmoid", "tanh", "lecun_tanh", "identity")
)
#: Rows per partial sum of a big ``bias_grad``, a fixed grouping whatever the thread count.
BIAS_BLOCK_ROWS = 8192


class NumbaEngine(WindowPrimitives, NumpyEngine):
    name = "numba"
    fused_kernels = True

    _reason: str | None = None

    def __init__(self):
        super().__init__()
        from . import blas, direct_kernels, kernels, pool_kernels, simd, threads, window_kernels

        self.kernels, self.threads, self.blas, self.simd = kernels, threads, blas, simd
        self.window_kernels, self.direct_kernels = window_kernels, direct_kernels
        self.pool_kernels = pool_kernels
        #: Whether the direct convolutions may run (``windows.IMPLEMENTATIONS``): where the
        #: kernels are compiled for a CPU with AVX2 or AVX-512 (blocks sized for each).
        self.direct_convolution = simd.vector_kernels()

    # ------------------------------------------------------------ discovery
    @classmethod
    def unavailable_reason(cls) -> str:
        """"" when Numba imports and is new enough, otherwise why not."""
        if cls._reason is None:
            cls._reason = _probe_numba()
        return cls._reason

    def describe(self) -> dict:
        info = super().describe()
        import numba

        info["numba_version"] = numba.__version__
        return info

    def warmup(self, dtypes=("float32",)) -> None:
        """Compile (or load from the cache) every kernel for ``dtypes``: every case of the
        primitive table in each of its variants, a big bias gradient's blocks (reached only
        by 100,000-row inputs), and the compiled epoch, so the first timed call pays no
        compilation."""
        from ..cases import warm_up
        from .epoch import warmup as warm_epoch

        for name in dtypes:
            warm_up(self, name)
            z = np.ones((2, 3), dtype=name)
            self.kernels.bias_grad_blocks(z, 1, np.empty((2, 3)), np.zeros(1, np.int64))
            warm_epoch(name)

    # ---------------------------------------------------- compiled training
    def compiled_epoch_unavailable(self) -> str:
        from .epoch import unavailable_reason

        return unavailable_reason()

    def compiled_epoch(self, plan):
        from .epoch import compile_plan

        return compile_plan(plan)

    def threads_for(self, model):
        """For a model with image layers: BLAS on one thread. Their kernels share each batch
        between this engine's own threads, which would otherwise share the cores with
        OpenBLAS's, spinning after every multithreaded product of a dense layer. Models of
        dense layers keep BLAS's threads."""
        if self.threads.kernel_threads() == 1 or not model.has_image_layers:
            return super().threads_for(model)
        return self.threads.one_blas_thread()

    # ---------------------------------------------------------- activations
    def bias_act(self, z, b, kind: str, alpha: float = 0.01):
        code = activation_code(kind)
        if code == _IDENTITY or not floats(z, b) or z.ndim != 2 or b.ndim != 1:
            # identity is just ``z + b``: NumPy's add beats a kernel call.
            return super().bias_act(z, b, kind, alpha)
        self.check_bias_shapes(z, b)
        z = np.ascontiguousarray(z)
        b = np.ascontiguousarray(b)
        k = self.kernels
        out = np.empty_like(z)
        if code == _RELU or code == _LEAKY:
            k.bias_act_direct(z, b, code, float(alpha), out)
        elif code == _SIGMOID:
            k.bias_neg_abs(z, b, out)
            np.exp(out, out=out)
            k.sigmoid_finish(z, b, out)
        elif code == _TANH:
            np.add(z, b, out=out)
            np.tanh(out, out=out)
        else:  # lecun_tanh: A * tanh(S * (z + b)), the reference's order
            k.bias_scale(z, b, LECUN_S, out)
            np.tanh(out, out=out)
            np.multiply(out, LECUN_A, out=out)  # a weak Python scalar, as in the reference
        return out

    def act_backward(self, grad, out, kind: str, alpha: float = 0.01):
        code = activation_code(kind)
        if code == _IDENTITY or not floats(grad, out) or grad.shape != out.shape:
            # identity: the reference returns ``grad`` itself; nothing to fuse.
            return super().act_backward(grad, out, kind, alpha)
        grad = np.ascontiguousarray(grad)
        out = np.ascontiguousarray(out)
        res = np.empty_like(grad)
        self.kernels.act_backward(grad.ravel(), out.ravel(), code, float(alpha), res.ravel())
        return res

    def bias_grad(self, grad):
        if not floats(grad) or grad.ndim != 2:
            return super().bias_grad(grad)
        res = np.empty(grad.shape[1], dtype=grad.dtype)
        grad = np.ascontiguousarray(grad)
        blocks = -(-grad.shape[0] // BIAS_BLOCK_ROWS)
        if blocks == 1 or grad.size < self.threads.PARALLEL_MIN_ELEMENTS:
            self.kernels.bias_grad(grad, res)
            return res
        # A convolution's rows: fixed blocks, summed in order, shared between threads.
        partial = np.empty((blocks, grad.shape[1]))
        self.threads.share_units(self.kernels.bias_grad_blocks, blocks, grad.size,
                                 (grad, BIAS_BLOCK_ROWS, partial))
        res[:] = partial.sum(axis=0)
        return res

    def act_backward_bias_grad(self, grad, out, kind: str, alpha: float = 0.01):
        code = activation_code(kind)
        if (code not in (_RELU, _LEAKY) or not floats(grad, out) or grad.ndim != 2
                or grad.shape != out.shape):
            return super().act_backward_bias_grad(grad, out, kind, alpha)
        # relu and leaky_relu: dz (the same bits as act_backward) and its column sums in one
        # pass, in fixed blocks of rows shared between threads (the sums' order is fixed:
        # ROWS_PER_RUN interleaved partial sums a column, then the blocks in order).
        grad, out = np.ascontiguousarray(grad), np.ascontiguousarray(out)
        dz, db = _vector_aligned(grad.shape, grad.dtype), np.empty(grad.shape[1], dtype=grad.dtype)
        blocks = max(1, -(-grad.shape[0] // BIAS_BLOCK_ROWS))
        partial = np.empty((blocks, grad.shape[1]))
        self.threads.share_units(self.window_kernels.act_backward_bias_grad_blocks, blocks,
                                 grad.size, (
            grad, out, code, float(alpha), BIAS_BLOCK_ROWS, ROWS_PER_RUN, dz, partial))
        db[:] = partial[0] if blocks == 1 else partial.sum(axis=0)
        return dz, db

    def sum_squares(self, w) -> float:
        if not floats(w):
            return super().sum_squares(w)
        return float(self.kernels.sum_squares(np.ascontiguousarray(w).ravel()))

    # ------------------------------------------------ batch normalization
    def batch_norm_forward(self, x, gamma, beta, eps: float):
        if (not floats(x, gamma, beta) or x.ndim != 2 or x.shape[0] == 0
                or gamma.shape != (x.shape[1],) or beta.shape != gamma.shape):
            return super().batch_norm_forward(x, gamma, beta, eps)
        x = np.ascontiguousarray(x)
        out, x_hat = np.empty_like(x), np.empty_like(x)
        inv_std, mean, var = (np.empty(x.shape[1], dtype=x.dtype) for _ in range(3))
        self.kernels.batch_norm_forward(x, np.ascontiguousarray(gamma), np.ascontiguousarray(beta),
                                   float(eps), out, x_hat, inv_std, mean, var)
        return out, x_hat, inv_std, mean, var

    def batch_norm_backward(self, grad, x_hat, inv_std, gamma):
        if (not floats(grad, x_hat, inv_std, gamma) or grad.ndim != 2 or grad.shape[0] == 0
                or x_hat.shape != grad.shape or inv_std.shape != (grad.shape[1],)
                or gamma.shape != inv_std.shape):
            return super().batch_norm_backward(grad, x_hat, inv_std, gamma)
        grad = np.ascontiguousarray(grad)
        dx = np.empty_like(grad)
        dgamma, dbeta = np.empty_like(inv_std), np.empty_like(inv_std)
        self.kernels.batch_norm_backward(grad, np.ascontiguousarray(x_hat),
                                    np.ascontiguousarray(inv_std), np.ascontiguousarray(gamma),
                                    dx, dgamma, dbeta)
        return dx, dgamma, dbeta

    # --------------------------------------------------------------- losses
    def softmax_xent(self, logits, labels):
        if (
            not floats(logits)
            or logits.ndim != 2
            or logits.shape[0] == 0
            or logits.shape[1] == 0
            or not isinstance(labels, np.ndarray)
            or labels.dtype.kind not in "iu"
            or labels.shape != (logits.shape[0],)
        ):
            return super().softmax_xent(logits, labels)
        n, k = logits.shape
        logits = np.ascontiguousarray(logits)
        # One label dtype means one compiled specialisation; the copy is tiny.
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        grad = np.empty_like(logits)
        picked = np.empty(n, dtype=np.float64)
        bad = self.kernels.xent_shift(logits, labels, grad, picked)
        if bad >= 0:
            raise ConfigError(
                f"label {int(labels[bad])} at batch row {bad} is outside 0..{k - 1}: "
                f"the model has {k} outputs; check that the dataset's number of classes "
                f"matches the last layer's units"
            )
        np.exp(grad, out=grad)  # NumPy's SIMD exp; arguments are <= 0, so no overflow
        loss = self.kernels.xent_finish(grad, labels, picked, n)
        return float(loss), grad

    # ----------------------------------------------------------- optimizers
    def sgd_update(self, param, grad, lr: float, weight_decay: float = 0.0) -> None:
        if not floats(param, grad) or param.shape != grad.shape or not inplace_ok(param):
            return super().sgd_update(param, grad, lr, weight_decay)
        self.kernels.sgd_update(param.ravel(), np.ascontiguousarray(grad).ravel(), float(lr),
                           float(weight_decay), bool(weight_decay))

    def momentum_update(self, param, grad, velocity, lr: float, momentum: float,
                        weight_decay: float = 0.0, nesterov: bool = False) -> None:
        if (
            not floats(param, grad, velocity)
            or not param.shape == grad.shape == velocity.shape
            or not inplace_ok(param, velocity)
        ):
            return super().momentum_update(param, grad, velocity, lr, momentum,
                                           weight_decay, nesterov)
        self.kernels.momentum_update(
            param.ravel(), np.ascontiguousarray(grad).ravel(), velocity.ravel(), float(lr),
            float(momentum), float(weight_decay), bool(weight_decay), bool(nesterov),
        )

    def adam_update(self, param, grad, m, v, lr: float, beta1: float, beta2: float,
                    eps: float, step: int, weight_decay: float = 0.0) -> None:
        if (
            step < 1
            or not floats(param, grad, m, v)
            or not param.shape == grad.shape == m.shape == v.shape
            or not inplace_ok(param, m, v)
        ):
            # step < 1 too: the reference raises the ConfigError.
            return super().adam_update(param, grad, m, v, lr, beta1, beta2, eps, step,
                                       weight_decay)
        # Scalars in float64 (Python floats); the kernel casts them, as the
        # reference's array arithmetic does.
        beta1, beta2 = float(beta1), float(beta2)
        bc1 = 1.0 - beta1**step
        bc2 = 1.0 - beta2**step
        self.kernels.adam_update(
            param.ravel(), np.ascontiguousarray(grad).ravel(), m.ravel(), v.ravel(),
            beta1, 1.0 - beta1, beta2, 1.0 - beta2, float(eps),
            float(lr) / bc1, math.sqrt(bc2), float(weight_decay), bool(weight_decay),
        )


def _probe_numba() -> str:
    try:
        numba = importlib.import_module("numba")
    except Exception as exc:  # ImportError, or numba refusing this NumPy
        return f"numba cannot be imported ({type(exc).__name__}: {exc}); pip install 'numba>=0.58'"
    try:
        version = tuple(int(p) for p in numba.__version__.split(".")[:2])
    except ValueError:
        return ""
    if version < MIN_NUMBA:
        need = ".".join(map(str, MIN_NUMBA))
        return f"numba {numba.__version__} is too old; this engine needs numba>={need}"
    return ""
