"""What a compiled training epoch is asked to run: plain numbers, arrays and callables.

``train/compile.py`` lowers a model, loss and optimizer to an ``EpochPlan`` (or says why it
cannot); an engine that compiles epochs turns the plan into a runner
(``Engine.compiled_epoch``). No layer, loss or optimizer class crosses this line, so the
engines know nothing of the floors above them.

Parameters and gradients are the model's flat buffers and the optimizer state the
optimizer's, so checkpoints, evaluation and early stopping read exactly what a compiled
epoch updates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

#: The losses and optimizers a plan may name.
LOSSES = ("softmax_cross_entropy", "mean_squared_error", "binary_cross_entropy")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")


@dataclass(frozen=True)
class DenseStep:
    """One dense layer: ``f(x @ W + b)``, then dropout. ``weight_at``/``bias_at`` are offsets
    into the flat buffers (``bias_at`` None: no bias); ``draw_uniforms(out=array)`` fills an
    array with the dropout layer's uniforms from its own generator, in the layer path's
    order (None without dropout)."""

    fan_in: int
    units: int
    weight_at: int
    bias_at: int | None
    activation: str
    alpha: float
    dropout: float = 0.0
    draw_uniforms: Callable | None = None


@dataclass(frozen=True)
class EpochPlan:
    """A whole training step, for every mini-batch of an epoch.

    ``state()`` gives the optimizer's flat state buffers by name (bound to the parameters);
    ``step_hyperparameters(count)`` the next ``count`` steps' learning rates from the
    schedule (for Adam ``lr / (1 - beta1**t)``) with Adam's ``sqrt(1 - beta2**t)``, as a
    (count, 2) float64 array; ``advance(steps)`` moves the optimizer's step counter on."""

    dtype: np.dtype
    input_dim: int
    batch_size: int
    layers: tuple[DenseStep, ...]
    loss: str
    threshold: float
    optimizer: str
    hyper: dict
    l2: float
    params: np.ndarray
    grads: np.ndarray
    state: Callable[[], dict]
    step_hyperparameters: Callable[[int], np.ndarray]
    advance: Callable[[int], None]
