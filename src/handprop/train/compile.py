"""Lowering a model, loss and optimizer to an ``EpochPlan``, and asking the engine for a
compiled epoch of it.

``compiled_epoch(engine, model, loss, optimizer, l2, batch_size)`` is the trainer's one
question: a runner, or ``None`` and the reason it runs layer by layer. This module knows the
layer, loss and optimizer classes; the engine gets only the plan (``engines/plan.py``).

Known: ``Sequential`` stacks of ``Dense`` layers (any activation, with or without a bias),
each optionally followed by an ``Activation`` (after an identity Dense) and a ``Dropout``;
the three losses; SGD, momentum, Nesterov and Adam with any schedule and weight decay; L2;
float32 and float64.
"""

from __future__ import annotations

import math

import numpy as np

from ..engines.plan import DenseStep, EpochPlan
from ..nn.layers import Activation, BatchNorm, Dense, Dropout
from ..nn.losses import BinaryCrossEntropy, MeanSquaredError, SoftmaxCrossEntropy
from ..optim.optimizers import SGD, Adam, Momentum, Nesterov

LOSS_NAMES = {SoftmaxCrossEntropy: "softmax_cross_entropy", MeanSquaredError: "mean_squared_error",
              BinaryCrossEntropy: "binary_cross_entropy"}
OPTIMIZER_NAMES = {SGD: "sgd", Momentum: "momentum", Nesterov: "nesterov", Adam: "adam"}


def compiled_epoch(engine, model, loss, optimizer, l2: float, batch_size: int):
    """``(runner, "")`` for a compiled epoch of this configuration on ``engine``, or
    ``(None, reason)``; never raises for a configuration it does not know."""
    reason = engine.compiled_epoch_unavailable()
    if reason:
        return None, reason
    plan, reason = lower(model, loss, optimizer, l2, batch_size)
    if plan is None:
        return None, reason
    return engine.compiled_epoch(plan)


def lower(model, loss, optimizer, l2: float, batch_size: int):
    """``(EpochPlan, "")`` or ``(None, reason)``."""
    if getattr(model, "flat_params", None) is None or not hasattr(model, "layers"):
        return None, "the model has no flat parameter buffer (build it first)"
    layers, reason = dense_layers(model)
    if layers is None:
        return None, reason
    if type(loss) not in LOSS_NAMES:
        return None, f"loss {getattr(loss, 'name', type(loss).__name__)!r}: the compiled " \
                     f"path knows {', '.join(c.name for c in LOSS_NAMES)}"
    if type(optimizer) not in OPTIMIZER_NAMES:
        return None, f"optimizer {getattr(optimizer, 'name', type(optimizer).__name__)!r}: " \
                     f"the compiled path knows sgd, momentum, nesterov and adam"
    offsets = {name: offset for name, offset, _ in model.param_layout}
    index = {id(layer): i for i, layer in enumerate(model.layers)}
    steps = tuple(_dense_step(entry, offsets, f"layer{index[id(entry['layer'])]}")
                  for entry in layers)
    hyper = {key: float(getattr(optimizer, key, 0.0))
             for key in ("momentum", "beta1", "beta2", "eps", "weight_decay")}
    return EpochPlan(
        dtype=np.dtype(model.dtype), input_dim=int(model.input_dim), batch_size=int(batch_size),
        layers=steps, loss=LOSS_NAMES[type(loss)],
        threshold=float(loss.single_output_threshold), optimizer=OPTIMIZER_NAMES[type(optimizer)],
        hyper=hyper, l2=float(l2), params=model.flat_params, grads=model.flat_grads,
        state=lambda: optimizer.bind(model),
        step_hyperparameters=lambda count: step_hyperparameters(optimizer, count),
        advance=lambda steps: setattr(optimizer, "t", optimizer.t + steps)), ""


def _dense_step(entry: dict, offsets: dict, name: str) -> DenseStep:
    dense, dropout = entry["layer"], entry["dropout"]
    return DenseStep(fan_in=int(dense.input_dim), units=int(dense.units),
                     weight_at=offsets[f"{name}.W"],
                     bias_at=offsets[f"{name}.b"] if dense.use_bias else None,
                     activation=entry["activation"], alpha=float(entry["alpha"]),
                     dropout=dropout.rate if dropout else 0.0,
                     draw_uniforms=dropout.rng.random if dropout else None)


def dense_layers(model) -> tuple[list[dict] | None, str]:
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


def step_hyperparameters(optimizer, count: int) -> np.ndarray:
    """Per step: the learning rate from the schedule at the optimizer's counter (for Adam:
    ``lr / (1 - beta1**t)``) and Adam's ``sqrt(1 - beta2**t)``, computed as the engines'
    ``adam_update`` computes them."""
    hyper = np.ones((count, 2))
    adam = type(optimizer) is Adam
    for s in range(count):
        t = optimizer.t + s
        lr = float(optimizer.schedule(t))
        if adam:
            step = t + 1
            beta1, beta2 = float(optimizer.beta1), float(optimizer.beta2)
            hyper[s, 0] = lr / (1.0 - beta1**step)
            hyper[s, 1] = math.sqrt(1.0 - beta2**step)
        else:
            hyper[s, 0] = lr
    return hyper
