"""The engine seam.

An ``Engine`` owns the arrays: its array-API namespace ``xp``, moving arrays
to and from the host, and a handful of fused primitives. Every primitive is
written once here, in plain array-API code: that reference *is* the ``cpu``
engine and the oracle the faster engines are tested against. Faster engines
override only the primitives they fuse and call ``super()`` for anything
their kernels do not handle.

Layers, losses and optimizers call ``engine.xp`` and these primitives only;
nothing above this package asks which engine it runs on.

Conventions shared by every engine (the kernels in ``numba/kernels.py`` and
``cuda/kernels/*.cu`` follow them too):

* ``z``/``out``/``grad`` are 2-D ``(batch, units)``; ``b`` is 1-D ``(units,)``.
* Images are NCHW ``(batch, channels, height, width)``. ``kernel``, ``size`` and
  ``stride`` are ``(h, w)`` pairs; ``padding`` is ``(top, bottom, left, right)``.
  Convolution windows are gathered by ``im2col`` into rows, so a convolution is
  one matrix product; pooling has no padding: ``OH = (H - ph) // sh + 1``.
* Activation derivatives are computed from the activation *output*, which
  every supported activation allows, so layers keep only their output.
* ``softmax_xent`` takes integer class labels and returns the batch-mean loss
  and ``(softmax - onehot) / batch`` in one call. Labels are validated once
  per dataset by the caller (``nn.losses.check_targets``), not per batch.
* Scalars that come out of a primitive (a loss) may stay on the engine: a
  Python float on host engines, a 0-d device array on a GPU, so a training
  step never waits for the device. Read them with ``engine.to_float``.
* Optimizer updates work in place. ``weight_decay`` is coupled (added to the
  gradient, as in ``torch.optim``); L2 as a loss term lives in the model.
"""

from __future__ import annotations

import contextlib

import math
from typing import Any

import numpy as np

from ..errors import ConfigError, ShapeError
from .base_windows import ReferenceWindows, _check_images, window_output_size  # noqa: F401

#: A convolution's products: forward, weight gradient, a first layer's fused backward, input
#: gradient (the engines' window primitives).
WINDOW_PRODUCTS = ("im2col_matmul", "im2col_t_matmul", "act_backward_weight_grad",
                   "matmul_col2im")

# Integer codes shared with the Numba and CUDA kernels.
ACTIVATION_CODES = {
    "identity": 0,
    "sigmoid": 1,
    "tanh": 2,
    "relu": 3,
    "leaky_relu": 4,
    "lecun_tanh": 5,
}
ACTIVATIONS = tuple(ACTIVATION_CODES)

# LeCun's "improved sigmoid": f(x) = A tanh(S x).
LECUN_A = 1.7159
LECUN_S = 2.0 / 3.0


def activation_code(kind: str) -> int:
    try:
        return ACTIVATION_CODES[kind]
    except KeyError:
        raise ConfigError(
            f"unknown activation {kind!r}; choose one of: {', '.join(ACTIVATIONS)}"
        ) from None


