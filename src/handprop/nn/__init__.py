"""Layers, losses, initializers and the Sequential model."""

from .layers import (
    ACTIVATIONS,
    Activation,
    BatchNorm,
    Dense,
    Dropout,
    Identity,
    Layer,
    LeakyReLU,
    LecunTanh,
    ReLU,
    Sigmoid,
    Tanh,
)
from .losses import LOSSES, BinaryCrossEntropy, Loss, MeanSquaredError, SoftmaxCrossEntropy, get_loss
from .model import Sequential, mlp

__all__ = ["ACTIVATIONS", "LOSSES", "Activation", "BatchNorm", "BinaryCrossEntropy", "Dense",
           "Dropout",
           "Identity", "Layer", "LeakyReLU", "LecunTanh", "Loss", "MeanSquaredError", "ReLU",
           "Sequential", "Sigmoid", "SoftmaxCrossEntropy", "Tanh", "get_loss", "mlp"]
