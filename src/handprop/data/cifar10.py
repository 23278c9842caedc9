"""CIFAR-10 from the official "python version" batch files.

Expected layout, inside the data directory (see ``cache.resolve_data_dir``)::

    cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch, batches.meta

Each batch is a pickle of a dict with ``b'data'`` (uint8, ``(n, 3072)``, each
row the red, green then blue 32x32 planes) and ``b'labels'`` (list of ints).
They are read with ``safe_pickle.safe_load``, so a hostile file cannot run
code. ``download=True`` fetches the official archive, checks its md5 and
extracts it safely; nothing touches the network otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from .cache import download_verified, file_md5, resolve_data_dir, safe_extract_tar
from .dataset import Dataset
from .safe_pickle import safe_load

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
META_FILE = "batches.meta"
REQUIRED_FILES = [*TRAIN_BATCHES, TEST_BATCH, META_FILE]
IMAGE_VALUES = 3 * 32 * 32


def _missing(folder: Path) -> list[str]:
    return [name for name in REQUIRED_FILES if not (folder / name).is_file()]


def find_cifar10_folder(data_dir: Path) -> Path | None:
    """The folder holding the batches: ``data_dir/cifar-10-batches-py`` or ``data_dir`` itself."""
    for folder in (data_dir / CIFAR10_FOLDER, data_dir):
        if not _missing(folder):
            return folder
    return None


def _manual_hint(data_dir: Path) -> str:
    return (
        f"To install it by hand, download {CIFAR10_URL} (md5 {CIFAR10_MD5}) and extract it "
        f"so that {data_dir / CIFAR10_FOLDER} holds {', '.join(REQUIRED_FILES)} "
        f"(or just place {CIFAR10_ARCHIVE} in {data_dir}); or point --data-dir or "
        f"$HANDPROP_DATA at a folder that already has {CIFAR10_FOLDER}/"
    )


def download_cifar10(data_dir: str | os.PathLike | None = None, *, url: str | None = None,
                     md5: str | None = None) -> Path:
    """Download (if needed) and extract the official archive; return the batches folder.

    An archive already sitting in ``data_dir`` is verified and reused rather
    than fetched again. ``url``/``md5`` default to the official ones; tests
    pass a ``file://`` URL.
    """
    data_dir = resolve_data_dir(data_dir)
    url = url or CIFAR10_URL
    md5 = md5 or CIFAR10_MD5
    archive = data_dir / CIFAR10_ARCHIVE
    if not (archive.is_file() and file_md5(archive) == md5):
        download_verified(url, archive, md5, "CIFAR-10 archive", _manual_hint(data_dir))
    return _extract(archive, data_dir)


def _extract(archive: Path, data_dir: Path) -> Path:
    safe_extract_tar(archive, data_dir)
    folder = find_cifar10_folder(data_dir)
    if folder is None:
        raise DataError(
            f"{archive} was extracted but {data_dir / CIFAR10_FOLDER} still lacks "
            f"{', '.join(_missing(data_dir / CIFAR10_FOLDER))}; it is not the CIFAR-10 python archive"
        )
    return folder


def _field(batch: dict, key: str):
    for candidate in (key.encode(), key):
        if candidate in batch:
            return batch[candidate]
    raise KeyError(key)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as images ``(n, 32, 32, 3)`` uint8 and labels int64."""
    batch = safe_load(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path} holds a {type(batch).__name__}, not the dict of a CIFAR-10 batch")
    try:
        data, labels = _field(batch, "data"), _field(batch, "labels")
    except KeyError as exc:
        raise DataError(f"{path} has no {exc.args[0]!r} entry; it is not a CIFAR-10 batch") from None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != IMAGE_VALUES:
        shape = getattr(data, "shape", None)
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (n, {IMAGE_VALUES}), got "
                        f"{getattr(data, 'dtype', type(data).__name__)} {shape}")
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"{path}: 'labels' must be a list of whole numbers") from None
    if labels.ndim != 1 or len(labels) != len(data):
        raise DataError(f"{path}: {len(data)} images but labels of shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels must lie in 0..9, found {labels.min()}..{labels.max()}")
    # Rows are channel planes (CHW); images are kept as height x width x RGB.
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    return images, labels


def read_label_names(path: Path) -> list[str]:
    meta = safe_load(path)
    try:
        names = _field(meta, "label_names") if isinstance(meta, dict) else None
    except KeyError:
        names = None
    if not isinstance(names, list) or len(names) != 10:
        raise DataError(f"{path} must hold 'label_names', a list of the 10 class names")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names]


def load_cifar10(data_dir: str | os.PathLike | None = None, download: bool = False) -> Dataset:
    """CIFAR-10: 50,000 training and 10,000 test images, uint8 ``(n, 32, 32, 3)``.

    Looks in ``data_dir`` (else ``$HANDPROP_DATA``, else the user cache). A
    verified archive already in that folder is extracted; otherwise, only when
    ``download`` is true, the official archive is fetched. Without either, the
    ``DataError`` says which files to put where.
    """
    root = resolve_data_dir(data_dir)
    folder = find_cifar10_folder(root)
    if folder is None:
        archive = root / CIFAR10_ARCHIVE
        if archive.is_file() and file_md5(archive) == CIFAR10_MD5:
            folder = _extract(archive, root)
        elif download:
            folder = download_cifar10(root)
        else:
            missing = _missing(root / CIFAR10_FOLDER)
            raise DataError(
                f"CIFAR-10 is not in {root}: {root / CIFAR10_FOLDER} lacks {', '.join(missing)}. "
                f"Run again with --download (download=True) to fetch the official archive "
                f"(about 163 MB). " + _manual_hint(root)
            )
    train = [read_batch(folder / name) for name in TRAIN_BATCHES]
    x_test, y_test = read_batch(folder / TEST_BATCH)
    return Dataset(
        name="cifar10",
        x_train=np.concatenate([x for x, _ in train]),
        y_train=np.concatenate([y for _, y in train]),
        x_test=x_test,
        y_test=y_test,
        classes=10,
        class_names=read_label_names(folder / META_FILE),
        value_range=(0.0, 255.0),
        source=str(folder),
    )
