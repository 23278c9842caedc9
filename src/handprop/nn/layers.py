"""Layers with hand-written forward and backward passes.

Every layer keeps what its backward pass needs, exposes
``forward(x, training) -> out`` and ``backward(grad_out) -> grad_in``, and
fills ``grads`` beside ``params`` (same keys). The engine does the array work;
a layer never asks which engine that is.
"""

from __future__ import annotations

import numpy as np

from ..engines.base import ACTIVATIONS, Engine, activation_code
from ..errors import ConfigError, ShapeError
from .init import init_weights, resolve_init


def as_shape(shape) -> tuple[int, ...]:
    """A per-sample shape as a tuple of ints; a bare width ``n`` is ``(n,)``."""
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    return tuple(int(d) for d in shape)


def shape_text(shape) -> str:
    """``784`` for a flat shape, ``16x28x28`` for an image."""
    return "x".join(str(d) for d in shape)


class InputShapeError(ShapeError):
    """A layer's ``build`` refusing the ``shape`` of its input samples; ``needs`` says why.

    ``needs`` is ``"images"`` (C, H, W), ``"flat"`` (features,), ``"features"`` (either of
    them) or ``"window"``: the layer's ``window`` (h, w) is larger than its input, ``padded``
    (h, w) after padding or None without padding. Callers such as the ``--arch`` check word
    their own message from these; ``str()`` is the layer's own.
    """

    def __init__(self, message: str, needs: str, shape, window=None, padded=None):
        super().__init__(message)
        self.needs, self.shape = needs, tuple(shape)
        self.window, self.padded = window, padded


def activation_tokens(activation: str) -> list[str]:
    """The arch token of an activation fused into a layer: none for ``identity``."""
    return [] if activation == "identity" else [activation]


class Layer:
    """Base class: no parameters, shape-preserving.

    ``build`` gets the shape of one input sample, ``(features,)`` or
    ``(channels, height, width)``, and returns the shape of one output sample.
    ``weight_keys`` names the parameters that are weights (not biases or
    scales): the L2 term and the gradient-norm probe cover exactly those.
    """

    weight_keys: tuple[str, ...] = ()
    #: Works on images (convolution, pooling): an engine may then share its kernels' work
    #: between threads of its own (``Sequential.has_image_layers``).
    image_layer = False

    def window_geometry(self):
        """``(filters, channels, kernel, stride, padding)`` of a built convolution, which an
        engine chooses its window products' implementations by; None for other layers."""
        return None

    def fuses_first_backward(self) -> bool:
        """Whether, as a first layer, its backward pass is one fused primitive."""
        return False

    #: Its own shift makes a bias in the layer before it redundant (BatchNorm).
    absorbs_bias = False

    def __init__(self):
        self.params: dict = {}
        self.grads: dict = {}
        # State that is saved with the weights but not trained (BatchNorm's running statistics).
        self.buffers: dict = {}
        self.engine: Engine | None = None
        self.input_shape: tuple[int, ...] | None = None
        self.output_shape: tuple[int, ...] | None = None

    @property
    def input_dim(self) -> int | None:
        """Values per input sample (the width, for flat inputs)."""
        return None if self.input_shape is None else int(np.prod(self.input_shape))

    @property
    def output_dim(self) -> int | None:
        """Values per output sample (the width, for flat outputs)."""
        return None if self.output_shape is None else int(np.prod(self.output_shape))

    def build(self, input_shape, engine: Engine, dtype, rng: np.random.Generator) -> tuple:
        """Create parameters for input samples of ``input_shape``; return the output shape."""
        self.engine = engine
        self.input_shape = self.output_shape = as_shape(input_shape)
        return self.output_shape

    def flat_width(self, input_shape) -> int:
        """The width of flat input samples, or a ``ShapeError`` for images."""
        shape = as_shape(input_shape)
        if len(shape) != 1:
            raise InputShapeError(f"{self.describe()} needs flat inputs (features,) but gets "
                                  f"samples of shape {shape}; put Flatten() before it",
                                  "flat", shape)
        return shape[0]

    def forward(self, x, training: bool = False):
        raise NotImplementedError

    def backward(self, grad_out, need_input_grad: bool = True):
        raise NotImplementedError

    def config(self) -> dict:
        """Everything needed to rebuild this layer (JSON-serializable)."""
        raise NotImplementedError

    def rng_state(self) -> dict | None:
        """The state of this layer's random generator (for checkpoints), None if it has none."""
        return None

    def set_rng_state(self, state: dict) -> None:
        """Restore what ``rng_state`` returned."""

    def arch_tokens(self) -> list[str]:
        """This layer as ``--arch`` tokens (``handprop.nn.arch``), or a ``ConfigError`` when
        the grammar cannot write it."""
        raise ConfigError(f"{self.describe()} has no arch token")

    def describe(self) -> str:
        return type(self).__name__


