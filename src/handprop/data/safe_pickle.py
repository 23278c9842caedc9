"""A restricted unpickler for the CIFAR-10 "python version" batch files.

Pickle can call any importable function, so a hostile batch file could run
code on load. The official files only need builtin containers, bytes and the
NumPy array reconstruction; this unpickler admits exactly those globals and
refuses everything else with a ``DataError``.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np

from ..errors import DataError


def _numpy_reconstruct():
    try:  # NumPy 2 moved the module; NumPy 1 only has numpy.core.
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _allowed_globals() -> dict[tuple[str, str], object]:
    import _codecs

    reconstruct = _numpy_reconstruct()
    allowed = {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Python 3 writes bytes at protocol <= 2 as _codecs.encode(text, 'latin1').
        ("_codecs", "encode"): _codecs.encode,
    }
    for module in ("builtins", "__builtin__"):  # __builtin__: Python 2 pickles
        for name, obj in (("set", set), ("frozenset", frozenset), ("bytearray", bytearray)):
            allowed[(module, name)] = obj
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals in ``_allowed_globals()``."""

    def __init__(self, file, path: Path | None = None):
        # encoding="bytes": the official files come from Python 2, whose str
        # holds raw bytes (the image data); decoding them as text would fail.
        super().__init__(file, encoding="bytes")
        self._allowed = _allowed_globals()
        self._path = path

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            where = f" in {self._path}" if self._path else ""
            raise DataError(
                f"refusing to load {module}.{name}{where}: a CIFAR-10 batch holds only "
                "containers and NumPy arrays, so this file is corrupt or hostile; "
                "replace it with the official cifar-10-python.tar.gz contents"
            ) from None


def safe_load(path: str | os.PathLike):
    """Unpickle ``path`` with ``RestrictedUnpickler``; every failure is a ``DataError``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    try:
        return RestrictedUnpickler(io.BytesIO(data), path=path).load()
    except DataError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError, struct.error) as exc:
        raise DataError(
            f"{path} is not a readable CIFAR-10 batch pickle ({type(exc).__name__}: {exc}); "
            "it may be truncated; replace it with a fresh copy"
        ) from None

