"""``handprop data info``."""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys

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
