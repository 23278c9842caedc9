"""Datasets, readers, preprocessing and splits.

Typical use::

    from handprop.data import load_dataset, prepare
    data = prepare(load_dataset("mnist"), val_size=5000, normalize="scale", seed=0)
    # data.x_train (n, 784) float32, data.y_train int64, data.preprocessing -> save with the run

Datasets: ``mnist`` (shipped in the package, offline), ``cifar10`` (official
python batches from the data directory, optional verified download),
``linear`` and ``xor`` (the toy sets of the classic backprop lab).
"""

from __future__ import annotations

import os

from ..errors import ConfigError
from .cache import default_cache_dir, resolve_data_dir
from .cifar10 import download_cifar10, load_cifar10
from .dataset import Dataset
from .idx import read_idx, write_idx
from .mnist import load_mnist
from .prepare import Prepared, prepare
from .splits import train_val_indices, validation_count
from .toy import make_linear, make_xor
from .transforms import NORMALIZATIONS, apply_preprocessing, flatten, mean_std, one_hot

DATASET_NAMES = ("mnist", "cifar10", "linear", "xor")


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, download: bool = False,
                 n_linear: int = 200, seed: int = 0) -> Dataset:
    """Load a dataset by name: ``"mnist"``, ``"cifar10"``, ``"linear"`` or ``"xor"``.

    - ``data_dir``/``download`` apply to ``cifar10`` only (MNIST always comes
      from the package; see ``load_cifar10`` for the lookup order).
    - ``n_linear``: number of ``linear`` points per split (train and test are
      separate draws).
    - ``seed``: seeds the ``linear`` draw and the ``xor`` training order.

    Unknown names raise ``ConfigError`` listing the valid ones.
    """
    key = str(name).strip().lower().replace("-", "")
    if key == "mnist":
        return load_mnist()
    if key == "cifar10":
        return load_cifar10(data_dir, download=download)
    if key == "linear":
        return make_linear(n_linear, seed)
    if key == "xor":
        return make_xor(seed)
    raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")


__all__ = [
    "DATASET_NAMES", "NORMALIZATIONS", "Dataset", "Prepared", "apply_preprocessing",
    "default_cache_dir", "download_cifar10", "flatten", "load_cifar10", "load_dataset",
    "load_mnist", "make_linear", "make_xor", "mean_std", "one_hot", "prepare", "read_idx",
    "resolve_data_dir", "train_val_indices", "validation_count", "write_idx",
]
