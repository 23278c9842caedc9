"""Datasets stored as the four IDX files of MNIST: finding, checking and caching them.

MNIST and Fashion-MNIST share the file names and the format::

    train-images-idx3-ubyte[.gz]   train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]    t10k-labels-idx1-ubyte[.gz]

A folder holds a set when all four files are there, each compressed or not.
Every file is parsed as IDX (magic, type code, dimensions, size); the images
must be uint8 ``(n, 28, 28)`` with as many uint8 labels, each below the class
count. A spec that verifies also needs each file's decompressed contents to
have the official sha256; files of the other dataset (same names, other
contents) are recognised and refused. A verified ``.gz`` is kept decompressed
in a cache folder, so the next load reads it without inflating it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import Dataset
from .idx import parse_idx, read_idx_bytes

# Key -> file name without ".gz", in the order the files are read.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IMAGE_SHAPE = (28, 28)


@dataclass(frozen=True)
class IdxDatasetSpec:
    """What a set of four IDX files must hold to be this dataset."""

    name: str                       # the --dataset name, e.g. "fashion-mnist"
    title: str                      # for messages, e.g. "Fashion-MNIST"
    folder: str                     # its own folder under a data directory
    class_names: tuple[str, ...]
    sha256: dict                    # key -> sha256 of the decompressed official file
    verify: bool                    # refuse other contents (else any valid IDX set is read)

    @property
    def file_list(self) -> str:
        return ", ".join(f"{name}.gz" for name in IDX_FILES.values())


MNIST = IdxDatasetSpec(
    name="mnist", title="MNIST", folder="mnist", class_names=tuple(str(d) for d in range(10)),
    sha256={
        "train_images": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train_labels": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "test_images": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "test_labels": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    # A user's own MNIST-format files are welcome, so only their structure is checked.
    verify=False,
)
FASHION_MNIST = IdxDatasetSpec(
    name="fashion-mnist", title="Fashion-MNIST", folder="fashion-mnist",
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
    sha256={
        "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    verify=True,
)
SPECS = (MNIST, FASHION_MNIST)


def idx_file(folder: Path, key: str) -> Path | None:
    """The file of ``key`` in ``folder``, compressed (preferred) or not; None if neither."""
    for name in (IDX_FILES[key] + ".gz", IDX_FILES[key]):
        if (folder / name).is_file():
            return folder / name
    return None


def missing_files(folder: Path) -> list[str]:
    """The ``.gz`` names of the files ``folder`` lacks (in either form)."""
    return [f"{name}.gz" for key, name in IDX_FILES.items() if idx_file(folder, key) is None]


def find_idx_folder(root: Path, spec: IdxDatasetSpec) -> Path | None:
    """``root/<spec.folder>`` if it holds the four files, else ``root`` if it does, else None.

    A ``root/<spec.folder>`` holding some of the files but not all is refused,
    since it was plainly meant for this dataset.
    """
    own = root / spec.folder
    lacking = missing_files(own)
    if not lacking:
        return own
    if own.is_dir() and len(lacking) < len(IDX_FILES):
        raise DataError(
            f"{own} holds only part of {spec.title}: it lacks {', '.join(lacking)} "
            f"(or the same names without .gz). Add them, delete the folder, or run with "
            f"--download (download=True) to fetch them"
        )
    return None if missing_files(root) else root


def load_idx_folder(folder: Path, spec: IdxDatasetSpec, cache_dir: Path | None = None) -> Dataset:
    """Read and check the four files of ``folder`` as ``spec`` says.

    ``cache_dir``: where verified ``.gz`` files are kept decompressed (only
    for a spec that verifies, so the copy is checked on the way back in);
    None: no cache.
    """
    arrays, paths = {}, {}
    for key in IDX_FILES:
        path = idx_file(folder, key)
        if path is None:
            raise DataError(f"{folder} has no {IDX_FILES[key]}.gz (nor {IDX_FILES[key]}); "
                            f"{spec.title} needs {spec.file_list}")
        paths[key] = path
        arrays[key] = _read_checked(path, key, spec, cache_dir)
    return dataset_from_arrays(spec, arrays, paths, source=str(folder))


def dataset_from_arrays(spec: IdxDatasetSpec, arrays: dict, paths: dict, source: str) -> Dataset:
    """The ``Dataset`` of four IDX arrays (keyed as ``IDX_FILES``) once they are checked to fit."""
    for split in ("train", "test"):
        _check_pair(arrays, paths, split, spec)
    return Dataset(
        name=spec.name,
        x_train=arrays["train_images"],
        y_train=arrays["train_labels"].astype(np.int64),
        x_test=arrays["test_images"],
        y_test=arrays["test_labels"].astype(np.int64),
        classes=len(spec.class_names),
        class_names=list(spec.class_names),
        value_range=(0.0, 255.0),
        source=source,
    )


def _check_pair(arrays: dict, paths: dict, split: str, spec: IdxDatasetSpec) -> None:
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    image_path, label_path = paths[f"{split}_images"], paths[f"{split}_labels"]
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{image_path} must hold uint8 images of shape (n, 28, 28) for "
                        f"{spec.title}, found {images.dtype} {images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(f"{label_path} must hold uint8 labels of shape (n,) for {spec.title}, "
                        f"found {labels.dtype} {labels.shape}")
    if len(images) == 0 or len(images) != len(labels):
        raise DataError(f"{image_path} holds {len(images)} images but {label_path} holds "
                        f"{len(labels)} labels; the two must match and not be empty")
    classes = len(spec.class_names)
    if labels.max() >= classes:
        bad = int(np.argmax(labels >= classes))
        raise DataError(f"{label_path}: label {int(labels[bad])} at index {bad} is not a class of "
                        f"{spec.title} (0..{classes - 1}); the file is corrupt")


def _read_checked(path: Path, key: str, spec: IdxDatasetSpec, cache_dir: Path | None) -> np.ndarray:
    expected = spec.sha256[key] if spec.verify else None
    copy = cache_dir / IDX_FILES[key] if expected and cache_dir and path.suffix == ".gz" else None
    if copy is not None:
        payload = _cached_payload(path, copy, expected)
        if payload is not None:
            return parse_idx(payload, path)
    payload = read_idx_bytes(path)
    array = parse_idx(payload, path)  # a truncated file says so before its checksum differs
    actual = hashlib.sha256(payload).hexdigest()
    other = next((o for o in SPECS if o is not spec and o.sha256[key] == actual), None)
    if other is not None:
        raise DataError(f"{path} is the {other.title} file of that name, not {spec.title}'s: "
                        f"use --dataset {other.name}, or keep the {spec.title} files in a "
                        f"folder of their own ({spec.folder}/)")
    if expected is not None and actual != expected:
        raise DataError(
            f"{path} is not the official {spec.title} {IDX_FILES[key]}: its decompressed "
            f"contents have sha256 {actual}, expected {expected}, so the file is corrupt or "
            f"modified. Replace it, or delete it and run with --download (download=True) "
            f"to fetch the official file")
    if copy is not None:
        _store_payload(path, copy, payload, expected)
    return array


# The decompressed copies: <cache_dir>/<name>, and <name>.json recording what it was made from.

def _stamp(source: Path, sha256: str) -> dict:
    stat = source.stat()
    return {"source": str(source.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "sha256": sha256}


def _cached_payload(source: Path, copy: Path, expected: str) -> bytes | None:
    """The copy, if it was made from ``source`` as it is now and still has the right sha256."""
    try:
        if json.loads(copy.with_name(copy.name + ".json").read_text()) != _stamp(source, expected):
            return None
        payload = copy.read_bytes()
    except (OSError, ValueError):
        return None
    return payload if hashlib.sha256(payload).hexdigest() == expected else None


def _store_payload(source: Path, copy: Path, payload: bytes, sha256: str) -> None:
    """Write the copy, then its stamp, each atomically; a cache that cannot be written is skipped."""
    try:
        copy.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(copy, payload)
        _atomic_write(copy.with_name(copy.name + ".json"), json.dumps(_stamp(source, sha256)).encode())
    except OSError:
        pass  # only speed is lost: the next load inflates the .gz again


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
