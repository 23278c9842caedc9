"""Layers, losses, initializers and the Sequential model."""

from .image import AvgPool2D, Conv2D, Flatten, MaxPool2D
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

__all__ = ["ACTIVATIONS", "LOSSES", "Activation", "AvgPool2D", "BatchNorm", "BinaryCrossEntropy",
           "Conv2D", "Dense", "Dropout", "Flatten", "MaxPool2D",
           "Identity", "Layer", "LeakyReLU", "LecunTanh", "Loss", "MeanSquaredError", "ReLU",
           "Sequential", "Sigmoid", "SoftmaxCrossEntropy", "Tanh", "get_loss", "mlp"]