class Dense(Layer):
    """``out = activation(x @ W + b)``, the bias add fused with the activation.

    ``units``: output width. ``activation``: one of ``ACTIVATIONS``.
    ``init``: a name from ``handprop.nn.init.INITIALIZERS`` or ``auto``
    (He for ReLU-like, LeCun for lecun_tanh, Xavier otherwise).
    ``bias_init``: the constant every bias starts at. ``use_bias=False`` drops
    the bias, for a layer followed by BatchNorm (whose shift makes it redundant).
    """

    weight_keys = ("W",)

    def __init__(self, units: int, activation: str = "identity", init: str = "auto",
                 bias_init: float = 0.0, alpha: float = 0.01, use_bias: bool = True):
        super().__init__()
        if not isinstance(units, (int, np.integer)) or units < 1:
            raise ConfigError(f"Dense needs a positive whole number of units, got {units!r}")
        activation_code(activation)
        if not 0.0 <= alpha < 1.0:
            raise ConfigError(f"leaky_relu alpha must be in [0, 1), got {alpha}")
        self.units = int(units)
        self.activation = activation
        self.init = resolve_init(init, activation)
        self.bias_init = float(bias_init)
        self.alpha = float(alpha)
        self.use_bias = bool(use_bias)

    def build(self, input_shape, engine, dtype, rng):
        input_dim = self.flat_width(input_shape)
        self.engine, self.input_shape, self.output_shape = engine, (input_dim,), (self.units,)
        weights = init_weights(self.init, input_dim, self.units, rng)
        self.params = {"W": engine.asarray(weights, dtype)}
        if self.use_bias:
            self.params["b"] = engine.asarray(np.full(self.units, self.bias_init), dtype)
        self.grads = {}
        return self.output_shape

    def forward(self, x, training=False):
        W = self.params["W"]
        if self.use_bias:
            out = self.engine.bias_act(x @ W, self.params["b"], self.activation, self.alpha)
        else:
            out = self.engine.activation(x @ W, self.activation, self.alpha)
        if training:
            self.x, self.out = x, out
        return out

    def backward(self, grad_out, need_input_grad=True):
        dz = self.engine.act_backward(grad_out, self.out, self.activation, self.alpha)
        # Into the gradient's own buffer (a view of the model's flat gradients).
        self.grads["W"] = self.engine.matmul(self.x.T, dz, out=self.grads.get("W"))
        if self.use_bias:
            self.grads["b"] = self.engine.bias_grad(dz)
        return dz @ self.params["W"].T if need_input_grad else None

    def config(self):
        return {"type": "Dense", "units": self.units, "activation": self.activation,
                "init": self.init, "bias_init": self.bias_init, "alpha": self.alpha,
                "use_bias": self.use_bias}

    def arch_tokens(self):
        return [f"dense:{self.units}", *activation_tokens(self.activation)]

    def describe(self):
        return f"Dense({self.units}, {self.activation}{'' if self.use_bias else ', no bias'})"


class Activation(Layer):
    """An activation on its own: ``out = f(x)``; backward uses the saved output."""

    def __init__(self, kind: str, alpha: float = 0.01):
        super().__init__()
        activation_code(kind)
        self.kind = kind
        self.alpha = float(alpha)

    def forward(self, x, training=False):
        out = self.engine.activation(x, self.kind, self.alpha)
        if training:
            self.out = out
        return out

    def backward(self, grad_out, need_input_grad=True):
        return self.engine.act_backward(grad_out, self.out, self.kind, self.alpha)

    def config(self):
        return {"type": "Activation", "kind": self.kind, "alpha": self.alpha}

    def arch_tokens(self):
        return [self.kind]

    def describe(self):
        return f"Activation({self.kind})"


