"""Optimizers: each update is one fused, in-place engine primitive.

For a model whose parameters are views of one flat buffer (every built
``Sequential``), the state is flat too (``flat_state``, one buffer per slot,
with ``state[name][slot]`` its views) and a step is a single primitive call
over the whole buffer; otherwise one call per parameter.

``weight_decay`` is coupled (``grad + weight_decay * param``), as in
``torch.optim``. The learning rate comes from a schedule evaluated at the
update counter ``t`` (0 for the first update).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import CheckpointError, ConfigError
from .schedules import Constant, schedule_config, schedule_from_config


def _check_fraction(name, value, upper_inclusive=False):
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = is_number and math.isfinite(value) and (
        0.0 <= value <= 1.0 if upper_inclusive else 0.0 <= value < 1.0)
    if not ok:
        raise ConfigError(f"{name} must be in [0, 1{']' if upper_inclusive else ')'}, got {value!r}")
    return float(value)


class Optimizer:
    name = "optimizer"
    state_keys: tuple[str, ...] = ()

    def __init__(self, lr=0.01, weight_decay: float = 0.0):
        self.schedule = lr if callable(lr) else Constant(lr)
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ConfigError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.weight_decay = float(weight_decay)
        self.t = 0  # updates done so far
        self.state: dict[str, dict] = {}
        self.flat_state: dict | None = None  # slot -> flat buffer, once bound to a model
        self._bound_to = None  # the flat_params buffer flat_state is laid out for

    @property
    def lr(self) -> float:
        """The learning rate the next update will use."""
        return self.schedule(self.t)

    def step(self, model) -> None:
        lr = self.schedule(self.t)
        engine = model.engine
        flat = self.bind(model)
        if flat is not None:
            model.gather_grads()
            self.update(engine, model.flat_params, model.flat_grads, flat, lr)
        else:
            for name, layer, key in model.named_parameters():
                param, grad = layer.params[key], layer.grads[key]
                if name not in self.state:
                    self.state[name] = {k: engine.xp.zeros_like(param) for k in self.state_keys}
                self.update(engine, param, grad, self.state[name], lr)
        self.t += 1

    def bind(self, model) -> dict | None:
        """Lay the state out flat, like ``model.flat_params``, keeping any values it already
        has (from a checkpoint); return ``flat_state``, or None for a model without flat
        buffers."""
        flat_params = getattr(model, "flat_params", None)
        if flat_params is None:
            return None
        if self._bound_to is flat_params:
            return self.flat_state
        xp = model.engine.xp
        flat = {k: xp.zeros_like(flat_params) for k in self.state_keys}
        state = {}
        for name, offset, shape in model.param_layout:
            size = int(np.prod(shape))
            state[name] = {}
            for k in self.state_keys:
                view = xp.reshape(flat[k][offset:offset + size], shape)
                old = self.state.get(name, {}).get(k)
                if old is not None:
                    view[...] = old
                state[name][k] = view
        self.flat_state, self.state, self._bound_to = flat, state, flat_params
        return flat

    def update(self, engine, param, grad, state, lr) -> None:
        raise NotImplementedError

    def hyperparameters(self) -> dict:
        return {"weight_decay": self.weight_decay}

    def config(self) -> dict:
        return {"name": self.name, "schedule": schedule_config(self.schedule), **self.hyperparameters()}

    # ------------------------------------------------------ checkpoint support
    def state_arrays(self, engine) -> dict[str, np.ndarray]:
        return {f"{name}.{k}": engine.to_numpy(v)
                for name, slots in self.state.items() for k, v in slots.items()}

    def load_state_arrays(self, engine, arrays: dict[str, np.ndarray], t: int, dtype) -> None:
        """Restore ``state_arrays``; values are copied into the flat state if it is bound
        (so a compiled training path sees them), else kept until ``bind``."""
        loaded = {}
        for full, value in arrays.items():
            name, _, k = full.rpartition(".")
            if k not in self.state_keys:
                raise CheckpointError(f"optimizer state {full!r} does not belong to {self.name}")
            loaded.setdefault(name, {})[k] = engine.asarray(value, dtype)
        self.t = int(t)
        if self._bound_to is not None and all(
                tuple(self.state.get(name, {}).get(k, np.empty(0)).shape) == tuple(v.shape)
                for name, slots in loaded.items() for k, v in slots.items()):
            for slots in self.state.values():
                for view in slots.values():
                    view[...] = 0
            for name, slots in loaded.items():
                for k, value in slots.items():
                    self.state[name][k][...] = value
        else:
            self.state, self.flat_state, self._bound_to = loaded, None, None


class SGD(Optimizer):
    name = "sgd"

    def update(self, engine, param, grad, state, lr):
        engine.sgd_update(param, grad, lr, self.weight_decay)


class Momentum(Optimizer):
    """Heavy-ball momentum: ``v = mu v + g; p -= lr v``."""

    name = "momentum"
    state_keys = ("velocity",)
    nesterov = False

    def __init__(self, lr=0.01, momentum: float = 0.9, weight_decay: float = 0.0):
        super().__init__(lr, weight_decay)
        self.momentum = _check_fraction("momentum", momentum)

    def update(self, engine, param, grad, state, lr):
        engine.momentum_update(param, grad, state["velocity"], lr, self.momentum,
                               self.weight_decay, self.nesterov)

    def hyperparameters(self):
        return {"momentum": self.momentum, **super().hyperparameters()}


class Nesterov(Momentum):
    """Nesterov momentum: steps by ``g + mu v`` (the torch.optim.SGD form)."""

    name = "nesterov"
    nesterov = True


class Adam(Optimizer):
    name = "adam"
    state_keys = ("m", "v")

    def __init__(self, lr=0.001, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(lr, weight_decay)
        self.beta1 = _check_fraction("beta1", beta1)
        self.beta2 = _check_fraction("beta2", beta2)
        if not (math.isfinite(eps) and eps > 0):
            raise ConfigError(f"eps must be > 0, got {eps!r}")
        self.eps = float(eps)

    def update(self, engine, param, grad, state, lr):
        engine.adam_update(param, grad, state["m"], state["v"], lr, self.beta1, self.beta2,
                           self.eps, self.t + 1, self.weight_decay)

    def hyperparameters(self):
        return {"beta1": self.beta1, "beta2": self.beta2, "eps": self.eps, **super().hyperparameters()}


OPTIMIZERS = {cls.name: cls for cls in (SGD, Momentum, Nesterov, Adam)}


def make_optimizer(name: str, lr=0.01, **options) -> Optimizer:
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    try:
        return OPTIMIZERS[name](lr=lr, **options)
    except TypeError as exc:
        raise ConfigError(f"bad options for optimizer {name!r}: {exc}") from None


def optimizer_from_config(config: dict) -> Optimizer:
    config = dict(config)
    name = config.pop("name")
    schedule = schedule_from_config(config.pop("schedule"))
    return make_optimizer(name, lr=schedule, **config)
