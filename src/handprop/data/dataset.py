"""The ``Dataset`` container every loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError


@dataclass
class Dataset:
    """Raw data of one dataset, exactly as stored, before any preprocessing.

    ``x_*`` keep their natural shape and dtype: MNIST ``(n, 28, 28)`` uint8,
    CIFAR-10 ``(n, 32, 32, 3)`` uint8 (height, width, RGB channel, as images
    are shown), toy sets ``(n, 2)`` float64. ``y_*`` are int64 class indices
    in ``0 .. classes-1``. ``value_range`` is the range the raw values are
    defined on (``(0, 255)`` for pixels, ``(0, 1)`` for the toy sets); the
    ``scale`` preprocessing maps it onto [0, 1]. ``source`` says where the
    data came from (a path or "generated").
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int
    class_names: list[str] | None = None
    value_range: tuple[float, float] = (0.0, 255.0)
    source: str = ""

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if len(x) != len(y):
                raise DataError(
                    f"{self.name}: {split} split has {len(x)} inputs but {len(y)} labels"
                )
            if y.ndim != 1 or y.dtype != np.int64:
                raise DataError(f"{self.name}: {split} labels must be a 1-d int64 array, got {y.dtype} {y.shape}")
            if len(y) and (y.min() < 0 or y.max() >= self.classes):
                raise DataError(
                    f"{self.name}: {split} labels must lie in 0..{self.classes - 1}, "
                    f"found {int(y.min())}..{int(y.max())}; the file is corrupt"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"{self.name}: train samples have shape {self.x_train.shape[1:]} but test samples "
                f"{self.x_test.shape[1:]}"
            )
        if self.class_names is not None and len(self.class_names) != self.classes:
            raise DataError(f"{self.name}: {len(self.class_names)} class names for {self.classes} classes")

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one raw input, e.g. ``(28, 28)``."""
        return tuple(self.x_train.shape[1:])
