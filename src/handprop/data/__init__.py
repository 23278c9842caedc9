"""Datasets, readers, preprocessing and splits.

Typical use::

    from handprop.data import load_dataset, prepare
    data = prepare(load_dataset("mnist"), val_size=5000, normalize="scale", seed=0)
    # data.x_train (n, 784) float32, data.y_train int64, data.preprocessing -> save with the run

Datasets: ``mnist`` (shipped in the package, offline; or the user's own IDX
files from ``data_dir``), ``fashion-mnist`` (the official IDX files, found
in ``data_dir``, ``$HANDPROP_DATA``, the user cache or Debian's package,
sha256-checked, optional verified download), ``cifar10`` (official python
batches from the data directory, optional verified download), ``linear`` and
``xor`` (the toy sets of the classic backprop lab).
"""

from __future__ import annotations

import os

from ..errors import ConfigError
from .cache import default_cache_dir, resolve_data_dir
from .cifar10 import download_cifar10, load_cifar10
from .dataset import Dataset
from .fashion_mnist import download_fashion_mnist, load_fashion_mnist
from .idx import read_idx, write_idx
from .mnist import load_mnist
from .prepare import Prepared, prepare
from .splits import train_val_indices, validation_count
from .toy import make_linear, make_xor
from .transforms import NORMALIZATIONS, apply_preprocessing, flatten, mean_std, one_hot

DATASET_NAMES = ("mnist", "fashion-mnist", "cifar10", "linear", "xor")


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, download: bool = False,
                 n_linear: int = 200, seed: int = 0) -> Dataset:
    """Load a dataset by name: ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``, ``"linear"`` or ``"xor"``.

    - ``data_dir``: for ``mnist``, a folder of the user's own four IDX files
      read instead of the bundled copy; for ``fashion-mnist`` and ``cifar10``
      the only folder searched (see ``load_fashion_mnist``, ``load_cifar10``).
    - ``download``: fetch ``fashion-mnist`` or ``cifar10`` when not found.
    - ``n_linear``: number of ``linear`` points per split (train and test are
      separate draws).
    - ``seed``: seeds the ``linear`` draw and the ``xor`` training order.

    An option that does not apply to the dataset (``download`` for MNIST,
    which ships with handprop; either for the toy sets) and unknown names
    raise ``ConfigError``.
    """
    key = str(name).strip().lower().replace("-", "").replace("_", "")
    given_dir = data_dir is not None and str(data_dir) != ""
    if key in ("mnist", "linear", "xor") and download:
        raise ConfigError(f"--download does not apply to {name}: "
                          + ("MNIST ships with handprop" if key == "mnist" else "it is generated")
                          + "; drop --download")
    if key in ("linear", "xor") and given_dir:
        raise ConfigError(f"--data-dir does not apply to {name}, which is generated; drop --data-dir")
    if key == "mnist":
        return load_mnist(data_dir)
    if key == "fashionmnist":
        return load_fashion_mnist(data_dir, download=download)
    if key == "cifar10":
        return load_cifar10(data_dir, download=download)
    if key == "linear":
        return make_linear(n_linear, seed)
    if key == "xor":
        return make_xor(seed)
    raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")


__all__ = [
    "DATASET_NAMES", "NORMALIZATIONS", "Dataset", "Prepared", "apply_preprocessing",
    "default_cache_dir", "download_cifar10", "download_fashion_mnist", "flatten", "load_cifar10",
    "load_dataset", "load_fashion_mnist", "load_mnist", "make_linear", "make_xor", "mean_std", "one_hot", "prepare", "read_idx",
    "resolve_data_dir", "train_val_indices", "validation_count", "write_idx",
]
