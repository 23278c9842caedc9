"""handprop: neural networks with hand-written backpropagation on swappable engines."""

__version__ = "0.1.0"
