"""From a raw ``Dataset`` to model-ready arrays: split, flatten, normalise, cast."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from .dataset import Dataset
from .splits import train_val_indices
from .transforms import (NORMALIZATIONS, PREPROCESSING_VERSION, apply_normalization,
                         channels_first as to_channels_first, fit_normalization,
                         flatten as flatten_rows)

FLOAT_DTYPES = ("float32", "float64")


@dataclass
class Prepared:
    """Model-ready splits of one dataset.

    ``x_*`` are float arrays of the requested dtype, flattened to
    ``(n, input_dim)`` unless ``flatten=False``, images as ``(n, C, H, W)`` with
    ``channels_first=True``; ``y_*`` are int64 class indices. ``input_shape`` is
    one raw sample's shape (MNIST (28, 28), CIFAR-10 (32, 32, 3));
    ``model_input_shape`` is one sample's shape in ``x_*``. ``x_val``/``y_val`` are empty (0 rows) when no validation split
    was asked for. ``preprocessing`` is a JSON-serialisable recipe; pass it to
    ``apply_preprocessing`` to transform new raw inputs the same way.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    input_dim: int
    input_shape: tuple[int, ...]
    classes: int
    class_names: list[str] | None
    preprocessing: dict = field(default_factory=dict)

    @property
    def model_input_shape(self) -> tuple[int, ...]:
        """One sample of ``x_*``: ``(input_dim,)``, the raw shape, or ``(C, H, W)``."""
        return tuple(int(d) for d in self.x_train.shape[1:])


def prepare(dataset: Dataset, *, val_size=0, normalize: str = "scale", flatten: bool | None = None,
            channels_first: bool = False, dtype: str = "float32", seed: int = 0) -> Prepared:
    """Split off a seeded validation set, then normalise every split with training statistics.

    - ``val_size``: count (int) or fraction ``0 <= f < 1`` of the training
      split moved to validation; 0 means none. The test split is only ever
      transformed, never used for statistics or the split.
    - ``normalize``: ``"scale"`` (raw value range -> [0, 1]), ``"zscore"``
      (global mean/std of the training part), ``"zscore-feature"`` (mean/std
      per input feature) or ``"none"``.
    - ``flatten``: reshape each sample to a vector (needed by dense layers);
      the default unless ``channels_first``.
    - ``channels_first``: image samples as ``(C, H, W)``, for convolutions (NCHW
      batches): (H, W) gets one channel, CIFAR-10's (H, W, C) is transposed.
      Samples that are not images keep their shape.
    - ``dtype``: ``"float32"`` or ``"float64"``.
    - ``seed``: seeds the validation split only.
    """
    if normalize not in NORMALIZATIONS:
        raise ConfigError(f"unknown normalize {normalize!r}; choose one of {', '.join(NORMALIZATIONS)}")
    if str(dtype) not in FLOAT_DTYPES:
        raise ConfigError(f"dtype must be float32 or float64, got {dtype!r}")
    dtype = str(dtype)
    if flatten is None:
        flatten = not channels_first
    if flatten and channels_first:
        raise ConfigError("prepare: flatten and channels_first exclude each other; images are "
                          "kept as (C, H, W) for convolutions, or flattened for dense layers")
    train_idx, val_idx = train_val_indices(len(dataset.y_train), val_size, seed)
    # Slices (not fancy indexing) when there is no split, so nothing is copied.
    if len(val_idx) == 0:
        x_train_raw, y_train = dataset.x_train, dataset.y_train
    else:
        x_train_raw, y_train = dataset.x_train[train_idx], dataset.y_train[train_idx]
    x_val_raw, y_val = dataset.x_train[val_idx], dataset.y_train[val_idx]

    def to_model_shape(x):
        if flatten:
            return flatten_rows(x)
        return to_channels_first(x) if channels_first else x

    spec = fit_normalization(normalize, to_model_shape(x_train_raw), dataset.value_range)
    input_shape = dataset.sample_shape
    preprocessing = {
        "version": PREPROCESSING_VERSION,
        "dataset": dataset.name,
        "input_shape": list(input_shape),
        "flatten": bool(flatten),
        "channels_first": bool(channels_first),
        "dtype": dtype,
        "normalize": spec,
        # Plain int/float so the record stays JSON even for NumPy scalars.
        "val_size": int(val_size) if isinstance(val_size, numbers.Integral) else float(val_size),
        "split_seed": int(seed),
    }

    def transform(x):
        return apply_normalization(spec, to_model_shape(x), dtype)

    return Prepared(
        name=dataset.name,
        x_train=transform(x_train_raw),
        y_train=np.asarray(y_train, dtype=np.int64),
        x_val=transform(x_val_raw),
        y_val=np.asarray(y_val, dtype=np.int64),
        x_test=transform(dataset.x_test),
        y_test=np.asarray(dataset.y_test, dtype=np.int64),
        input_dim=int(np.prod(input_shape)),
        input_shape=tuple(input_shape),
        classes=dataset.classes,
        class_names=dataset.class_names,
        preprocessing=preprocessing,
    )
