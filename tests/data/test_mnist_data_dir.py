"""MNIST from a folder the user names: read, or refused with the file named; never the bundled copy."""

from __future__ import annotations

import numpy as np
import pytest

from handprop.data import load_dataset, write_idx
from handprop.data.idx_dataset import IDX_FILES
from handprop.data.mnist import MNIST_FILES, packaged_mnist_path
from handprop.errors import DataError


def write_set(folder, n_train=12, n_test=4, seed=0, gz=True, **override):
    """A small MNIST-format set of the user's own; ``override`` replaces arrays by key."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test)[::-1] % 10).astype(np.uint8),
    }
    arrays.update(override)
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in IDX_FILES.items():
        write_idx(folder / (f"{name}.gz" if gz else name), arrays[key])
    return arrays


@pytest.mark.parametrize("layout", ["folder", "mnist-subfolder", "uncompressed"])
def test_user_files_are_read_instead_of_the_bundled_copy(tmp_path, layout):
    folder = tmp_path / "mnist" if layout == "mnist-subfolder" else tmp_path
    arrays = write_set(folder, gz=layout != "uncompressed")
    data = load_dataset("mnist", data_dir=tmp_path)
    assert data.source == str(folder)
    assert data.x_train.shape == (12, 28, 28) and data.x_test.shape == (4, 28, 28)
    np.testing.assert_array_equal(data.x_train, arrays["train_images"])
    assert data.y_test.tolist() == [3, 2, 1, 0] and data.y_test.dtype == np.int64
    assert data.class_names == [str(d) for d in range(10)]


def test_the_official_files_from_a_folder_equal_the_bundled_copy(tmp_path):
    for key, name in MNIST_FILES.items():
        (tmp_path / name).write_bytes(packaged_mnist_path(key).read_bytes())
    mine, bundled = load_dataset("mnist", data_dir=tmp_path), load_dataset("mnist")
    assert mine.source == str(tmp_path) != bundled.source
    np.testing.assert_array_equal(mine.x_test, bundled.x_test)
    np.testing.assert_array_equal(mine.y_train, bundled.y_train)


def test_empty_folder_is_refused_not_replaced_by_the_bundled_copy(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=tmp_path)
    message = str(info.value)
    assert f"--data-dir {tmp_path} holds no MNIST files" in message
    assert "train-images-idx3-ubyte.gz" in message and "drop --data-dir" in message


@pytest.mark.parametrize("key, bad, message", [
    ("train_labels", (np.arange(12) % 11).astype(np.uint8),
     r"train-labels-idx1-ubyte\.gz: label 10 at index 10 is not a class of MNIST"),
    ("test_images", np.zeros((4, 28, 27), np.uint8),
     r"t10k-images-idx3-ubyte\.gz must hold uint8 images of shape \(n, 28, 28\)"),
    ("test_labels", np.zeros(5, np.uint8),
     r"t10k-images-idx3-ubyte\.gz holds 4 images but .*t10k-labels-idx1-ubyte\.gz holds 5 labels"),
    ("train_images", np.zeros((12, 28, 28), np.float32),
     r"train-images-idx3-ubyte\.gz must hold uint8 images"),
    ("train_labels", np.zeros((12, 1), np.uint8),
     r"train-labels-idx1-ubyte\.gz must hold uint8 labels of shape \(n,\)"),
])
def test_invalid_contents_name_the_file(tmp_path, key, bad, message):
    write_set(tmp_path, **{key: bad})
    with pytest.raises(DataError, match=message):
        load_dataset("mnist", data_dir=tmp_path)


def test_truncated_and_garbage_files_name_the_file(tmp_path):
    write_set(tmp_path)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz is a corrupt or truncated gzip"):
        load_dataset("mnist", data_dir=tmp_path)
    path.write_bytes(b"\x1f\x8b" + bytes(range(200)))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz is a corrupt"):
        load_dataset("mnist", data_dir=tmp_path)
    path.write_bytes(b"PK\x03\x04 this is a zip file")
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz has a bad magic number"):
        load_dataset("mnist", data_dir=tmp_path)


def test_half_filled_mnist_subfolder_is_refused(tmp_path):
    write_set(tmp_path / "mnist")
    (tmp_path / "mnist" / "train-labels-idx1-ubyte.gz").unlink()
    write_set(tmp_path)  # a complete set beside it is not silently used instead
    with pytest.raises(DataError, match=r"holds only part of MNIST: it lacks train-labels-idx1-ubyte\.gz"):
        load_dataset("mnist", data_dir=tmp_path)
