"""Layers with hand-written forward and backward passes.

Every layer keeps what its backward pass needs, exposes
``forward(x, training) -> out`` and ``backward(grad_out) -> grad_in``, and
fills ``grads`` beside ``params`` (same keys). The engine does the array work;
a layer never asks which engine that is.
"""

from __future__ import annotations

import numpy as np

from ..engines.base import ACTIVATIONS, Engine, activation_code
from ..errors import ConfigError
from .init import init_weights, resolve_init


class Layer:
    """Base class: no parameters, shape-preserving."""

    def __init__(self):
        self.params: dict = {}
        self.grads: dict = {}
        # State that is saved with the weights but not trained (BatchNorm's running statistics).
        self.buffers: dict = {}
        self.engine: Engine | None = None
        self.input_dim: int | None = None
        self.output_dim: int | None = None

    def build(self, input_dim: int, engine: Engine, dtype, rng: np.random.Generator) -> int:
        """Create parameters for inputs of width ``input_dim``; return the output width."""
        self.engine = engine
        self.input_dim = self.output_dim = input_dim
        return input_dim

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

    def build(self, input_dim, engine, dtype, rng):
        self.engine, self.input_dim, self.output_dim = engine, input_dim, self.units
        weights = init_weights(self.init, input_dim, self.units, rng)
        self.params = {"W": engine.asarray(weights, dtype)}
        if self.use_bias:
            self.params["b"] = engine.asarray(np.full(self.units, self.bias_init), dtype)
        self.grads = {}
        return self.units

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

    def build(self, input_dim, engine, dtype, rng):
        self.rng, self.dtype = rng.spawn(1)[0], dtype
        return super().build(input_dim, engine, dtype, rng)

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
    """

    def __init__(self, momentum: float = 0.9, eps: float = 1e-5):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"BatchNorm momentum must be in [0, 1), got {momentum!r}")
        if not eps > 0:
            raise ConfigError(f"BatchNorm eps must be > 0, got {eps!r}")
        self.momentum, self.eps = float(momentum), float(eps)

    def build(self, input_dim, engine, dtype, rng):
        self.params = {"gamma": engine.asarray(np.ones(input_dim), dtype),
                       "beta": engine.asarray(np.zeros(input_dim), dtype)}
        self.buffers = {"running_mean": engine.asarray(np.zeros(input_dim), dtype),
                        "running_var": engine.asarray(np.ones(input_dim), dtype)}
        self.grads = {}
        return super().build(input_dim, engine, dtype, rng)

    def forward(self, x, training=False):
        gamma, beta, m = self.params["gamma"], self.params["beta"], self.momentum
        if not training:
            inv_std = 1.0 / self.engine.xp.sqrt(self.buffers["running_var"] + self.eps)
            return gamma * ((x - self.buffers["running_mean"]) * inv_std) + beta
        out, self.x_hat, self.inv_std, mean, var = self.engine.batch_norm_forward(
            x, gamma, beta, self.eps)
        n = x.shape[0]
        # The running variance is the unbiased estimate, as in PyTorch.
        unbiased = var * (n / (n - 1)) if n > 1 else var
        self.buffers["running_mean"] = m * self.buffers["running_mean"] + (1 - m) * mean
        self.buffers["running_var"] = m * self.buffers["running_var"] + (1 - m) * unbiased
        return out

    def backward(self, grad_out, need_input_grad=True):
        dx, self.grads["gamma"], self.grads["beta"] = self.engine.batch_norm_backward(
            grad_out, self.x_hat, self.inv_std, self.params["gamma"])
        return dx if need_input_grad else None

    def config(self):
        return {"type": "BatchNorm", "momentum": self.momentum, "eps": self.eps}

    def describe(self):
        return "BatchNorm"


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


LAYER_TYPES = {"Dense": Dense, "Activation": Activation, "Dropout": Dropout, "BatchNorm": BatchNorm}


def layer_from_config(config: dict) -> Layer:
    config = dict(config)
    kind = config.pop("type", None)
    if kind not in LAYER_TYPES:
        raise ConfigError(f"unknown layer type {kind!r}; known types: {', '.join(LAYER_TYPES)}")
    return LAYER_TYPES[kind](**config)


__all__ = ["ACTIVATIONS", "Activation", "BatchNorm", "Dense", "Dropout", "Identity", "Layer",
           "LeakyReLU", "LecunTanh", "ReLU", "Sigmoid", "Tanh", "layer_from_config"]
