"""Preprocessing: flatten, scale, z-score, one-hot, and re-applying a recipe.

Statistics are always fitted on the training split only and recorded as a
plain JSON-serialisable dict (floats and lists), so the very same transform
can be re-applied to validation, test or new inputs (``handprop predict``)
and saved with a run's config.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, DataError, ShapeError

NORMALIZATIONS = ("scale", "zscore", "zscore-feature", "none")
PREPROCESSING_VERSION = 1
# Rows per chunk when working in float64, so MNIST never needs a 376 MB copy.
_CHUNK_ROWS = 8192


def mean_std(x: np.ndarray, per_feature: bool = False):
    """Mean and (population) standard deviation in float64, over all values or per feature.

    Two passes over row chunks keep memory small and the result accurate;
    uint8 data uses an exact 256-bin histogram.
    """
    x = np.asarray(x)
    if x.size == 0:
        raise DataError("cannot compute statistics of an empty array")
    if not per_feature and x.dtype == np.uint8:
        counts = np.bincount(x.reshape(-1), minlength=256).astype(np.float64)
        values = np.arange(256, dtype=np.float64)
        mean = float(counts @ values / x.size)
        return mean, float(np.sqrt(counts @ (values - mean) ** 2 / x.size))
    axis = 0 if per_feature else None
    chunks = range(0, len(x), _CHUNK_ROWS)
    total = sum(np.sum(x[i:i + _CHUNK_ROWS], axis=axis, dtype=np.float64) for i in chunks)
    count = len(x) if per_feature else x.size
    mean = total / count
    squares = sum(np.sum((x[i:i + _CHUNK_ROWS].astype(np.float64) - mean) ** 2, axis=axis) for i in chunks)
    std = np.sqrt(squares / count)
    if per_feature:
        return mean, std
    return float(mean), float(std)


def flatten(x: np.ndarray) -> np.ndarray:
    """``(n, ...)`` -> ``(n, features)``."""
    # Explicit feature count: reshape(0, -1) is ambiguous for an empty split.
    return x.reshape(len(x), int(np.prod(x.shape[1:])))


def channels_first(x: np.ndarray) -> np.ndarray:
    """Image batches in the layout convolutions take, as views: ``(n, H, W)`` ->
    ``(n, 1, H, W)``, ``(n, H, W, C)`` -> ``(n, C, H, W)``; other shapes unchanged."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        return x.transpose(0, 3, 1, 2)
    return x


def one_hot(labels, classes: int, dtype="float32") -> np.ndarray:
    """``(n,)`` class indices -> ``(n, classes)`` rows with a single 1."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ShapeError(f"one_hot needs a 1-d array of integer labels, got {labels.dtype} {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= classes):
        raise DataError(f"labels must lie in 0..{classes - 1} for one_hot, found {labels.min()}..{labels.max()}")
    out = np.zeros((len(labels), classes), dtype=dtype)
    out[np.arange(len(labels)), labels] = 1
    return out


def fit_normalization(kind: str, x_train: np.ndarray, value_range=(0.0, 255.0)) -> dict:
    """Fit ``kind`` on the training inputs; return ``{"kind", "offset", "scale"}``.

    The transform is always ``(x - offset) / scale``: ``scale`` maps the
    dataset's ``value_range`` onto [0, 1]; ``zscore`` uses the global mean and
    standard deviation of the training values; ``zscore-feature`` one mean and
    deviation per input feature (a list). A deviation of 0 (e.g. MNIST's
    always-blank border pixels) is replaced by 1 so that feature stays 0
    instead of becoming NaN.
    """
    if kind not in NORMALIZATIONS:
        raise ConfigError(f"unknown normalization {kind!r}; choose one of {', '.join(NORMALIZATIONS)}")
    if kind == "none":
        return {"kind": "none", "offset": 0.0, "scale": 1.0}
    if kind == "scale":
        low, high = (float(v) for v in value_range)
        if not high > low:
            raise DataError(f"cannot scale values whose range is {value_range}")
        return {"kind": "scale", "offset": low, "scale": high - low}
    if len(x_train) == 0:
        raise DataError("cannot fit z-score statistics on an empty training split")
    if kind == "zscore":
        mean, std = mean_std(x_train)
        return {"kind": "zscore", "offset": mean, "scale": std if std > 0 else 1.0}
    mean, std = mean_std(x_train, per_feature=True)
    std = np.where(std > 0, std, 1.0)
    return {"kind": "zscore-feature", "offset": mean.tolist(), "scale": std.tolist()}


def apply_normalization(spec: dict, x: np.ndarray, dtype="float32") -> np.ndarray:
    offset = np.asarray(spec["offset"], dtype=np.float64)
    scale = np.asarray(spec["scale"], dtype=np.float64)
    x = np.asarray(x)
    out = np.empty(x.shape, dtype=dtype)
    for i in range(0, len(x), _CHUNK_ROWS):
        out[i:i + _CHUNK_ROWS] = (x[i:i + _CHUNK_ROWS].astype(np.float64) - offset) / scale
    return out


def apply_preprocessing(preprocessing: dict, raw_x) -> np.ndarray:
    """Re-apply a ``Prepared.preprocessing`` recipe to new raw inputs.

    ``raw_x`` is a batch in the dataset's raw form: ``(n, *input_shape)``, or
    already flattened to ``(n, input_dim)``. Returns an array of the recipe's
    dtype, flattened or channels-first (N, C, H, W) when the recipe says so.
    """
    try:
        input_shape = tuple(int(d) for d in preprocessing["input_shape"])
        spec, dtype, do_flatten = preprocessing["normalize"], preprocessing["dtype"], preprocessing["flatten"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"the preprocessing record is incomplete or damaged ({exc!r}); "
                          "use the one saved by prepare() with the model") from None
    raw_x = np.asarray(raw_x)
    if not (np.issubdtype(raw_x.dtype, np.number) or raw_x.dtype == np.bool_):
        raise DataError(f"inputs must be numbers, got dtype {raw_x.dtype}")
    input_dim = int(np.prod(input_shape))
    if raw_x.shape[1:] == input_shape:
        batch = raw_x
    elif raw_x.ndim == 2 and raw_x.shape[1] == input_dim:
        batch = raw_x.reshape((len(raw_x), *input_shape))
    else:
        raise ShapeError(
            f"inputs of shape {raw_x.shape} do not fit this model: it expects a batch of shape "
            f"(n, {', '.join(map(str, input_shape))}) or (n, {input_dim})"
        )
    if np.issubdtype(batch.dtype, np.floating) and not np.isfinite(batch).all():
        raise DataError("inputs contain NaN or infinity; clean them before predicting")
    if do_flatten:
        batch = flatten(batch)
    elif preprocessing.get("channels_first"):  # absent from records older than conv models
        batch = channels_first(batch)
    return apply_normalization(spec, batch, dtype)
