"""Reader for the IDX format of the MNIST files (optionally gzip-compressed).

An IDX file is: two zero bytes, a type code, the number of dimensions, one
big-endian uint32 per dimension, then the values in C order, big-endian. The
reader checks each part and refuses a file that does not add up, naming the
file and the problem, so a truncated download never turns into silent zeros.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

# IDX type code -> big-endian dtype of the stored values.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# A hostile header could ask for terabytes; no real IDX file comes near this.
MAX_IDX_BYTES = 4 * 1024**3
_MAX_FILE_BYTES = MAX_IDX_BYTES + 4 + 4 * 255  # the largest header
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (raw or ``.gz``) into a native-endian NumPy array.

    Raises ``DataError`` naming the file when it is missing, not IDX, has a
    bad magic number or type code, is truncated, has trailing bytes, or (for
    gzip) is corrupt or fails its CRC check.
    """
    return parse_idx(read_idx_bytes(path), path)


def read_idx_bytes(path: str | os.PathLike) -> bytes:
    """The contents of an IDX file as stored, decompressed if it is gzip.

    The gzip stream is read to its end, so its CRC and length trailer are
    checked; a missing, unreadable or corrupt file is a ``DataError`` naming it.
    """
    path = Path(path)
    try:
        if path.stat().st_size > _MAX_FILE_BYTES:
            raise DataError(f"IDX file {path} holds over {MAX_IDX_BYTES} bytes, too large to be real data")
        stored = path.read_bytes()
        payload = _gunzip(stored, _MAX_FILE_BYTES) if stored[:2] == _GZIP_MAGIC else stored
    except FileNotFoundError:
        raise DataError(f"IDX file {path} does not exist") from None
    except (EOFError, zlib.error) as exc:
        raise DataError(
            f"IDX file {path} is a corrupt or truncated gzip file ({exc}); "
            "replace it with a fresh copy"
        ) from None
    except OSError as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from None
    if len(payload) > _MAX_FILE_BYTES:
        raise DataError(f"IDX file {path} holds over {MAX_IDX_BYTES} bytes, too large to be real data")
    return payload


def _gunzip(stored: bytes, limit: int) -> bytes:
    """Decompress every gzip member of ``stored``, stopping once past ``limit`` bytes.

    The limit keeps a small hostile file from inflating into all of memory;
    zlib checks each member's CRC and length trailer.
    """
    parts, total = [], 0
    while stored:
        inflater = zlib.decompressobj(wbits=31)  # 31: gzip header and trailer
        part = inflater.decompress(stored, limit + 1 - total)
        parts.append(part)
        total += len(part)
        if total > limit:
            break
        if not inflater.eof:
            raise EOFError("the compressed stream ends early")
        stored = inflater.unused_data
    return b"".join(parts)


def parse_idx(payload: bytes, path: str | os.PathLike = "<bytes>") -> np.ndarray:
    """The array held by the decompressed IDX bytes ``payload`` (``path`` names it in errors)."""
    path = Path(path)
    if len(payload) < 4:
        raise DataError(f"IDX file {path} is truncated: {len(payload)} bytes, no complete header")
    header = payload[:4]
    if header[0] != 0 or header[1] != 0:
        raise DataError(
            f"IDX file {path} has a bad magic number 0x{header.hex()} "
            "(an IDX file starts with two zero bytes); it is not an IDX file"
        )
    type_code, ndim = header[2], header[3]
    if type_code not in IDX_DTYPES:
        raise DataError(f"IDX file {path} has an unknown value type code 0x{type_code:02x}")
    if ndim == 0:
        raise DataError(f"IDX file {path} declares 0 dimensions")
    offset = 4 + 4 * ndim
    if len(payload) < offset:
        raise DataError(f"IDX file {path} is truncated inside its header ({ndim} dimensions declared)")
    dims = struct.unpack(f">{ndim}I", payload[4:offset])
    dtype = IDX_DTYPES[type_code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if expected > MAX_IDX_BYTES:
        raise DataError(f"IDX file {path} declares dimensions {dims}, too large to be real data")
    found = len(payload) - offset
    if found != expected:
        problem = "truncated" if found < expected else "longer than its header says"
        raise DataError(
            f"IDX file {path} is {problem}: dimensions {dims} need {expected} data bytes, "
            f"found {found}"
        )
    array = np.frombuffer(payload, dtype=dtype, offset=offset).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file (gzip when ``compress`` or the name ends in .gz).

    Used by tests and by anyone preparing their own MNIST-like files.
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise DataError(f"cannot write dtype {array.dtype} to IDX; use one of uint8, int8, int16, int32, float32, float64")
    header = bytes([0, 0, codes[native], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array, dtype=native.newbyteorder(">")).tobytes()
    if compress is None:
        compress = path.suffix == ".gz"
    path.write_bytes(gzip.compress(payload, mtime=0) if compress else payload)
