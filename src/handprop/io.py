"""Safe, atomic files: arrays in .npz without pickle, JSON beside them.

A file is first written to a temporary name in the same folder, flushed to
disk, then renamed over the target, so a crash leaves either the old file or
the new one, never half of one.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .errors import CheckpointError

META_KEY = "__meta__"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_arrays(path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write ``arrays`` and the JSON ``meta`` into one .npz file, atomically."""
    if META_KEY in arrays:
        raise ValueError(f"{META_KEY!r} is reserved")
    buffer = io.BytesIO()
    payload = {name: np.asarray(value) for name, value in arrays.items()}
    payload[META_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    np.savez(buffer, **payload)
    atomic_write_bytes(path, buffer.getvalue())


def load_arrays(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a file written by ``save_arrays``; never unpickles anything."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise CheckpointError(
            f"{path} is not a readable handprop file ({exc}); it may be truncated or corrupt"
        ) from None
    if META_KEY not in arrays:
        raise CheckpointError(f"{path} has no handprop metadata; was it written by handprop?")
    try:
        meta = json.loads(arrays.pop(META_KEY).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} has unreadable metadata ({exc})") from None
    return arrays, meta
