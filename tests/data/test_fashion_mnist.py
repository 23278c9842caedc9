"""Fashion-MNIST: the real files, where they are looked for, their checks, the cache and downloads.

The real files are found by ``tests/support/real_data.py`` (``pytest
--data-dir``, ``$HANDPROP_DATA``, the user cache, Debian's folder, then
``../shared/data/fashion-mnist/`` beside the repository); without them the
tests that read them are skipped, or fail with ``CI=true``. Every test gets
its own user cache, no ``$HANDPROP_DATA``, a Debian folder inside
``tmp_path`` and a network seam that refuses, unless it serves files itself.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest

import real_data
from handprop.data import cache, fashion_mnist, idx_dataset, load_dataset, read_idx, write_idx
from handprop.data.fashion_mnist import download_fashion_mnist, load_fashion_mnist
from handprop.data.idx_dataset import FASHION_MNIST, IDX_FILES
from handprop.errors import ConfigError, DataError

GZ_NAMES = [f"{name}.gz" for name in IDX_FILES.values()]
REAL_FETCH = cache.fetch  # before any test replaces it
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot"]


@pytest.fixture(scope="module")
def real_dir(fashion_mnist_dir) -> Path:
    """The real files' folder (conftest's ``fashion_mnist_dir``): skipped, or failed under CI, without it."""
    return fashion_mnist_dir


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Own cache, no $HANDPROP_DATA, an empty Debian folder, no network."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("HANDPROP_DATA", raising=False)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "debian" / "fashion-mnist")

    def refuse(url, dest):
        raise AssertionError(f"unexpected fetch of {url}")

    monkeypatch.setattr(cache, "fetch", refuse)


def link_files(real_dir: Path, folder: Path, skip=()) -> Path:
    """``folder`` holding links to the real files (all but ``skip``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in GZ_NAMES:
        if name not in skip:
            (folder / name).symlink_to(real_dir / name)
    return folder


@pytest.fixture(scope="module")
def fashion(real_dir):
    return load_fashion_mnist(real_dir)


def test_real_files_shapes_labels_and_statistics(fashion, real_dir):
    assert fashion.name == "fashion-mnist" and fashion.source == str(real_dir)
    assert fashion.x_train.shape == (60000, 28, 28) and fashion.x_train.dtype == np.uint8
    assert fashion.x_test.shape == (10000, 28, 28)
    assert fashion.y_train.dtype == np.int64 and fashion.classes == 10
    # The first labels and the balanced classes of the official files.
    assert fashion.y_train[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert fashion.y_test[:5].tolist() == [9, 2, 1, 1, 6]
    assert np.bincount(fashion.y_train).tolist() == [6000] * 10
    assert np.bincount(fashion.y_test).tolist() == [1000] * 10
    # The well-known normalisation constants 0.2860 and 0.3530, times 255.
    assert fashion.x_train.mean() == pytest.approx(72.9404, abs=1e-3)
    assert fashion.x_train.std() == pytest.approx(90.0212, abs=1e-3)


def test_class_names_travel_with_the_dataset(fashion):
    assert fashion.class_names == CLASS_NAMES
    assert load_dataset("mnist").class_names == [str(d) for d in range(10)]


@pytest.mark.parametrize("name", ["fashion-mnist", "fashion_mnist", "Fashion-MNIST"])
def test_load_dataset_spellings(name, tmp_path):
    with pytest.raises(DataError, match="Fashion-MNIST is not in --data-dir"):
        load_dataset(name, data_dir=tmp_path)


def test_shipped_checksums_are_the_readme_table(real_dir):
    # The table is in the README of this project's copy, which may not be the folder found first.
    readme = next((p for p in (real_dir / "README.md", real_data.SIBLING / "README.md") if p.is_file()), None)
    if readme is None:
        real_data.skip_or_fail(f"the Fashion-MNIST README.md with the checksum table is neither in "
                               f"{real_dir} nor in {real_data.SIBLING} ({real_data.SIBLING_LABEL})")
    readme = readme.read_text()
    for key, name in IDX_FILES.items():
        assert re.search(rf"\| {name} +\| {FASHION_MNIST.sha256[key]} \|", readme), name
    for md5 in fashion_mnist.FASHION_MNIST_MD5.values():
        assert md5 in readme


# --- where the files are looked for ---

@pytest.fixture
def four_places(tmp_path, real_dir, monkeypatch):
    """The files in each of the four places, each in the layout that place allows."""
    places = {
        "data_dir": link_files(real_dir, tmp_path / "mine"),                        # folder itself
        "env": link_files(real_dir, tmp_path / "env" / "fashion-mnist"),            # subfolder
        "cache": link_files(real_dir, tmp_path / "xdg" / "handprop" / "fashion-mnist"),
        "debian": link_files(real_dir, fashion_mnist.DEBIAN_DIR),
    }
    monkeypatch.setenv("HANDPROP_DATA", str(tmp_path / "env"))
    return places


def test_lookup_order_data_dir_env_cache_debian(four_places, real_dir, monkeypatch, tmp_path):
    assert fashion_mnist.find_fashion_mnist(four_places["data_dir"]) == four_places["data_dir"]
    assert fashion_mnist.find_fashion_mnist() == four_places["env"]
    monkeypatch.delenv("HANDPROP_DATA")
    assert fashion_mnist.find_fashion_mnist() == four_places["cache"]
    for name in GZ_NAMES:
        (four_places["cache"] / name).unlink()
    assert fashion_mnist.find_fashion_mnist() == four_places["debian"]
    # $HANDPROP_DATA may also hold the files directly.
    direct = link_files(real_dir, tmp_path / "direct")
    monkeypatch.setenv("HANDPROP_DATA", str(direct))
    assert fashion_mnist.find_fashion_mnist() == direct


def test_the_place_found_is_the_place_read(four_places, monkeypatch):
    assert load_dataset("fashion-mnist").source == str(four_places["env"])
    assert load_dataset("fashion-mnist", data_dir=four_places["data_dir"]).source == \
        str(four_places["data_dir"])
    monkeypatch.delenv("HANDPROP_DATA")
    for name in GZ_NAMES:
        (four_places["cache"] / name).unlink()
    assert load_dataset("fashion-mnist").source == str(four_places["debian"])


def test_data_dir_is_the_only_place_searched_when_given(four_places, tmp_path):
    empty = tmp_path / "typo"
    empty.mkdir()
    with pytest.raises(DataError) as info:
        load_fashion_mnist(empty)
    message = str(info.value)
    assert f"not in --data-dir {empty}" in message and "only one searched" in message
    assert "--download" in message


def test_nothing_anywhere_names_the_four_places_and_the_files(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist")
    message = str(info.value)
    for needed in ("--data-dir", "$HANDPROP_DATA", str(tmp_path / "xdg" / "handprop"),
                   str(fashion_mnist.DEBIAN_DIR), "dataset-fashion-mnist", "--download", *GZ_NAMES):
        assert needed in message


def test_half_filled_folder_is_refused_not_skipped(tmp_path, real_dir, monkeypatch):
    link_files(real_dir, tmp_path / "env" / "fashion-mnist", skip={"t10k-labels-idx1-ubyte.gz"})
    link_files(real_dir, fashion_mnist.DEBIAN_DIR)
    monkeypatch.setenv("HANDPROP_DATA", str(tmp_path / "env"))
    with pytest.raises(DataError, match=r"fashion-mnist holds only part of Fashion-MNIST: "
                                        r"it lacks t10k-labels-idx1-ubyte\.gz"):
        load_dataset("fashion-mnist")


def test_decompressed_files_are_read_too(tmp_path, real_dir):
    folder = tmp_path / "raw"
    folder.mkdir()
    for name in GZ_NAMES:
        (folder / name.removesuffix(".gz")).write_bytes(gzip.decompress((real_dir / name).read_bytes()))
    data = load_fashion_mnist(folder)
    assert data.y_test[:5].tolist() == [9, 2, 1, 1, 6]


# --- checks of the contents ---

@pytest.fixture
def copied(tmp_path, real_dir) -> Path:
    """A folder with links to the real label files and real copies of the image files."""
    folder = tmp_path / "copy"
    link_files(real_dir, folder, skip={"t10k-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"})
    for name in ("t10k-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (folder / name).write_bytes((real_dir / name).read_bytes())
    return folder


def test_checksum_mismatch_names_the_file(copied):
    labels = read_idx(copied / "train-labels-idx1-ubyte.gz")
    labels[[0, 1]] = labels[[1, 0]]  # still a valid IDX file with labels in range
    write_idx(copied / "train-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DataError) as info:
        load_fashion_mnist(copied)
    message = str(info.value)
    assert str(copied / "train-labels-idx1-ubyte.gz") in message
    assert "sha256" in message and FASHION_MNIST.sha256["train_labels"] in message


def test_truncated_gz_names_the_file(copied):
    path = copied / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz is a corrupt or truncated gzip"):
        load_fashion_mnist(copied)


def test_truncated_decompressed_file_names_the_file(copied):
    gz = copied / "t10k-images-idx3-ubyte.gz"
    raw = copied / "t10k-images-idx3-ubyte"
    raw.write_bytes(gzip.decompress(gz.read_bytes())[:-784])
    gz.unlink()
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte is truncated: dimensions "
                                        r"\(10000, 28, 28\) need 7840000 data bytes, found 7839216"):
        load_fashion_mnist(copied)


def test_complete_gzip_of_a_shortened_file_fails_its_checks(copied):
    path = copied / "t10k-images-idx3-ubyte.gz"
    payload = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(payload[:16] + payload[16 + 784:], compresslevel=1))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz is truncated"):
        load_fashion_mnist(copied)


def test_corrupt_gzip_names_the_file(copied):
    path = copied / "train-labels-idx1-ubyte.gz"
    data = bytearray(path.read_bytes())
    for i in range(100, 400):
        data[i] ^= 0xA5
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz is a corrupt or truncated gzip"):
        load_fashion_mnist(copied)


def test_mnist_files_are_recognised(tmp_path):
    from handprop.data.mnist import packaged_mnist_path

    folder = tmp_path / "wrong"
    folder.mkdir()
    for key, name in IDX_FILES.items():
        (folder / f"{name}.gz").write_bytes(packaged_mnist_path(key).read_bytes())
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz is the MNIST file of that "
                                        r"name, not Fashion-MNIST's: use --dataset mnist"):
        load_fashion_mnist(folder)


# --- the decompressed cache ---

def test_verified_files_are_kept_decompressed_and_reused(tmp_path, copied, monkeypatch):
    first = load_fashion_mnist(copied)
    kept = tmp_path / "xdg" / "handprop" / "fashion-mnist" / "decompressed"
    for key, name in IDX_FILES.items():
        assert hashlib.sha256((kept / name).read_bytes()).hexdigest() == FASHION_MNIST.sha256[key]
    assert not list(kept.glob(".*"))  # no temporary files left

    def no_inflating(path):
        raise AssertionError(f"{path} was inflated again")

    monkeypatch.setattr(idx_dataset, "read_idx_bytes", no_inflating)
    again = load_fashion_mnist(copied)
    np.testing.assert_array_equal(again.x_train, first.x_train)
    np.testing.assert_array_equal(again.y_test, first.y_test)
    assert again.x_train.flags.writeable


def test_a_changed_source_is_read_again_not_served_from_the_cache(copied):
    load_fashion_mnist(copied)
    path = copied / "train-labels-idx1-ubyte.gz"
    labels = read_idx(path)
    labels[:2] = labels[1::-1]
    write_idx(path, labels)
    os.utime(path, ns=(1, 1))  # even with an old timestamp
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz is not the official"):
        load_fashion_mnist(copied)


def test_a_damaged_cache_copy_is_ignored(tmp_path, copied):
    reference = load_fashion_mnist(copied)
    kept = tmp_path / "xdg" / "handprop" / "fashion-mnist" / "decompressed" / "t10k-images-idx3-ubyte"
    data = bytearray(kept.read_bytes())
    data[5000] ^= 0xFF
    kept.write_bytes(bytes(data))
    again = load_fashion_mnist(copied)
    np.testing.assert_array_equal(again.x_test, reference.x_test)


# --- downloads (no internet: file:// URLs and a local HTTP server) ---

@pytest.fixture
def served(tmp_path, real_dir, monkeypatch):
    """A folder serving the four .gz files, and the md5 table of those files."""
    folder = tmp_path / "served"
    link_files(real_dir, folder)
    md5 = {key: hashlib.md5((real_dir / f"{name}.gz").read_bytes()).hexdigest()
           for key, name in IDX_FILES.items()}
    monkeypatch.setattr(cache, "fetch", REAL_FETCH)
    return folder, md5


def test_download_only_when_asked_then_verified_and_loaded(tmp_path, served, monkeypatch):
    folder, md5 = served
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_URLS", (folder.as_uri(),))
    monkeypatch.setattr(fashion_mnist, "FASHION_MNIST_MD5", md5)
    with pytest.raises(DataError, match="--download"):
        load_dataset("fashion-mnist")
    data = load_dataset("fashion-mnist", download=True)
    target = tmp_path / "xdg" / "handprop" / "fashion-mnist"
    assert data.source == str(target)
    assert sorted(p.name for p in target.iterdir()) == sorted([*GZ_NAMES, "decompressed"])
    assert data.y_train[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]


def test_download_goes_to_data_dir_when_given(tmp_path, served):
    folder, md5 = served
    target = download_fashion_mnist(tmp_path / "mine", urls=[folder.as_uri()], md5=md5)
    assert target == tmp_path / "mine" / "fashion-mnist"
    assert all((target / name).is_file() for name in GZ_NAMES)


def test_md5_mismatch_leaves_nothing_behind(tmp_path, served):
    folder, md5 = served
    wrong = dict(md5, train_images="0" * 32)
    with pytest.raises(DataError) as info:
        download_fashion_mnist(urls=[folder.as_uri()], md5=wrong)
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message and "expected " + "0" * 32 in message
    assert "deleted" in message and "by hand" in message
    assert not (tmp_path / "xdg" / "handprop" / "fashion-mnist").exists()
    assert not list(tmp_path.rglob("*.part"))


def test_files_already_there_are_not_fetched_again(tmp_path, served, real_dir, monkeypatch):
    folder, md5 = served
    # The Debian-recompressed files differ from the official .gz but have the right contents.
    target = link_files(real_dir, tmp_path / "mine" / "fashion-mnist",
                        skip={"t10k-labels-idx1-ubyte.gz"})
    fetched = []

    def counting_fetch(url, dest):
        fetched.append(url.rsplit("/", 1)[-1])
        REAL_FETCH(url, dest)

    monkeypatch.setattr(cache, "fetch", counting_fetch)
    download_fashion_mnist(tmp_path / "mine", urls=[folder.as_uri()],
                           md5=dict(md5, train_images="f" * 32))
    assert fetched == ["t10k-labels-idx1-ubyte.gz"]
    assert (target / "t10k-labels-idx1-ubyte.gz").is_file()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_server(tmp_path):
    """A local HTTP server over ``tmp_path/www``: yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _small_set(folder: Path) -> dict:
    """Tiny IDX .gz files under the official names; their md5 table."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {"train_images": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
              "train_labels": np.arange(6, dtype=np.uint8),
              "test_images": rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
              "test_labels": np.array([3, 9], dtype=np.uint8)}
    md5 = {}
    for key, name in IDX_FILES.items():
        write_idx(folder / f"{name}.gz", arrays[key])
        md5[key] = hashlib.md5((folder / f"{name}.gz").read_bytes()).hexdigest()
    return md5


def test_http_download_falls_through_to_the_next_mirror(tmp_path, http_server, monkeypatch):
    root, base = http_server
    md5 = _small_set(root / "good")
    (root / "bad").mkdir()
    (root / "bad" / "train-images-idx3-ubyte.gz").write_bytes(b"not the file")
    monkeypatch.setattr(cache, "fetch", REAL_FETCH)
    target = download_fashion_mnist(tmp_path / "data", urls=[f"{base}/bad", f"{base}/good/"], md5=md5)
    for name in GZ_NAMES:
        assert (target / name).read_bytes() == (root / "good" / name).read_bytes()
    assert not list(target.glob("*.part"))
    # The tiny set is not the official data, so loading it is refused by its checksum.
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz is not the official"):
        load_fashion_mnist(tmp_path / "data")


def test_http_errors_of_every_mirror_are_reported(tmp_path, http_server, monkeypatch):
    root, base = http_server
    md5 = _small_set(root / "good")
    monkeypatch.setattr(cache, "fetch", REAL_FETCH)
    with pytest.raises(DataError) as info:
        download_fashion_mnist(tmp_path / "data", urls=[f"{base}/nowhere", f"{base}/gone"], md5=md5)
    message = str(info.value)
    assert f"{base}/nowhere/train-images-idx3-ubyte.gz" in message
    assert f"{base}/gone/train-images-idx3-ubyte.gz" in message and "HTTP Error 404" in message
    assert message.count("by hand") == 1
    assert not (tmp_path / "data" / "fashion-mnist").exists()


def test_download_does_not_apply_to_mnist_or_the_toy_sets():
    with pytest.raises(ConfigError, match="MNIST ships with handprop"):
        load_dataset("mnist", download=True)
    with pytest.raises(ConfigError, match="--data-dir does not apply to xor"):
        load_dataset("xor", data_dir="somewhere")
