"""Seeded train/validation split. The test split is never an input here."""

from __future__ import annotations

import numbers

import numpy as np

from ..errors import ConfigError


def validation_count(val_size, n_train: int) -> int:
    """How many of ``n_train`` samples go to validation.

    ``val_size`` is a count (int >= 0) or a fraction ``0 <= f < 1`` of the
    training set; a positive fraction always gives at least one sample. At
    least one sample must remain for training.
    """
    if isinstance(val_size, bool) or not isinstance(val_size, numbers.Real):
        raise ConfigError(f"val_size must be a count (e.g. 5000) or a fraction (e.g. 0.1), got {val_size!r}")
    if isinstance(val_size, numbers.Integral):
        count = int(val_size)
        if count < 0:
            raise ConfigError(f"val_size must not be negative, got {count}")
    else:
        fraction = float(val_size)
        if not 0.0 <= fraction < 1.0:
            raise ConfigError(
                f"a fractional val_size must lie in [0, 1), got {fraction}; "
                "give a whole number for a count of samples"
            )
        count = max(1, round(fraction * n_train)) if fraction > 0 else 0
    if count >= n_train:
        raise ConfigError(
            f"val_size {val_size!r} leaves no training data: the training split has only "
            f"{n_train} samples; use a smaller val_size"
        )
    return count


def train_val_indices(n_train: int, val_size, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sorted index arrays ``(train_idx, val_idx)`` of a seeded random split."""
    count = validation_count(val_size, n_train)
    order = np.random.default_rng(seed).permutation(n_train)
    # Sorting keeps the original sample order inside each part.
    return np.sort(order[count:]), np.sort(order[:count])
