"""`handprop train`, `evaluate` and `predict` from the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from handprop.cli import main

QUICK = ["--train-subset", "400", "--val-size", "100", "--hidden", "16", "--epochs", "2",
         "--batch-size", "32", "--backend", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *QUICK, "--lr", "0.5", "--out", str(out)]) == 0
    return out


def test_train_prints_where_the_results_are(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *QUICK, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "test accuracy" in text and str(out / "curves.png") in text
    assert str(out / "summary.json") in text


def test_toml_config_with_flags_winning(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('[train]\nhidden = [24, 12]\nactivation = "relu"\nlr = 0.05\nepochs = 1\n'
                      'optimizer = "nesterov"\nmomentum = 0.8\n')
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), *QUICK, "--lr", "0.02", "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["hidden"] == [16]  # the flag in QUICK wins over the file
    assert saved["activation"] == "relu" and saved["optimizer"] == "nesterov"
    assert saved["momentum"] == 0.8 and saved["lr"] == 0.02 and saved["epochs"] == 2


@pytest.mark.parametrize("args, message", [
    (["--lr", "0"], "lr must be a number > 0"),
    (["--lr", "-0.1"], "lr must be a number > 0"),
    (["--activation", "swish"], "activation"),
    (["--optimizer", "lbfgs"], "optimizer must be one of"),
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["--hidden", "10,abc"], "hidden widths"),
    (["--batch-size", "0"], "batch_size must be a whole number >= 1"),
    (["--momentum", "1.5"], "momentum must be in [0, 1)"),
    (["--patience", "2", "--val-size", "0"], "set val_size > 0"),
    (["--config", "/nonexistent/x.toml"], "config file not found"),
    (["--backend", "tpu"], "unknown engine 'tpu'; valid names are: cpu, numba, cuda, auto"),
    (["--dropout", "1"], "dropout must be in [0, 1)"),
    (["--batch-norm", "--batch-size", "1"], "needs batch_size >= 2"),
])
def test_user_mistakes_exit_2_with_one_line(tmp_path, capsys, args, message):
    code = main(["train", "--train-subset", "50", "--epochs", "1", "--no-progress",
                 "--out", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_toml_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("hidden = [1,\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "is not valid TOML" in capsys.readouterr().err
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("hiden = 3\n")
    assert main(["train", "--config", str(unknown)]) == 2
    assert "unknown training option 'hiden'; did you mean hidden?" in capsys.readouterr().err


def test_evaluate_json_has_a_consistent_confusion_matrix(trained_run, capsys):
    assert main(["evaluate", str(trained_run), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    matrix = np.array(report["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == report["n"] == 10000
    assert report["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    summary = json.loads((trained_run / "summary.json").read_text())
    assert report["accuracy"] == pytest.approx(summary["test_accuracy"])
    assert report["loss"] == pytest.approx(summary["test_loss"], rel=1e-5)


def test_evaluate_table_and_missing_folder(trained_run, tmp_path, capsys):
    assert main(["evaluate", str(trained_run), "--split", "val"]) == 0
    text = capsys.readouterr().out
    assert "val: 100 samples" in text and "confusion matrix" in text
    assert main(["evaluate", str(tmp_path / "nothing")]) == 2
    assert "not a handprop run folder" in capsys.readouterr().err


def test_predict_npy_and_image_agree_with_evaluate(trained_run, tmp_path, capsys):
    from PIL import Image

    from handprop.data import load_dataset

    data = load_dataset("mnist")
    np.save(tmp_path / "five.npy", data.x_test[:5])
    assert main(["predict", str(trained_run), str(tmp_path / "five.npy"), "--json"]) == 0
    batch = json.loads(capsys.readouterr().out)["samples"]
    assert len(batch) == 5 and all(len(s["top"]) == 3 for s in batch)
    assert all(s["top"][0]["score"] >= s["top"][1]["score"] for s in batch)
    # A single 28x28 sample, and the same digit saved as a PNG, give the same class.
    np.save(tmp_path / "one.npy", data.x_test[0])
    Image.fromarray(data.x_test[0]).save(tmp_path / "one.png")
    assert main(["predict", str(trained_run), str(tmp_path / "one.npy"), "--json"]) == 0
    from_npy = json.loads(capsys.readouterr().out)["samples"][0]["prediction"]
    assert main(["predict", str(trained_run), str(tmp_path / "one.png"), "--json"]) == 0
    from_png = json.loads(capsys.readouterr().out)["samples"][0]["prediction"]
    assert from_npy == from_png == batch[0]["prediction"]


@pytest.mark.parametrize("content, message", [
    (np.zeros((2, 5)), "do not fit this model"),
    (np.full((28, 28), np.nan), "NaN"),
])
def test_predict_refuses_bad_arrays(trained_run, tmp_path, capsys, content, message):
    np.save(tmp_path / "bad.npy", content)
    assert main(["predict", str(trained_run), str(tmp_path / "bad.npy")]) == 2
    assert message in capsys.readouterr().err


def test_predict_refuses_unknown_files(trained_run, tmp_path, capsys):
    (tmp_path / "x.txt").write_text("1 2 3")
    assert main(["predict", str(trained_run), str(tmp_path / "x.txt")]) == 2
    assert "give a .npy array or an image" in capsys.readouterr().err
    assert main(["predict", str(trained_run), str(tmp_path / "missing.npy")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_a_relative_data_dir_is_saved_absolute_so_evaluate_works_from_elsewhere(
        tmp_path, monkeypatch, capsys):
    import shutil
    from pathlib import Path

    import handprop

    bundled = Path(handprop.__file__).parent / "data" / "mnist"
    work = tmp_path / "work"
    shutil.copytree(bundled, work / "mydata")
    monkeypatch.chdir(work)
    assert main(["train", *QUICK, "--epochs", "1", "--data-dir", "mydata", "--out", "run"]) == 0
    saved = json.loads((work / "run" / "config.json").read_text())["config"]
    assert saved["data_dir"] == str(work / "mydata")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["evaluate", str(work / "run"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 10000
