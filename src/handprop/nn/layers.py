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

    def describe(self) -> str:
        return type(self).__name__


class Dense(Layer):
    """``out = activation(x @ W + b)``, the bias add fused with the activation.

    ``units``: output width. ``activation``: one of ``ACTIVATIONS``.
    ``init``: a name from ``handprop.nn.init.INITIALIZERS`` or ``auto``
    (He for ReLU-like, LeCun for lecun_tanh, Xavier otherwise).
    ``bias_init``: the constant every bias starts at.
    """

    def __init__(self, units: int, activation: str = "identity", init: str = "auto",
                 bias_init: float = 0.0, alpha: float = 0.01):
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

    def build(self, input_dim, engine, dtype, rng):
        self.engine, self.input_dim, self.output_dim = engine, input_dim, self.units
        weights = init_weights(self.init, input_dim, self.units, rng)
        self.params = {
            "W": engine.asarray(weights, dtype),
            "b": engine.asarray(np.full(self.units, self.bias_init), dtype),
        }
        self.grads = {}
        return self.units

    def forward(self, x, training=False):
        W, b = self.params["W"], self.params["b"]
        out = self.engine.bias_act(x @ W, b, self.activation, self.alpha)
        if training:
            self.x, self.out = x, out
        return out

    def backward(self, grad_out, need_input_grad=True):
        dz = self.engine.act_backward(grad_out, self.out, self.activation, self.alpha)
        self.grads["W"] = self.x.T @ dz
        self.grads["b"] = self.engine.bias_grad(dz)
        return dz @ self.params["W"].T if need_input_grad else None

    def config(self):
        return {"type": "Dense", "units": self.units, "activation": self.activation,
                "init": self.init, "bias_init": self.bias_init, "alpha": self.alpha}

    def describe(self):
        return f"Dense({self.units}, {self.activation})"


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


LAYER_TYPES = {"Dense": Dense, "Activation": Activation}


def layer_from_config(config: dict) -> Layer:
    config = dict(config)
    kind = config.pop("type", None)
    if kind not in LAYER_TYPES:
        raise ConfigError(f"unknown layer type {kind!r}; known types: {', '.join(LAYER_TYPES)}")
    return LAYER_TYPES[kind](**config)


__all__ = ["ACTIVATIONS", "Activation", "Dense", "Identity", "Layer", "LeakyReLU",
           "LecunTanh", "ReLU", "Sigmoid", "Tanh", "layer_from_config"]
