"""MNIST from the copy shipped inside the package (works offline)."""

from __future__ import annotations

from importlib import resources

import numpy as np

from ..errors import DataError
from .dataset import Dataset
from .idx import read_idx

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

# sha256 of the *decompressed* official files, checked by the test suite.
MNIST_SHA256 = {
    "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


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


def _check_pair(images: np.ndarray, labels: np.ndarray, split: str) -> None:
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DataError(f"MNIST {split} images must be uint8 of shape (n, 28, 28), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"MNIST {split} labels must be uint8 of shape (n,), got {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"MNIST {split} has {len(images)} images but {len(labels)} labels; reinstall handprop")


def load_mnist() -> Dataset:
    """The 60,000 training and 10,000 test digits, uint8 ``(n, 28, 28)``, labels 0..9."""
    arrays = {key: _read_packaged(key) for key in MNIST_FILES}
    _check_pair(arrays["train_images"], arrays["train_labels"], "train")
    _check_pair(arrays["test_images"], arrays["test_labels"], "test")
    return Dataset(
        name="mnist",
        x_train=arrays["train_images"],
        y_train=arrays["train_labels"].astype(np.int64),
        x_test=arrays["test_images"],
        y_test=arrays["test_labels"].astype(np.int64),
        classes=10,
        class_names=[str(d) for d in range(10)],
        value_range=(0.0, 255.0),
        source=str(packaged_mnist_path("train_images").parent),
    )
