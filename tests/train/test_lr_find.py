"""The learning-rate range test (`handprop lr-find`)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from handprop.cli import main
from handprop.errors import ConfigError
from handprop.train.config import make_config
from handprop.train.lr_find import ExponentialRamp, find_suggestions, lr_range_test, smooth
from handprop.train.run import run_training

SMALL = {"train_subset": 3000, "val_size": 1000, "hidden": [32], "activation": "sigmoid",
         "optimizer": "sgd", "batch_size": 32, "backend": "cpu"}


def test_ramp_is_geometric_from_min_to_max_and_then_holds():
    ramp = ExponentialRamp(1e-4, 1e6, 11)
    assert [ramp(t) for t in range(11)] == pytest.approx([10.0**k for k in range(-4, 7)])
    assert ramp(50) == pytest.approx(1e6)


@pytest.mark.parametrize("lr_min, lr_max, steps, message", [
    (1.0, 1.0, 100, "0 < lr-min < lr-max"), (0.0, 1.0, 100, "0 < lr-min < lr-max"),
    (1e-3, math.inf, 100, "0 < lr-min < lr-max"), (1e-3, 1.0, 5, "at least 10 steps")])
def test_ramp_refuses_bad_ranges(lr_min, lr_max, steps, message):
    with pytest.raises(ConfigError, match=message):
        ExponentialRamp(lr_min, lr_max, steps)


def test_smoothing_is_bias_corrected():
    np.testing.assert_allclose(smooth([2.0] * 6), [2.0] * 6)  # no pull toward 0 at the start
    # beta 0.5: (0.5 * 1) / 0.5 = 1; (0.5 * 0.5 + 0.5 * 3) / 0.75 = 7/3.
    np.testing.assert_allclose(smooth([1.0, 3.0], beta=0.5), [1.0, 7 / 3])


def test_suggestions_on_a_known_curve():
    lrs = np.logspace(-6, 1, 200)
    x = np.log10(lrs)
    # A sigmoid drop centred at 1e-2, then a blow-up past 10**-0.5.
    loss = 2.0 - 1.5 / (1 + np.exp(-3 * (x + 2))) + np.where(x > -0.5, 5 * (x + 0.5) ** 2, 0.0)
    steepest, minimum = find_suggestions(lrs, loss)
    assert abs(math.log10(steepest) - (-2)) < 0.1
    assert 10**-1 < minimum < 10**-0.3
    flat_steepest, flat_minimum = find_suggestions(lrs, np.full(200, 2.0))
    assert flat_steepest is None and flat_minimum == lrs[0]
    assert find_suggestions(lrs[:5], loss[:5]) == (None, None)  # too short to say


def test_range_test_on_mnist_suggests_a_rate_that_trains():
    config = make_config(SMALL)
    result = lr_range_test(config, 1e-4, 100.0, 120, progress=False)
    assert result.stopped.startswith("the smoothed loss passed 4x its minimum")
    assert len(result.lrs) < 120 and result.lrs[-1] < 100.0  # it stopped at the blow-up
    assert result.lrs == sorted(result.lrs) and result.lrs[0] == pytest.approx(1e-4)
    assert 0.05 < result.suggestion < 5 and result.suggestion == pytest.approx(result.minimum / 10)
    again = lr_range_test(config, 1e-4, 100.0, 120, progress=False)
    assert again.losses == result.losses  # reproducible from the seed

    def accuracy(lr):
        summary = run_training({**config, "lr": lr, "epochs": 2}, None, progress=False,
                               log=lambda *a: None)
        return summary["final_val_accuracy"]

    assert accuracy(result.suggestion) > 0.8
    assert accuracy(1e-3) < 0.5  # a rate from the flat start of the curve barely learns


def test_cli_writes_the_plot_and_json(tmp_path, capsys):
    out = tmp_path / "lr.png"
    flags = ["--train-subset", "1000", "--val-size", "0", "--hidden", "16", "--optimizer", "adam",
             "--batch-size", "32", "--backend", "cpu", "--steps", "60", "--out", str(out)]
    assert main(["lr-find", *flags, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["plot"] == str(out) and out.stat().st_size > 10_000
    assert len(report["lrs"]) == len(report["losses"]) == len(report["smoothed"]) <= 60
    assert report["suggestion"] == pytest.approx(report["minimum"] / 10)
    assert main(["lr-find", *flags, "--no-progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].startswith(f"suggested: --lr {report['suggestion']:.2g}")
    assert lines[-1] == f"plot: {out}"


def test_cli_bad_range_is_one_line(capsys):
    assert main(["lr-find", "--lr-min", "1", "--lr-max", "0.1", "--backend", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "0 < lr-min < lr-max" in err and len(err.strip().splitlines()) == 1


def test_cli_says_when_the_range_ends_too_early(tmp_path, capsys):
    assert main(["lr-find", "--dataset", "xor", "--hidden", "3", "--loss", "mse", "--val-size", "0",
                 "--batch-size", "21", "--steps", "40", "--lr-max", "0.01", "--backend", "cpu",
                 "--no-progress", "--out", str(tmp_path / "x.png")]) == 0
    assert "a larger --lr-max would show where it turns" in capsys.readouterr().out
