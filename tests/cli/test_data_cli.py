"""``handprop data info``."""

from __future__ import annotations

import argparse
import gzip
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from handprop.cli import COMMAND_MODULES
from handprop.cli import data as data_cli
from handprop.errors import DataError


def run_cli(argv, capsys):
    # The command's own parser, so these tests do not depend on other commands.
    parser = argparse.ArgumentParser(prog="handprop")
    data_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code = args.func(args)
    return code, capsys.readouterr().out


def test_data_is_a_registered_command():
    assert "data" in COMMAND_MODULES


def test_mnist_info_json(capsys):
    code, out = run_cli(["data", "info", "mnist", "--json"], capsys)
    info = json.loads(out)
    assert code == 0
    assert info["train"]["n"] == 60000 and info["test"]["n"] == 10000
    assert sum(info["train"]["class_counts"]) == 60000 and len(info["test"]["class_counts"]) == 10
    assert info["train"]["class_counts"][1] == 6742
    # The well-known raw MNIST statistics (0.1307 and 0.3081 after dividing by 255).
    assert info["train"]["pixel_mean"] == pytest.approx(33.3184, abs=1e-3)
    assert info["train"]["pixel_std"] == pytest.approx(78.5675, abs=1e-3)
    assert info["test"]["pixel_mean"] == pytest.approx(33.7912, abs=1e-3)


def test_xor_info_text(capsys):
    code, out = run_cli(["data", "info", "xor"], capsys)
    assert code == 0
    assert "train        n=21" in out and "0: 11, 1: 10" in out


def test_linear_info_matches_numpy(capsys):
    from handprop.data import make_linear

    code, out = run_cli(["data", "info", "linear", "--json", "--n-linear", "50", "--seed", "3"], capsys)
    info = json.loads(out)
    data = make_linear(50, 3)
    assert info["train"]["pixel_mean"] == pytest.approx(float(data.x_train.mean()))
    assert info["train"]["pixel_std"] == pytest.approx(float(data.x_train.std()))
    assert info["test"]["class_counts"] == np.bincount(data.y_test, minlength=2).tolist()