class Dropout(Layer):
    """Inverted dropout: in training, each input is zeroed with probability ``rate`` and the
    rest are scaled by ``1 / (1 - rate)``, so at test time the layer passes inputs through.

    Masks are drawn on the host from the layer's own generator, spawned from
    the model's seed without drawing from it (initial weights do not depend on
    dropout), then moved to the engine, so every engine sees the same masks.
    """

    def __init__(self, rate: float = 0.5):
        super().__init__()
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise ConfigError(f"dropout rate must be in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self.rng: np.random.Generator | None = None
        self.mask = None

    def build(self, input_shape, engine, dtype, rng):
        self.rng, self.dtype = rng.spawn(1)[0], dtype
        return super().build(input_shape, engine, dtype, rng)

    def forward(self, x, training=False):
        if not training or self.rate == 0.0:
            self.mask = None
            return x
        keep = self.rng.random(tuple(x.shape)) >= self.rate
        self.mask = self.engine.asarray(keep / (1.0 - self.rate), self.dtype)
        return x * self.mask

    def backward(self, grad_out, need_input_grad=True):
        return grad_out if self.mask is None else grad_out * self.mask

    def rng_state(self):
        return None if self.rng is None else self.rng.bit_generator.state

    def set_rng_state(self, state):
        self.rng.bit_generator.state = state

    def config(self):
        return {"type": "Dropout", "rate": self.rate}

    def arch_tokens(self):
        return [f"dropout:{self.rate:g}"]

    def describe(self):
        return f"Dropout({self.rate:g})"


class BatchNorm(Layer):
    """Batch normalization (Ioffe and Szegedy, 2015) of each feature over the batch:
    ``y = gamma * x_hat + beta`` with ``x_hat = (x - mean) / sqrt(var + eps)``.

    Training uses the batch's mean and (biased) variance and moves the running
    averages toward them by ``1 - momentum``; evaluation uses the running
    averages, which are saved with the weights. The engine's
    ``batch_norm_forward``/``batch_norm_backward`` do the array work; backward is
    ``dx = gamma * inv_std / n * (n * dy - sum(dy) - x_hat * sum(dy * x_hat))``.
    After a convolution (inputs (N, C, H, W)) each channel is one feature, its
    statistics taken over the batch and every position (as ``BatchNorm2d``):
    the same primitives run on the (N*H*W, C) view.
    """

    absorbs_bias = True

    def __init__(self, momentum: float = 0.9, eps: float = 1e-5):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"BatchNorm momentum must be in [0, 1), got {momentum!r}")
        if not eps > 0:
            raise ConfigError(f"BatchNorm eps must be > 0, got {eps!r}")
        self.momentum, self.eps = float(momentum), float(eps)

    def build(self, input_shape, engine, dtype, rng):
        shape = as_shape(input_shape)
        if len(shape) not in (1, 3):
            raise InputShapeError(f"BatchNorm normalizes features (features,) or image channels "
                                  f"(channels, height, width); got samples of shape {shape}",
                                  "features", shape)
        features = shape[0]
        self.params = {"gamma": engine.asarray(np.ones(features), dtype),
                       "beta": engine.asarray(np.zeros(features), dtype)}
        self.buffers = {"running_mean": engine.asarray(np.zeros(features), dtype),
                        "running_var": engine.asarray(np.ones(features), dtype)}
        self.grads = {}
        return super().build(shape, engine, dtype, rng)

    def forward(self, x, training=False):
        gamma, beta, m = self.params["gamma"], self.params["beta"], self.momentum
        rows = _rows(self.engine.xp, x)
        if not training:
            inv_std = 1.0 / self.engine.xp.sqrt(self.buffers["running_var"] + self.eps)
            out = gamma * ((rows - self.buffers["running_mean"]) * inv_std) + beta
            return _unrows(self.engine.xp, out, x.shape)
        out, self.x_hat, self.inv_std, mean, var = self.engine.batch_norm_forward(
            rows, gamma, beta, self.eps)
        n = rows.shape[0]
        # The running variance is the unbiased estimate, as in PyTorch.
        unbiased = var * (n / (n - 1)) if n > 1 else var
        self.buffers["running_mean"] = m * self.buffers["running_mean"] + (1 - m) * mean
        self.buffers["running_var"] = m * self.buffers["running_var"] + (1 - m) * unbiased
        return _unrows(self.engine.xp, out, x.shape)

    def backward(self, grad_out, need_input_grad=True):
        xp = self.engine.xp
        dx, self.grads["gamma"], self.grads["beta"] = self.engine.batch_norm_backward(
            _rows(xp, grad_out), self.x_hat, self.inv_std, self.params["gamma"])
        return _unrows(xp, dx, grad_out.shape) if need_input_grad else None

    def config(self):
        return {"type": "BatchNorm", "momentum": self.momentum, "eps": self.eps}

    def arch_tokens(self):
        if (self.momentum, self.eps) != (0.9, 1e-5):
            raise ConfigError("the arch grammar writes BatchNorm with its default momentum "
                              "0.9 and eps 1e-5 only")
        return ["batchnorm"]

    def describe(self):
        return "BatchNorm"


def _rows(xp, x):
    """(N, F) as it is; images (N, C, H, W) as (N*H*W, C), one row per pixel."""
    if len(x.shape) == 2:
        return x
    return xp.reshape(xp.permute_dims(x, (0, 2, 3, 1)), (-1, x.shape[1]))


def _unrows(xp, rows, shape):
    """The inverse of ``_rows`` for inputs of ``shape``."""
    if len(shape) == 2:
        return rows
    n, c, h, w = shape
    return xp.permute_dims(xp.reshape(rows, (n, h, w, c)), (0, 3, 1, 2))


def Sigmoid():
    return Activation("sigmoid")


def Tanh():
    return Activation("tanh")


def ReLU():
    return Activation("relu")


def LeakyReLU(alpha: float = 0.01):
    return Activation("leaky_relu", alpha)


def LecunTanh():
    """1.7159 * tanh(2x/3), LeCun's "improved sigmoid"."""
    return Activation("lecun_tanh")


def Identity():
    return Activation("identity")


__all__ = ["ACTIVATIONS", "Activation", "BatchNorm", "Dense", "Dropout", "Identity",
           "InputShapeError", "Layer", "LeakyReLU", "LecunTanh", "ReLU", "Sigmoid", "Tanh",
           "activation_tokens"]
