"""Weight initializers.

Weights have layout ``(fan_in, fan_out)`` so a dense layer computes
``z = x @ W + b``; a convolution passes its own ``size`` and fans
(``channels * kh * kw`` in, ``filters * kh * kw`` out, as PyTorch counts
them). Every initializer draws on the host from a ``numpy.random.Generator``,
so every engine starts from identical weights.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError


def uniform_fan_in(fan_in, fan_out, rng, size=None):
    """U(-1/sqrt(fan_in), +1/sqrt(fan_in)): the classic default."""
    limit = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-limit, limit, size=size or (fan_in, fan_out))


def lecun_normal(fan_in, fan_out, rng, size=None):
    """N(0, 1/fan_in): LeCun's "improved weight init" (pairs with lecun_tanh)."""
    return rng.normal(0.0, 1.0 / math.sqrt(fan_in), size=size or (fan_in, fan_out))


def xavier_uniform(fan_in, fan_out, rng, size=None):
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=size or (fan_in, fan_out))


def xavier_normal(fan_in, fan_out, rng, size=None):
    return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=size or (fan_in, fan_out))


def he_normal(fan_in, fan_out, rng, size=None):
    """N(0, 2/fan_in): keeps ReLU activations' variance stable."""
    return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=size or (fan_in, fan_out))


def he_uniform(fan_in, fan_out, rng, size=None):
    limit = math.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, size=size or (fan_in, fan_out))


INITIALIZERS = {
    "uniform": uniform_fan_in,
    "lecun": lecun_normal,
    "xavier_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
    "he": he_normal,
    "he_uniform": he_uniform,
}

# "auto" picks what suits the activation.
AUTO_INIT = {
    "relu": "he",
    "leaky_relu": "he",
    "lecun_tanh": "lecun",
    "tanh": "xavier_uniform",
    "sigmoid": "xavier_uniform",
    "identity": "xavier_uniform",
}


def resolve_init(name: str, activation: str) -> str:
    if name == "auto":
        return AUTO_INIT.get(activation, "xavier_uniform")
    if name not in INITIALIZERS:
        raise ConfigError(
            f"unknown initializer {name!r}; choose one of: auto, {', '.join(INITIALIZERS)}"
        )
    return name


def init_weights(name: str, fan_in: int, fan_out: int, rng: np.random.Generator,
                 size: tuple | None = None) -> np.ndarray:
    """A float64 host array of shape ``size`` (default (fan_in, fan_out)) drawn by
    initializer ``name``, scaled for ``fan_in`` and ``fan_out``."""
    if name not in INITIALIZERS:
        raise ConfigError(f"unknown initializer {name!r}; choose one of: {', '.join(INITIALIZERS)}")
    return INITIALIZERS[name](fan_in, fan_out, rng, size)
