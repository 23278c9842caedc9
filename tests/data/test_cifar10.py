"""CIFAR-10: the python batch format, the restricted unpickler, lookup and verified download.

Every batch here is written by the tests in the official layout (pickle
protocol 2, bytes keys); nothing touches the network.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile

import numpy as np
import pytest

from handprop.data import cache, cifar10, load_dataset
from handprop.data.cifar10 import download_cifar10, load_cifar10
from handprop.data.safe_pickle import safe_load
from handprop.errors import DataError

PER_BATCH = 3
LABEL_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer",
               b"dog", b"frog", b"horse", b"ship", b"truck"]


def _batch(seed: int, n: int = PER_BATCH) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": f"batch {seed}".encode(),
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img{i}.png".encode() for i in range(n)],
    }


def write_fake_cifar(folder) -> dict:
    """Write data_batch_1..5, test_batch and batches.meta; return the batches by name."""
    folder.mkdir(parents=True, exist_ok=True)
    batches = {f"data_batch_{i}": _batch(i) for i in range(1, 6)}
    batches["test_batch"] = _batch(99)
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"num_cases_per_batch": PER_BATCH, b"label_names": LABEL_NAMES, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return batches


def make_archive(path, source_folder, extra=None) -> str:
    """tar.gz of ``source_folder`` as cifar-10-batches-py/; ``extra`` adds raw members. Returns md5."""
    with tarfile.open(path, "w:gz") as tar:
        tar.add(source_folder, arcname="cifar-10-batches-py")
        for info, payload in extra or []:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def no_network(monkeypatch):
    def refuse(url, dest):
        raise AssertionError(f"unexpected fetch of {url}")

    monkeypatch.setattr(cache, "fetch", refuse)


def test_loads_batches_in_official_layout(tmp_path, no_network):
    batches = write_fake_cifar(tmp_path / "cifar-10-batches-py")
    data = load_dataset("cifar10", data_dir=tmp_path)
    assert data.x_train.shape == (5 * PER_BATCH, 32, 32, 3) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (PER_BATCH, 32, 32, 3)
    assert data.y_train.dtype == np.int64
    assert data.y_train.tolist() == sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert data.class_names[0] == "airplane" and data.class_names[9] == "truck"
    # Row layout is R plane, G plane, B plane, each 32x32 row-major -> image[i, j, channel].
    row = batches["data_batch_2"][b"data"][1]
    image = data.x_train[PER_BATCH + 1]
    for channel in range(3):
        assert image[4, 7, channel] == row[channel * 1024 + 4 * 32 + 7]


def test_data_dir_may_be_the_batches_folder_itself(tmp_path, no_network):
    write_fake_cifar(tmp_path / "cifar-10-batches-py")
    data = load_cifar10(tmp_path / "cifar-10-batches-py")
    assert len(data.y_test) == PER_BATCH


def test_lookup_order_env_then_xdg_cache(tmp_path, monkeypatch, no_network):
    write_fake_cifar(tmp_path / "env" / "cifar-10-batches-py")
    write_fake_cifar(tmp_path / "xdg" / "handprop" / "cifar-10-batches-py")
    monkeypatch.setenv("HANDPROP_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert load_cifar10().source == str(tmp_path / "env" / "cifar-10-batches-py")
    monkeypatch.delenv("HANDPROP_DATA")
    assert load_cifar10().source == str(tmp_path / "xdg" / "handprop" / "cifar-10-batches-py")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.default_cache_dir() == tmp_path / "home" / ".cache" / "handprop"


def test_offline_error_says_where_to_put_which_files(tmp_path, no_network):
    with pytest.raises(DataError) as info:
        load_cifar10(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    for needed in ("data_batch_1", "data_batch_5", "test_batch", "batches.meta", "--download",
                   cifar10.CIFAR10_URL, cifar10.CIFAR10_MD5):
        assert needed in message


def test_partial_folder_names_the_missing_files(tmp_path, no_network):
    write_fake_cifar(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="lacks data_batch_3\\. "):
        load_cifar10(tmp_path)


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_calling_os_system_is_refused(tmp_path, no_network):
    folder = tmp_path / "cifar-10-batches-py"
    write_fake_cifar(folder)
    marker = tmp_path / "pwned"
    hostile = {b"data": _RunsShell(marker), b"labels": [0]}
    (folder / "data_batch_1").write_bytes(pickle.dumps(hostile, protocol=2))
    with pytest.raises(DataError, match=r"refusing to load (posix|nt|os)\.system in .*data_batch_1"):
        load_cifar10(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    b"cbuiltins\neval\n(S'1+1'\ntR.",
    b"csubprocess\ncall\n(S'true'\ntR.",
    b"ccopyreg\n_reconstructor\n.",
])
def test_other_globals_are_refused(tmp_path, payload):
    path = tmp_path / "evil"
    path.write_bytes(payload)
    with pytest.raises(DataError, match="refusing to load"):
        safe_load(path)


def test_truncated_or_malformed_batches_are_data_errors(tmp_path, no_network):
    folder = tmp_path / "cifar-10-batches-py"
    write_fake_cifar(folder)
    good = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="test_batch.*truncated"):
        load_cifar10(tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({b"labels": [1]}, protocol=2))
    with pytest.raises(DataError, match="no 'data' entry"):
        load_cifar10(tmp_path)
    bad = _batch(5)
    bad[b"labels"][0] = 10
    (folder / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match="0..9"):
        load_cifar10(tmp_path)
    bad = _batch(5)
    bad[b"data"] = bad[b"data"][:, :100]
    (folder / "test_batch").write_bytes(pickle.dumps(bad, protocol=2))
    with pytest.raises(DataError, match=r"shape \(n, 3072\)"):
        load_cifar10(tmp_path)


def test_numpy1_module_name_of_the_official_files_is_accepted(tmp_path):
    # The official files (NumPy 1, Python 2) name numpy.core.multiarray._reconstruct.
    batch = _batch(1)
    payload = pickle.dumps(batch, protocol=2)
    assert b"numpy._core.multiarray" in payload
    path = tmp_path / "data_batch_1"
    path.write_bytes(payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    loaded = safe_load(path)
    np.testing.assert_array_equal(loaded[b"data"], batch[b"data"])
    assert loaded[b"labels"] == batch[b"labels"]


# --- download path (file:// URLs and a patched fetch; no internet) ---

def _serve_archive(tmp_path, monkeypatch, extra=None):
    source = tmp_path / "src"
    write_fake_cifar(source)
    archive = tmp_path / "served.tar.gz"
    md5 = make_archive(archive, source, extra)
    monkeypatch.setattr(cifar10, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(cifar10, "CIFAR10_MD5", md5)
    return archive, md5


def test_download_only_when_asked_then_verified_and_extracted(tmp_path, monkeypatch):
    _serve_archive(tmp_path, monkeypatch)
    target = tmp_path / "data"
    with pytest.raises(DataError, match="--download"):
        load_cifar10(target)
    data = load_cifar10(target, download=True)
    assert data.x_train.shape[0] == 5 * PER_BATCH
    assert (target / "cifar-10-python.tar.gz").is_file()
    assert not list(target.glob("*.part")) and not list(target.glob(".extract-*"))


def test_archive_already_in_data_dir_is_used_without_fetching(tmp_path, monkeypatch, no_network):
    archive, _ = _serve_archive(tmp_path, monkeypatch)
    target = tmp_path / "data"
    target.mkdir()
    (target / "cifar-10-python.tar.gz").write_bytes(archive.read_bytes())
    assert len(load_cifar10(target).y_test) == PER_BATCH


def test_md5_mismatch_deletes_download_and_says_so(tmp_path, monkeypatch):
    archive, _ = _serve_archive(tmp_path, monkeypatch)
    target = tmp_path / "data"
    with pytest.raises(DataError, match=r"md5 [0-9a-f]{32}, expected 0{32}.*deleted"):
        download_cifar10(target, url=archive.as_uri(), md5="0" * 32)
    assert not (target / "cifar-10-python.tar.gz").exists()
    assert not (target / "cifar-10-python.tar.gz.part").exists()
    assert not (target / "cifar-10-batches-py").exists()


def test_unreachable_url_gives_manual_instructions(tmp_path):
    with pytest.raises(DataError, match=r"could not download.*extract it so that"):
        download_cifar10(tmp_path, url=(tmp_path / "missing.tar.gz").as_uri(), md5="0" * 32)


def test_fetch_is_the_only_network_seam(tmp_path, monkeypatch):
    archive, md5 = _serve_archive(tmp_path, monkeypatch)
    seen = []

    def fake_fetch(url, dest):
        seen.append(url)
        dest.write_bytes(archive.read_bytes())

    monkeypatch.setattr(cache, "fetch", fake_fetch)
    download_cifar10(tmp_path / "data", url="https://example.invalid/c.tgz", md5=md5)
    assert seen == ["https://example.invalid/c.tgz"]


def _member(name, kind=tarfile.REGTYPE, payload=b"x", linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(payload) if kind == tarfile.REGTYPE else 0
    return info, payload if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize("member", [
    _member("../escaped.txt"),
    _member("cifar-10-batches-py/../../escaped.txt"),
    _member("/tmp/handprop-absolute-escape.txt"),
    _member("cifar-10-batches-py/link", tarfile.SYMTYPE, linkname="../../escaped.txt"),
    _member("cifar-10-batches-py/hard", tarfile.LNKTYPE, linkname="/etc/passwd"),
    _member("cifar-10-batches-py/fifo", tarfile.FIFOTYPE),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink", "fifo"])
def test_unsafe_archive_members_are_refused_before_writing(tmp_path, monkeypatch, member):
    _serve_archive(tmp_path, monkeypatch, extra=[member])
    target = tmp_path / "deep" / "data"
    with pytest.raises(DataError, match="refusing to extract"):
        load_cifar10(target, download=True)
    assert not (tmp_path / "deep" / "escaped.txt").exists()
    assert not (tmp_path / "escaped.txt").exists()
    # Checked before anything is extracted: no half-written folder remains.
    assert not (target / "cifar-10-batches-py").exists()


def test_corrupt_archive_is_a_data_error(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b" + b"not really gzip" * 10)
    with pytest.raises(DataError, match="download again"):
        cache.safe_extract_tar(bad, tmp_path / "out")