def test_cifar_info_from_data_dir(tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [1, 4]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [f"c{i}".encode() for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    code, out = run_cli(["data", "info", "cifar10", "--json", "--data-dir", str(tmp_path)], capsys)
    info = json.loads(out)
    assert info["train"]["n"] == 10 and info["train"]["class_counts"][4] == 5
    assert info["class_names"][3] == "c3" and info["input_shape"] == [32, 32, 3]


def test_missing_cifar_is_a_data_error(tmp_path, capsys):
    with pytest.raises(DataError, match="--download"):
        run_cli(["data", "info", "cifar10", "--data-dir", str(tmp_path)], capsys)


def test_command_module_imports_no_numpy():
    code = "import sys, handprop.cli.data; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- Fashion-MNIST and --data-dir through the command line ---

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]


@pytest.fixture
def fashion_dir(fashion_mnist_dir):
    """The real files' folder as a string (``tests/support/real_data.py`` finds it, or skips)."""
    return str(fashion_mnist_dir)


@pytest.fixture(autouse=True)
def isolated_data_places(tmp_path, monkeypatch):
    """Own user cache, no $HANDPROP_DATA, no Debian folder: only what a test names is found."""
    from handprop.data import fashion_mnist

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("HANDPROP_DATA", raising=False)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")


def test_fashion_info_json(fashion_dir, capsys):
    code, out = run_cli(["data", "info", "fashion-mnist", "--json", "--data-dir", fashion_dir], capsys)
    info = json.loads(out)
    assert code == 0
    assert info["name"] == "fashion-mnist" and info["source"] == fashion_dir
    assert info["class_names"] == FASHION_CLASSES and info["classes"] == 10
    assert info["input_shape"] == [28, 28] and info["dtype"] == "uint8"
    assert info["train"]["class_counts"] == [6000] * 10 and info["test"]["class_counts"] == [1000] * 10
    assert info["train"]["pixel_mean"] == pytest.approx(72.9404, abs=1e-3)
    assert info["train"]["pixel_std"] == pytest.approx(90.0212, abs=1e-3)
    assert info["test"]["pixel_mean"] == pytest.approx(73.1466, abs=1e-3)


def test_fashion_info_text_uses_class_names(fashion_dir, monkeypatch, capsys):
    monkeypatch.setenv("HANDPROP_DATA", fashion_dir)  # found through the environment this time
    code, out = run_cli(["data", "info", "fashion-mnist"], capsys)
    assert code == 0 and f"source       {fashion_dir}" in out
    assert "T-shirt/top: 6000" in out and "Ankle boot: 1000" in out


def test_missing_fashion_is_exit_2_naming_places_and_download(tmp_path, capsys):
    from handprop.cli import main

    assert main(["data", "info", "fashion-mnist"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("handprop data: error: Fashion-MNIST was not found")
    for needed in ("--data-dir", "$HANDPROP_DATA", str(tmp_path / "xdg" / "handprop"),
                   str(tmp_path / "no-debian"), "train-images-idx3-ubyte.gz", "--download"):
        assert needed in err
    assert len(err.strip().splitlines()) == 1


def test_fashion_checksum_mismatch_is_exit_2_naming_the_file(tmp_path, fashion_dir, capsys):
    from handprop.cli import main
    from handprop.data import read_idx, write_idx

    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        (folder / name).symlink_to(Path(fashion_dir) / name)
    labels = read_idx(Path(fashion_dir) / "t10k-labels-idx1-ubyte.gz")
    labels[0] = (labels[0] + 1) % 10
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels)
    code = main(["train", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path), "--epochs", "1",
                 "--no-progress", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{folder / 't10k-labels-idx1-ubyte.gz'} is not the official Fashion-MNIST" in err
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory, fashion_mnist_dir):
    """A short real training run on a subset of Fashion-MNIST, through the CLI."""
    from handprop.cli import main

    home = tmp_path_factory.mktemp("fashion")
    out = home / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(home / "xdg"))
        patch.delenv("HANDPROP_DATA", raising=False)
        code = main(["train", "--dataset", "fashion-mnist", "--data-dir", str(fashion_mnist_dir),
                     "--train-subset", "3000", "--val-size", "500", "--hidden", "64",
                     "--activation", "relu", "--optimizer", "adam", "--lr", "0.002",
                     "--batch-size", "64", "--epochs", "3", "--backend", "cpu", "--no-progress",
                     "--out", str(out)])
    assert code == 0
    return out


def test_fashion_training_run_learns_and_keeps_class_names(fashion_run):
    summary = json.loads((fashion_run / "summary.json").read_text())
    saved = json.loads((fashion_run / "config.json").read_text())
    assert summary["dataset"] == "fashion-mnist" and summary["epochs"] == 3
    # 3,000 images for 3 epochs: far above the 10 % of guessing, below a full run.
    assert 0.70 < summary["test_accuracy"] < 0.90
    assert saved["class_names"] == FASHION_CLASSES
    assert saved["input_dim"] == 784 and saved["preprocessing"]["dataset"] == "fashion-mnist"


def test_fashion_evaluate_table_json_and_plots_use_class_names(fashion_run, capsys):
    from handprop.cli import main

    assert main(["evaluate", str(fashion_run)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[2]
    assert "T-shirt/top" in header and "Ankle boot" in header
    assert [line.split()[0] for line in lines[3:5]] == ["T-shirt/top", "Trouser"]
    assert lines[-1].split()[:2] == ["Ankle", "boot"]
    assert main(["evaluate", str(fashion_run), "--json", "--plot"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["class_names"] == FASHION_CLASSES and report["n"] == 10000
    assert np.array(report["confusion_matrix"]).sum(axis=1).tolist() == [1000] * 10
    assert {Path(p).name for p in report["plots"]} == {"confusion-test.png", "mistakes-test.png",
                                                       "weights-layer1.png"}


def _corrupt_mnist_folder(folder):
    from handprop.data import write_idx

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (20, 28, 28), dtype=np.uint8))
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(20, dtype=np.uint8) % 10)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (5, 28, 28), dtype=np.uint8))
    good = gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2, 3, 4, 5]))
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(good[: len(good) - 6])  # cut short


def test_corrupt_mnist_data_dir_is_exit_2_not_the_bundled_copy(tmp_path):
    """As a new user would: `handprop train --data-dir` at corrupt files must not train on anything."""
    _corrupt_mnist_folder(tmp_path / "data")
    env = {k: v for k, v in os.environ.items() if k != "HANDPROP_DATA"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    result = subprocess.run(
        [sys.executable, "-m", "handprop", "train", "--data-dir", str(tmp_path / "data"),
         "--epochs", "1", "--no-progress", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("handprop train: error: IDX file ")
    assert str(tmp_path / "data" / "t10k-labels-idx1-ubyte.gz") in result.stderr
    assert "corrupt or truncated gzip" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "summary.json").exists()


def test_mnist_data_dir_without_files_is_exit_2(tmp_path, capsys):
    from handprop.cli import main

    assert main(["data", "info", "mnist", "--data-dir", str(tmp_path)]) == 2
    assert f"--data-dir {tmp_path} holds no MNIST files" in capsys.readouterr().err


def test_mnist_data_dir_with_valid_files_is_read(tmp_path, capsys):
    _corrupt_mnist_folder(tmp_path)
    from handprop.data import write_idx

    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 3, 4, 5], np.uint8))
    code, out = run_cli(["data", "info", "mnist", "--json", "--data-dir", str(tmp_path)], capsys)
    info = json.loads(out)
    assert code == 0 and info["source"] == str(tmp_path)
    assert info["train"]["n"] == 20 and info["test"]["class_counts"] == [0, 1, 1, 1, 1, 1, 0, 0, 0, 0]


@pytest.mark.parametrize("argv, message", [
    (["data", "info", "mnist", "--download"], "--download does not apply to mnist"),
    (["data", "info", "xor", "--data-dir", "x"], "--data-dir does not apply to xor"),
])
def test_options_that_do_not_apply_are_refused(argv, message, capsys):
    from handprop.cli import main

    assert main(argv) == 2
    assert message in capsys.readouterr().err
