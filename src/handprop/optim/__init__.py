"""Optimizers and learning-rate schedules."""

from .optimizers import OPTIMIZERS, SGD, Adam, Momentum, Nesterov, Optimizer, make_optimizer
from .schedules import (
    SCHEDULES,
    Constant,
    ExponentialDecay,
    InverseTimeDecay,
    StepDecay,
    TriangularCyclic,
    make_schedule,
)

__all__ = ["OPTIMIZERS", "SCHEDULES", "SGD", "Adam", "Constant", "ExponentialDecay",
           "InverseTimeDecay", "Momentum", "Nesterov", "Optimizer", "StepDecay",
           "TriangularCyclic", "make_optimizer", "make_schedule"]
