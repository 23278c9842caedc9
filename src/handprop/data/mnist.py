"""MNIST: the copy shipped inside the package (works offline), or the user's own files.

``load_mnist()`` reads the bundled copy. ``load_mnist(data_dir)`` reads the
four IDX files from ``data_dir/mnist/`` or ``data_dir`` instead, and refuses
the folder (never falls back to the bundled copy) when they are missing or
do not hold valid MNIST-format data. Such files may be the user's own, so
there is no checksum to insist on; their IDX structure, shapes and labels
are checked, and Fashion-MNIST files of the same names are recognised.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import Dataset
from .idx import read_idx
from .idx_dataset import IDX_FILES, MNIST, dataset_from_arrays, find_idx_folder, load_idx_folder, missing_files

MNIST_FILES = {key: f"{name}.gz" for key, name in IDX_FILES.items()}

# sha256 of the *decompressed* official files, checked by the test suite.
MNIST_SHA256 = MNIST.sha256


def packaged_mnist_path(key: str):
    """Traversable for one packaged MNIST file (``key`` as in ``MNIST_FILES``)."""
    return resources.files("handprop.data").joinpath("mnist", MNIST_FILES[key])


def _read_packaged(key: str) -> np.ndarray:
    resource = packaged_mnist_path(key)
    if not resource.is_file():
        raise DataError(
            f"the packaged MNIST file {MNIST_FILES[key]} is missing from {resource}; "
            "reinstall handprop (pip install --force-reinstall handprop)"
        )
    with resources.as_file(resource) as path:
        return read_idx(path)


def load_mnist(data_dir: str | os.PathLike | None = None) -> Dataset:
    """The 60,000 training and 10,000 test digits, uint8 ``(n, 28, 28)``, labels 0..9.

    ``data_dir``: read the four IDX files there (or in its ``mnist/``
    subfolder) instead of the bundled copy; a ``DataError`` names the folder
    or file when they are missing or invalid.
    """
    if data_dir is None or str(data_dir) == "":
        arrays = {key: _read_packaged(key) for key in MNIST_FILES}
        paths = {key: MNIST_FILES[key] + " (bundled)" for key in MNIST_FILES}
        return dataset_from_arrays(MNIST, arrays, paths,
                                   source=str(packaged_mnist_path("train_images").parent))
    root = Path(data_dir).expanduser()
    folder = find_idx_folder(root, MNIST)
    if folder is None:
        raise DataError(
            f"--data-dir {root} holds no MNIST files: neither {root / MNIST.folder} nor {root} "
            f"has all of {MNIST.file_list} ({root} lacks {', '.join(missing_files(root))}). "
            f"Put the four files there (compressed or not), or drop --data-dir to use the copy "
            f"bundled with handprop"
        )
    return load_idx_folder(folder, MNIST)
