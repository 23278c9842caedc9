"""Learning-rate schedules: plain functions of the update counter ``t`` (from 0)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import ConfigError


def _positive(name, value):
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Constant:
    lr: float

    def __post_init__(self):
        _positive("learning rate", self.lr)

    def __call__(self, t: int) -> float:
        return self.lr


@dataclass(frozen=True)
class StepDecay:
    """``lr * drop ** (t // every)``."""

    lr: float
    drop: float = 0.5
    every: int = 1000

    def __post_init__(self):
        _positive("learning rate", self.lr)
        if not 0 < self.drop <= 1:
            raise ConfigError(f"step decay drop must be in (0, 1], got {self.drop}")
        if int(self.every) < 1:
            raise ConfigError(f"step decay 'every' must be at least 1 update, got {self.every}")

    def __call__(self, t):
        return self.lr * self.drop ** (t // int(self.every))


@dataclass(frozen=True)
class ExponentialDecay:
    """``lr * rate ** (t / decay_steps)``."""

    lr: float
    rate: float = 0.96
    decay_steps: int = 1000

    def __post_init__(self):
        _positive("learning rate", self.lr)
        if not 0 < self.rate <= 1:
            raise ConfigError(f"exponential decay rate must be in (0, 1], got {self.rate}")
        _positive("decay_steps", self.decay_steps)

    def __call__(self, t):
        return self.lr * self.rate ** (t / self.decay_steps)


@dataclass(frozen=True)
class InverseTimeDecay:
    """``lr / (1 + k * t)``."""

    lr: float
    k: float = 1e-3

    def __post_init__(self):
        _positive("learning rate", self.lr)
        if self.k < 0:
            raise ConfigError(f"inverse-time decay k must be >= 0, got {self.k}")

    def __call__(self, t):
        return self.lr / (1.0 + self.k * t)


@dataclass(frozen=True)
class TriangularCyclic:
    """Smith (2017) triangular cyclical learning rate.

    Rises linearly from ``eta_min`` to ``eta_max`` over ``step_size`` updates and
    falls back over the next ``step_size``; after ``cycles`` full cycles (if
    given) it stays at ``eta_min``.
    """

    eta_min: float
    eta_max: float
    step_size: int = 2000
    cycles: int | None = None

    def __post_init__(self):
        _positive("eta_min", self.eta_min)
        _positive("eta_max", self.eta_max)
        if self.eta_max < self.eta_min:
            raise ConfigError(f"eta_max ({self.eta_max}) must be >= eta_min ({self.eta_min})")
        if int(self.step_size) < 1:
            raise ConfigError(f"cyclic step_size must be at least 1 update, got {self.step_size}")
        if self.cycles is not None and int(self.cycles) < 1:
            raise ConfigError(f"cycles must be at least 1, got {self.cycles}")

    @property
    def lr(self):
        return self.eta_max

    def __call__(self, t):
        step = int(self.step_size)
        if self.cycles is not None and t >= 2 * step * int(self.cycles):
            return self.eta_min
        cycle = math.floor(1 + t / (2 * step))
        x = abs(t / step - 2 * cycle + 1)
        return self.eta_min + (self.eta_max - self.eta_min) * max(0.0, 1.0 - x)


SCHEDULES = {
    "constant": Constant,
    "step": StepDecay,
    "exponential": ExponentialDecay,
    "inverse_time": InverseTimeDecay,
    "cyclic": TriangularCyclic,
}


def make_schedule(name: str, lr: float, **options):
    """Build a schedule by name. For ``cyclic``, ``lr`` is ``eta_max``."""
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")
    _positive("learning rate", lr)
    try:
        if name == "cyclic":
            options.setdefault("eta_min", lr / 10.0)
            return TriangularCyclic(eta_max=lr, **options)
        return SCHEDULES[name](lr=lr, **options)
    except TypeError as exc:
        raise ConfigError(f"bad options for schedule {name!r}: {exc}") from None


def schedule_config(schedule) -> dict:
    name = next(key for key, cls in SCHEDULES.items() if isinstance(schedule, cls))
    return {"name": name, **asdict(schedule)}


def schedule_from_config(config: dict):
    config = dict(config)
    name = config.pop("name")
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule {name!r}")
    return SCHEDULES[name](**config)
