"""The IDX reader and the MNIST copy shipped in the package."""

from __future__ import annotations

import gzip
import hashlib
import struct

import numpy as np
import pytest

from handprop.data import load_dataset, read_idx, write_idx
from handprop.data.mnist import MNIST_FILES, MNIST_SHA256, packaged_mnist_path
from handprop.errors import DataError


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist")


@pytest.mark.parametrize("key", sorted(MNIST_FILES))
def test_packaged_mnist_matches_official_sha256(key):
    compressed = packaged_mnist_path(key).read_bytes()
    assert hashlib.sha256(gzip.decompress(compressed)).hexdigest() == MNIST_SHA256[key]


def test_mnist_shapes_dtypes_and_labels(mnist):
    assert mnist.x_train.shape == (60000, 28, 28) and mnist.x_train.dtype == np.uint8
    assert mnist.x_test.shape == (10000, 28, 28) and mnist.x_test.dtype == np.uint8
    assert mnist.y_train.dtype == np.int64 and mnist.y_test.dtype == np.int64
    assert mnist.classes == 10 and mnist.class_names == [str(d) for d in range(10)]
    # The first training labels of MNIST are well known.
    assert mnist.y_train[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]
    assert np.bincount(mnist.y_train).tolist()[:2] == [5923, 6742]
    assert mnist.x_train.max() == 255 and mnist.x_train.min() == 0


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("suffix", [".idx", ".idx.gz"])
def test_write_then_read_roundtrip(tmp_path, dtype, suffix):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype == "uint8":
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / f"a{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def _idx_bytes(array):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_bad_magic_is_refused_naming_file(tmp_path):
    path = tmp_path / "bad-magic.idx"
    path.write_bytes(b"\x01\x02\x08\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(DataError, match="bad-magic.idx.*magic"):
        read_idx(path)


def test_unknown_type_code_and_zero_dims(tmp_path):
    path = tmp_path / "t.idx"
    path.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"a")
    with pytest.raises(DataError, match="type code"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x08\x00")
    with pytest.raises(DataError, match="0 dimensions"):
        read_idx(path)


def test_truncated_and_overlong_raw_files(tmp_path):
    good = _idx_bytes(np.zeros((4, 5), np.uint8))
    path = tmp_path / "short.idx"
    path.write_bytes(good[:-3])
    with pytest.raises(DataError, match=r"short.idx is truncated.*20 data bytes, found 17"):
        read_idx(path)
    path.write_bytes(good[:6])
    with pytest.raises(DataError, match="truncated inside its header"):
        read_idx(path)
    path.write_bytes(good + b"xx")
    with pytest.raises(DataError, match="longer than its header"):
        read_idx(path)


def test_truncated_gzip_payload_is_reported(tmp_path):
    # A complete gzip stream whose IDX payload is short: caught by the length check.
    path = tmp_path / "short.idx.gz"
    path.write_bytes(gzip.compress(_idx_bytes(np.ones((4, 5), np.uint8))[:-1]))
    with pytest.raises(DataError, match=r"short.idx.gz is truncated"):
        read_idx(path)


def test_cut_gzip_stream_is_a_clean_data_error(tmp_path):
    data = gzip.compress(_idx_bytes(np.arange(4000, dtype=np.uint32).astype(np.uint8).reshape(40, 100)))
    path = tmp_path / "cut.idx.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.idx.gz"):
        read_idx(path)


def test_bad_crc_is_a_clean_data_error(tmp_path):
    data = bytearray(gzip.compress(_idx_bytes(np.arange(100, dtype=np.uint8).reshape(10, 10))))
    data[-8] ^= 0xFF  # the CRC32 field of the gzip trailer
    path = tmp_path / "crc.idx.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="crc.idx.gz.*(corrupt|CRC)"):
        read_idx(path)


def test_corrupt_deflate_data_is_a_clean_data_error(tmp_path):
    rng = np.random.default_rng(0)
    data = bytearray(gzip.compress(_idx_bytes(rng.integers(0, 255, (50, 50)).astype(np.uint8))))
    for i in range(20, 60):
        data[i] ^= 0x5A
    path = tmp_path / "garbled.idx.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="garbled.idx.gz"):
        read_idx(path)


def test_absurd_dimensions_are_refused_before_allocating(tmp_path):
    path = tmp_path / "huge.idx"
    path.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 100000, 100000, 100000))
    with pytest.raises(DataError, match="too large"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "nope.idx.gz")


def test_gzip_that_inflates_past_the_limit_is_refused(tmp_path, monkeypatch):
    from handprop.data import idx

    path = tmp_path / "bomb.idx.gz"
    write_idx(path, np.zeros((100, 100), np.uint8))  # 10 kB of zeros, about 50 bytes compressed
    monkeypatch.setattr(idx, "_MAX_FILE_BYTES", 5000)
    with pytest.raises(DataError, match="bomb.idx.gz holds over .* too large"):
        read_idx(path)


def test_concatenated_gzip_members_are_one_file(tmp_path):
    payload = _idx_bytes(np.arange(60, dtype=np.uint8).reshape(6, 10))
    path = tmp_path / "members.idx.gz"
    path.write_bytes(gzip.compress(payload[:25]) + gzip.compress(payload[25:]))
    np.testing.assert_array_equal(read_idx(path), np.arange(60).reshape(6, 10))
