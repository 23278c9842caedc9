"""Every flag is applied or refused with a message that says what it needs; none is dropped."""

from __future__ import annotations

import json

import numpy as np
import pytest

from handprop.cli import main

TINY = ["--dataset", "xor", "--hidden", "3", "--val-size", "0", "--batch-size", "4",
        "--backend", "cpu", "--no-progress"]


def _refused(capsys, argv, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    for word in words:
        assert word in err, err
    return err


@pytest.mark.parametrize("extra, flag, needs", [
    (["--optimizer", "adam", "--momentum", "0.5"], "--momentum", "--optimizer momentum or nesterov"),
    (["--optimizer", "sgd", "--beta1", "0.8"], "--beta1", "--optimizer adam"),
    (["--optimizer", "momentum", "--eps", "1e-6"], "--eps", "--optimizer adam"),
    (["--decay-rate", "0.3"], "--decay-rate", "--schedule step or exponential"),
    (["--schedule", "step", "--eta-min", "0.01"], "--eta-min", "--schedule cyclic"),
    (["--schedule", "cyclic", "--decay-k", "0.1"], "--decay-k", "--schedule inverse_time"),
])
def test_train_refuses_an_option_its_configuration_would_not_use(tmp_path, capsys, extra, flag,
                                                                  needs):
    out = tmp_path / "run"
    _refused(capsys, ["train", *TINY, "--epochs", "1", *extra, "--out", str(out)], flag, needs)
    assert not out.exists()  # nothing started, nothing written


def test_the_same_options_are_applied_where_they_are_used(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--optimizer", "nesterov", "--momentum", "0.5",
                 "--schedule", "cyclic", "--eta-min", "0.01", "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["momentum"] == 0.5 and saved["eta_min"] == 0.01


def test_a_toml_option_that_would_not_be_used_is_refused_too(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('[train]\noptimizer = "adam"\nmomentum = 0.8\n')
    _refused(capsys, ["train", "--config", str(config), *TINY, "--out", str(tmp_path / "r")],
             "--momentum")


def test_resume_refuses_options_that_would_change_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "2", "--lr", "1", "--out", str(out)]) == 0
    _refused(capsys, ["train", "--resume", str(out), "--lr", "0.5"], "--lr",
             "only --backend and --epochs")
    _refused(capsys, ["train", "--resume", str(out), "--out", str(tmp_path / "other")], "--out")
    _refused(capsys, ["train", "--resume", str(out), "--epochs", "1"], "at least 2")


def test_resume_with_more_epochs_trains_on_exactly_like_a_longer_run(tmp_path):
    short, long = tmp_path / "short", tmp_path / "long"
    assert main(["train", *TINY, "--epochs", "2", "--lr", "1", "--out", str(short)]) == 0
    assert main(["train", "--resume", str(short), "--epochs", "5", "--no-progress"]) == 0
    assert main(["train", *TINY, "--epochs", "5", "--lr", "1", "--out", str(long)]) == 0
    a, b = np.load(short / "model.npz"), np.load(long / "model.npz")
    assert sorted(a.files) == sorted(b.files)
    for name in a.files:
        assert np.array_equal(a[name], b[name]), name
    assert json.loads((short / "config.json").read_text())["config"]["epochs"] == 5
    assert json.loads((short / "summary.json").read_text())["epochs"] == 5


@pytest.mark.parametrize("flag, value", [("--lr", "0.1"), ("--epochs", "3"),
                                         ("--schedule", "step"), ("--patience", "2")])
def test_lr_find_refuses_what_the_range_test_sets_itself(tmp_path, capsys, flag, value):
    png = tmp_path / "lr.png"
    _refused(capsys, ["lr-find", *TINY, flag, value, "--steps", "20", "--out", str(png)], flag)
    assert not png.exists()


def test_lr_find_takes_a_training_toml_and_replaces_its_rate(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('[train]\nlr = 0.3\nepochs = 7\nhidden = [3]\n')
    png = tmp_path / "lr.png"
    assert main(["lr-find", "--config", str(config), *TINY, "--steps", "20", "--json",
                 "--out", str(png)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["lrs"][0] == pytest.approx(1e-6)  # the ramp, not the file's 0.3
    assert png.exists()


def test_sweep_refuses_an_option_no_trial_would_use(tmp_path, capsys):
    _refused(capsys, ["sweep", *TINY, "--grid", "lr=0.1,1", "--momentum", "0.5", "--dry-run",
                      "--out", str(tmp_path / "s")], "--momentum", "every trial")


def test_sweep_applies_an_option_some_trials_use(tmp_path, capsys):
    assert main(["sweep", *TINY, "--val-size", "4", "--grid", "optimizer=sgd,momentum",
                 "--momentum", "0.5", "--dry-run", "--out", str(tmp_path / "s")]) == 0
    assert "2 trials" in capsys.readouterr().out


@pytest.mark.parametrize("flags, words", [(["--workers", "0"], ["--workers"]),
                                          (["--workers", "2", "--threads", "64"], ["oversubscribe"])])
def test_sweep_dry_run_checks_the_workers_too(tmp_path, capsys, flags, words):
    _refused(capsys, ["sweep", *TINY, "--val-size", "4", "--grid", "lr=0.1,1", *flags,
                      "--dry-run", "--out", str(tmp_path / "s")], *words)


@pytest.mark.parametrize("argv, words", [
    (["--activation", "swishy"], ["invalid choice", "relu", "lecun_tanh"]),
    (["--activation", "relu"], ["--activation", "give --hidden"]),
    (["--dropout", "0.3"], ["--dropout", "give --hidden"]),
    (["--conv", "--activation", "relu"], ["--conv", "--activation"]),
    (["--tolerance", "0"], ["--tolerance"]),
])
def test_gradcheck_refuses_flags_it_would_not_apply(capsys, argv, words):
    try:
        code = main(["gradcheck", "--backend", "cpu", *argv])
    except SystemExit as exc:  # argparse's own refusal of an invalid choice
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err


def test_gradcheck_applies_the_activation_to_the_hidden_layers(capsys):
    assert main(["gradcheck", "--backend", "cpu", "--hidden", "5", "--activation", "sigmoid",
                 "--loss", "mse", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"]


def test_a_relu_kink_failure_says_what_it_is(capsys):
    # Seed 0 leaves a whole sample's hidden units off, so the next layer's input sits
    # exactly at the kink: finite differences cannot match there.
    assert main(["gradcheck", "--backend", "cpu", "--hidden", "4,3", "--activation", "relu",
                 "--loss", "mse"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "kink at 0" in out


@pytest.mark.parametrize("argv", [["compare", "RUN", "--out", "curves.txt"],
                                  ["lr-find", *TINY, "--steps", "20", "--out", "lr.csv"],
                                  ["bench", "--quick", "--plot", "bars.json"]])
def test_a_picture_name_without_a_picture_format_is_refused_before_the_work(
        tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    if argv[0] == "compare":
        assert main(["train", *TINY, "--epochs", "1", "--out", "RUN"]) == 0
        capsys.readouterr()
    err = _refused(capsys, argv, "cannot draw a picture as", ".png")
    assert "Traceback" not in err
