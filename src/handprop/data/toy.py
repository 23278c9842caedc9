"""The two toy sets of the classic backpropagation lab.

``linear``: points drawn uniformly in the unit square, class 1 above the
diagonal (x2 > x1), else 0 -- separable by one neuron. ``xor``: 21 fixed
points on the two diagonals, (0.1i, 0.1i) for i = 0..10 labelled 0 and
(0.1i, 1 - 0.1i) for i != 5 labelled 1 (the centre belongs to class 0) --
not linearly separable, so it needs a hidden layer.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .dataset import Dataset


def linear_points(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points uniform in [0, 1]^2 and their labels (1 when x2 > x1)."""
    x = rng.random((n, 2))
    y = (x[:, 1] > x[:, 0]).astype(np.int64)
    return x, y


def xor_points() -> tuple[np.ndarray, np.ndarray]:
    """The 21 xor points in their canonical order (class 0 diagonal first)."""
    steps = np.arange(11) / 10.0
    zeros = np.stack([steps, steps], axis=1)
    ones_steps = steps[np.arange(11) != 5]
    ones = np.stack([ones_steps, 1.0 - ones_steps], axis=1)
    x = np.concatenate([zeros, ones])
    y = np.concatenate([np.zeros(11, np.int64), np.ones(10, np.int64)])
    return x, y


def make_linear(n: int = 200, seed: int = 0) -> Dataset:
    """``n`` training points and a separate draw of ``n`` test points from one seeded generator."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"the linear dataset needs a positive whole number of points, got {n!r}")
    rng = np.random.default_rng(seed)
    x_train, y_train = linear_points(int(n), rng)
    x_test, y_test = linear_points(int(n), rng)
    return Dataset("linear", x_train, y_train, x_test, y_test, classes=2,
                   class_names=["below", "above"], value_range=(0.0, 1.0), source="generated")


def make_xor(seed: int | None = 0) -> Dataset:
    """The fixed 21-point xor set.

    There is nothing to sample, so the test split is the same 21 points (in
    canonical order): a test score on xor measures fit, not generalisation.
    ``seed`` only sets the order of the training points (``None`` keeps the
    canonical order).
    """
    x, y = xor_points()
    if seed is None:
        x_train, y_train = x.copy(), y.copy()
    else:
        order = np.random.default_rng(seed).permutation(len(x))
        x_train, y_train = x[order], y[order]
    return Dataset("xor", x_train, y_train, x, y, classes=2,
                   class_names=["0", "1"], value_range=(0.0, 1.0), source="generated")
