"""``tests/support/real_data.py``: where the tests look for the real Fashion-MNIST, and skip or fail.

Every lookup here gets explicit places holding empty stand-in files (only
their presence is checked), so none of these tests needs the real data; the
end-to-end runs at the bottom drive conftest's ``--data-dir`` in a child pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import real_data
from handprop.data import fashion_mnist

# Set by the end-to-end runs below: the folder the child pytest must have found.
EXPECT_ENV = "HANDPROP_TEST_EXPECT_FASHION"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """As the data tests do: no $HANDPROP_DATA, an own cache, a Debian folder that is not there."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("HANDPROP_DATA", raising=False)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")


def stand_ins(folder: Path, names=real_data.GZ_NAMES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


@pytest.fixture
def places(tmp_path):
    """Five empty places, passed explicitly, so the machine's own data never leaks in."""
    return {"environ": {}, "cache_dir": tmp_path / "cache", "debian_dir": tmp_path / "debian",
            "sibling": tmp_path / "shared" / "data" / "fashion-mnist"}


@pytest.mark.parametrize("route", ["data_dir", "env", "cache", "debian", "sibling"])
def test_each_route_is_found(route, places, tmp_path):
    where = {"data_dir": tmp_path / "mine", "env": tmp_path / "env" / "fashion-mnist",
             "cache": places["cache_dir"] / "fashion-mnist", "debian": places["debian_dir"],
             "sibling": places["sibling"]}[route]
    stand_ins(where)
    data_dir = tmp_path / "mine" if route == "data_dir" else None
    if route == "env":
        places["environ"] = {"HANDPROP_DATA": str(tmp_path / "env")}
    assert real_data.find_fashion_mnist(data_dir, **places) == where.resolve()


def test_order_is_data_dir_env_cache_debian_sibling(places, tmp_path):
    env = stand_ins(tmp_path / "env")  # the files directly in $HANDPROP_DATA
    order = [env, stand_ins(places["cache_dir"]), stand_ins(places["debian_dir"] / "fashion-mnist"),
             stand_ins(places["sibling"])]
    places["environ"] = {"HANDPROP_DATA": str(env)}
    mine = stand_ins(tmp_path / "mine" / "fashion-mnist")
    assert real_data.find_fashion_mnist(tmp_path / "mine", **places) == mine
    for folder in order:
        assert real_data.find_fashion_mnist(**places) == folder
        (folder / real_data.GZ_NAMES[0]).unlink()
    assert real_data.find_fashion_mnist(**places) is None


def test_the_subfolder_is_looked_at_first(places, tmp_path):
    stand_ins(tmp_path / "env")
    sub = stand_ins(tmp_path / "env" / "fashion-mnist")
    places["environ"] = {"HANDPROP_DATA": str(tmp_path / "env")}
    assert real_data.find_fashion_mnist(**places) == sub


def test_data_dir_is_the_only_place_searched_when_given(places, tmp_path):
    stand_ins(places["sibling"])
    (tmp_path / "typo").mkdir()
    assert real_data.find_fashion_mnist(tmp_path / "typo", **places) is None
    message = real_data.not_found_message(tmp_path / "typo", **places)
    assert f"{tmp_path / 'typo'} (--data-dir)" in message and "the only one searched" in message


def test_three_files_or_only_decompressed_ones_are_not_enough(places):
    # The tests link, serve and hash the .gz files, so decompressed copies do not do.
    stand_ins(places["debian_dir"], real_data.GZ_NAMES[:3])
    stand_ins(places["sibling"], [name.removesuffix(".gz") for name in real_data.GZ_NAMES])
    assert real_data.find_fashion_mnist(**places) is None


def test_the_message_names_every_place_the_files_and_the_fix(places, tmp_path):
    message = real_data.not_found_message(**places)
    for needed in ("--data-dir (not given)", "$HANDPROP_DATA (not set)", str(places["cache_dir"]),
                   str(places["debian_dir"]), str(places["sibling"]), "../shared/data/fashion-mnist",
                   "`pytest --data-dir DIR`", "`HANDPROP_DATA=DIR pytest`", *real_data.GZ_NAMES):
        assert needed in message
    places["environ"] = {"HANDPROP_DATA": str(tmp_path / "env")}
    assert f"$HANDPROP_DATA {tmp_path / 'env'}" in real_data.not_found_message(**places)


@pytest.mark.parametrize("environ, strict", [({"CI": "true"}, True), ({"CI": "True"}, True),
                                             ({}, False), ({"CI": "false"}, False), ({"CI": ""}, False)])
def test_ci_true_makes_missing_data_a_failure(environ, strict):
    assert real_data.missing_is_failure(environ) is strict


def test_require_returns_skips_or_fails(tmp_path):
    assert real_data.require(tmp_path, "unused", strict=True) == tmp_path
    with pytest.raises(pytest.skip.Exception, match="put them in DIR"):
        real_data.require(None, "put them in DIR", strict=False)
    with pytest.raises(pytest.fail.Exception, match="put them in DIR"):
        real_data.require(None, "put them in DIR", strict=True)


def test_the_sibling_is_beside_this_repository():
    root = Path(__file__).resolve().parents[2]
    assert (root / "pyproject.toml").is_file() and real_data.REPO_ROOT == root
    assert real_data.SIBLING == root.parent / "shared" / "data" / "fashion-mnist"
    assert real_data.search_places(environ={})[-1] == (real_data.SIBLING_LABEL, real_data.SIBLING)


def test_probe_the_folder_the_session_found(fashion_mnist_dir):
    """Any run: the folder holds the files. Run alone by the tests below: it is the one they set."""
    assert real_data.holds_files(fashion_mnist_dir)
    if os.environ.get(EXPECT_ENV):
        assert fashion_mnist_dir == Path(os.environ[EXPECT_ENV]).resolve()


def run_probe(tmp_path, *args, **env) -> subprocess.CompletedProcess:
    """A child pytest running only the probe, with a clean CI/HANDPROP_DATA and ``env`` added."""
    base = {k: v for k, v in os.environ.items() if k not in ("CI", "HANDPROP_DATA", EXPECT_ENV)}
    base["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               f"{__file__}::test_probe_the_folder_the_session_found", *args]
    return subprocess.run(command, cwd=real_data.REPO_ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=300)


def test_end_to_end_data_dir_option_and_env_var(tmp_path):
    mine = stand_ins(tmp_path / "mine" / "fashion-mnist")
    result = run_probe(tmp_path, "--data-dir", str(tmp_path / "mine"), **{EXPECT_ENV: str(mine)})
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout + result.stderr
    # Found through $HANDPROP_DATA although this module's autouse fixture deletes it.
    env = stand_ins(tmp_path / "env")
    result = run_probe(tmp_path, HANDPROP_DATA=str(env), **{EXPECT_ENV: str(env)})
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("ci, outcome", [(None, "1 skipped"), ("true", "1 error")])
def test_end_to_end_missing_data_skips_or_fails_under_ci(tmp_path, ci, outcome):
    (tmp_path / "empty").mkdir()
    result = run_probe(tmp_path, "--data-dir", str(tmp_path / "empty"), **({"CI": ci} if ci else {}))
    output = result.stdout + result.stderr
    assert outcome in output and (result.returncode != 0) == bool(ci), output
    assert f"neither {tmp_path / 'empty' / 'fashion-mnist'} nor {tmp_path / 'empty'}" in output
    assert ("SKIPPED" if not ci else "Failed: real Fashion-MNIST not found") in output
