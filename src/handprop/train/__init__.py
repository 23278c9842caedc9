"""Training: configuration, the trainer loop, runs with their output folder, plots."""

from .config import DEFAULTS, make_config
from .run import run_training
from .trainer import History, Trainer

__all__ = ["DEFAULTS", "History", "Trainer", "make_config", "run_training"]