class Engine(ReferenceWindows):
    """Reference engine written against the array API (``self.xp``)."""

    name = "base"
    #: Capability flags, so tests and callers branch on what an engine can do.
    is_gpu = False
    fused_kernels = False

    def __init__(self, xp: Any):
        self.xp = xp

    # -------------------------------------------------------------- discovery
    @classmethod
    def unavailable_reason(cls) -> str:
        """"" when this engine can run here, otherwise why not (for ``handprop info``)."""
        return ""

    def warmup(self, dtypes=("float32",)) -> None:
        """Compile or load whatever the first call would, so timed calls pay none of it
        (nothing to do for the reference)."""

    # ------------------------------------------------------------------ arrays
    def asarray(self, array, dtype=None):
        """Put a host array (or nested list) onto this engine.

        On host engines the result may share memory with ``array``; copy first
        if the caller keeps using it while the engine updates it in place.
        """
        host = np.asarray(array)
        if dtype is not None:
            host = host.astype(np.dtype(dtype), copy=False)
        return self.xp.asarray(host)

    def to_numpy(self, array) -> np.ndarray:
        """Bring an engine array back to the host as a NumPy array."""
        return np.asarray(array)

    def to_float(self, scalar) -> float:
        """A 0-d engine array (or Python number) as a Python float; on a GPU this copies
        it to the host, waiting for the device."""
        return float(scalar)

    def synchronize(self) -> None:
        """Wait for queued work to finish (no-op on synchronous engines)."""

    def describe(self) -> dict:
        return {"name": self.name, "is_gpu": self.is_gpu, "fused_kernels": self.fused_kernels}

    # ---------------------------------------------------------- compiled training
    #: What runs a window product here when the engine has one implementation of it.
    window_implementation_name = "reference"

    def window_implementations(self, filters, channels, kernel, stride, padding,
                               dtype="float32") -> dict[str, str]:
        """Which implementation runs each of a convolution's products for this geometry
        (``handprop doctor`` and the run header print it)."""
        return dict.fromkeys(WINDOW_PRODUCTS, self.window_implementation_name)

    def compiled_epoch_unavailable(self) -> str:
        """Why this engine runs no compiled epoch ("" when it can run one). The reference
        runs none."""
        return f"the {self.name} engine runs the layer-by-layer path only"

    def compiled_epoch(self, plan):
        """A runner for whole chunks of an epoch's training steps of ``plan`` (an
        ``engines.plan.EpochPlan``, lowered by ``train/compile.py``), as ``(runner, "")``,
        or ``(None, reason)``; the trainer then runs layer by layer."""
        return None, self.compiled_epoch_unavailable()

    def threads_for(self, model):
        """A context in which ``model`` trains or predicts with this engine's threads set up
        for it (the trainer and the evaluation enter it). The reference needs nothing."""
        return contextlib.nullcontext()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # ------------------------------------------------------------- activations
    def activation(self, z, kind: str, alpha: float = 0.01):
        """Apply an activation element-wise (stable for any finite input)."""
        xp = self.xp
        activation_code(kind)
        if kind == "identity":
            return z
        if kind == "sigmoid":
            # exp of a non-positive number never overflows.
            e = xp.exp(-xp.abs(z))
            return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        if kind == "tanh":
            return xp.tanh(z)
        if kind == "relu":
            return xp.where(z > 0, z, xp.zeros_like(z))
        if kind == "leaky_relu":
            return xp.where(z > 0, z, z * alpha)
        return LECUN_A * xp.tanh(LECUN_S * z)

    def bias_act(self, z, b, kind: str, alpha: float = 0.01):
        """``activation(z + b)``; ``z`` is (batch, units), ``b`` is (units,)."""
        self.check_bias_shapes(z, b)
        return self.activation(z + b, kind, alpha)

    def act_backward(self, grad, out, kind: str, alpha: float = 0.01):
        """``grad * f'(z)``, with ``f'`` written in terms of ``out = f(z)``."""
        xp = self.xp
        activation_code(kind)
        if kind == "identity":
            return grad
        if kind == "sigmoid":
            return grad * out * (1.0 - out)
        if kind == "tanh":
            return grad * (1.0 - out * out)
        if kind == "relu":
            return xp.where(out > 0, grad, xp.zeros_like(grad))
        if kind == "leaky_relu":
            return xp.where(out > 0, grad, grad * alpha)
        t = out / LECUN_A
        return grad * (LECUN_A * LECUN_S) * (1.0 - t * t)

    def matmul(self, a, b, out=None):
        """``a @ b`` for 2-D ``a`` (m, k) and ``b`` (k, n); written into ``out`` (m, n) when
        given (cast to its dtype) and returned."""
        product = a @ b
        if out is None or tuple(out.shape) != tuple(product.shape):
            return product
        out[...] = product
        return out

    def bias_grad(self, grad):
        """Column sums of ``grad``: the bias gradient of a dense layer."""
        return self.xp.sum(grad, axis=0)

    def act_backward_bias_grad(self, grad, out, kind: str, alpha: float = 0.01):
        """``(dz, db)``: ``dz = act_backward(grad, out)`` and ``db = bias_grad(dz)``, which an
        engine may compute in one pass."""
        dz = self.act_backward(grad, out, kind, alpha)
        return dz, self.bias_grad(dz)

    def sum_squares(self, w) -> float:
        """``sum(w**2)`` as a Python float (for the L2 penalty)."""
        return self.to_float(self.xp.sum(w * w))

    # ------------------------------------------------------ batch normalization
    def batch_norm_forward(self, x, gamma, beta, eps: float):
        """Normalize each column of ``x`` over the batch (rows).

        Returns ``(out, x_hat, inv_std, mean, var)``: ``out = gamma * x_hat + beta``,
        ``x_hat = (x - mean) * inv_std``, ``inv_std = 1 / sqrt(var + eps)``, with the
        batch mean and biased variance of each column.
        """
        xp = self.xp
        n = x.shape[0]
        # Column sums in float64: a float32 mean of large values that nearly
        # cancel would otherwise lose digits the normalization then magnifies.
        mean = xp.astype(xp.sum(x, axis=0, dtype=xp.float64) / n, x.dtype)
        centred = x - mean
        var = xp.astype(xp.sum(centred * centred, axis=0, dtype=xp.float64) / n, x.dtype)
        inv_std = 1.0 / xp.sqrt(var + eps)
        x_hat = centred * inv_std
        return gamma * x_hat + beta, x_hat, inv_std, mean, var

    def batch_norm_backward(self, grad, x_hat, inv_std, gamma):
        """``(dx, dgamma, dbeta)`` of ``batch_norm_forward`` for ``grad = dL/dout``:
        ``dx = gamma * inv_std / n * (n * grad - dbeta - x_hat * dgamma)``."""
        xp = self.xp
        n = grad.shape[0]
        dbeta = xp.astype(xp.sum(grad, axis=0, dtype=xp.float64), grad.dtype)
        dgamma = xp.astype(xp.sum(grad * x_hat, axis=0, dtype=xp.float64), grad.dtype)
        dx = (gamma * inv_std / n) * (n * grad - dbeta - x_hat * dgamma)
        return dx, dgamma, dbeta

    # ------------------------------------------------------------------ losses
    def log_softmax(self, logits):
        xp = self.xp
        shifted = logits - xp.max(logits, axis=1, keepdims=True)
        return shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))

    def one_hot(self, labels, classes: int, dtype):
        xp = self.xp
        return xp.astype(labels[:, None] == xp.arange(classes)[None, :], dtype)

    def softmax_xent(self, logits, labels):
        """Batch-mean softmax cross-entropy and its gradient w.r.t. the logits.

        Returns ``(loss, grad)`` where ``loss`` is a scalar (see the module
        notes; read it with ``to_float``) and
        ``grad = (softmax(logits) - onehot(labels)) / batch``.
        """
        xp = self.xp
        n, k = logits.shape
        logp = self.log_softmax(logits)
        onehot = self.one_hot(labels, k, logits.dtype)
        loss = -xp.sum(logp * onehot) / n
        grad = (xp.exp(logp) - onehot) / n
        return self.to_float(loss), grad

    # -------------------------------------------------------------- optimizers
    def sgd_update(self, param, grad, lr: float, weight_decay: float = 0.0) -> None:
        """``param -= lr * (grad + weight_decay * param)``, in place."""
        if weight_decay:
            grad = grad + weight_decay * param
        param -= lr * grad

    def momentum_update(
        self,
        param,
        grad,
        velocity,
        lr: float,
        momentum: float,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        """Classic or Nesterov momentum, in place (``torch.optim.SGD`` form).

        ``v = momentum * v + g``; classic steps by ``v``, Nesterov by
        ``g + momentum * v``.
        """
        if weight_decay:
            grad = grad + weight_decay * param
        velocity *= momentum
        velocity += grad
        if nesterov:
            param -= lr * (grad + momentum * velocity)
        else:
            param -= lr * velocity

    def adam_update(
        self,
        param,
        grad,
        m,
        v,
        lr: float,
        beta1: float,
        beta2: float,
        eps: float,
        step: int,
        weight_decay: float = 0.0,
    ) -> None:
        """Adam with bias correction, in place; ``step`` counts from 1."""
        if step < 1:
            raise ConfigError(f"adam_update needs step >= 1, got {step}")
        xp = self.xp
        if weight_decay:
            grad = grad + weight_decay * param
        m *= beta1
        m += (1.0 - beta1) * grad
        v *= beta2
        v += (1.0 - beta2) * (grad * grad)
        bc1 = 1.0 - beta1**step
        bc2 = 1.0 - beta2**step
        step_size = lr / bc1
        param -= step_size * (m / (xp.sqrt(v) / math.sqrt(bc2) + eps))

    # ------------------------------------------------------------------ checks
    @staticmethod
    def check_bias_shapes(z, b) -> None:
        if len(z.shape) != 2 or len(b.shape) != 1 or z.shape[1] != b.shape[0]:
            raise ShapeError(
                f"bias add needs z of shape (batch, units) and b of shape (units,); "
                f"got z {tuple(z.shape)} and b {tuple(b.shape)}"
            )
