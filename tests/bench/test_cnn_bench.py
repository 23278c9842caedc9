"""The MNIST CNN in the benchmark: its plan, the handprop model it trains, the GEMM-only
ceiling of its step, and `handprop bench --cnn`. No speed is asserted (the comparators'
equivalence with handprop is in test_comparators.py)."""

from __future__ import annotations

import numpy as np
import pytest

from handprop import bench
from handprop.cli import main


def test_the_cnn_is_the_issues_model():
    model = bench.handprop_cnn()
    assert [layer.describe() for layer in model.layers] == [
        "Conv2D(16, 5x5, same, relu)", "MaxPool2D(2x2)", "Conv2D(32, 5x5, same, relu)",
        "MaxPool2D(2x2)", "Flatten", "Dense(10, identity)"]
    x, y = bench.bench_data(bench.CNN_MODEL, 5)
    assert x.shape == (5, 1, 28, 28) and y.shape == (5,)
    np.testing.assert_array_equal(x.reshape(5, -1), bench.mnist_slice(5)[0])
    assert bench.model_name(bench.CNN_MODEL) == bench.CNN_MODEL
    assert bench.model_name(([100], "sigmoid")) == "784-100-10 sigmoid"


def test_the_cnn_plan_is_asked_for_by_name():
    assert all(not bench.is_cnn(m) for m, _, _ in bench.plan_configs())  # not by default
    assert bench.plan_configs([bench.CNN_MODEL]) == [
        (bench.CNN_MODEL, 64, "sgd"), (bench.CNN_MODEL, 64, "adam"),
        (bench.CNN_MODEL, 128, "sgd"), (bench.CNN_MODEL, 128, "adam")]
    assert bench.plan_configs([bench.CNN_MODEL], optimizers=["sgd"]) == [
        (bench.CNN_MODEL, 64, "sgd"), (bench.CNN_MODEL, 128, "sgd")]


def test_the_ceiling_runs_the_cnn_layers_gemms():
    runner = bench.ceiling_runner(bench.CNN_MODEL, 2, 1)
    assert isinstance(runner, bench.CnnCeilingRunner)
    runner.step()
    conv1, conv2, dense = runner.layers
    assert conv1["cols"].shape == (2 * 784, 25) and conv2["cols"].shape == (2 * 196, 400)
    assert conv1["dcols"] is None and conv2["dcols"].shape == (2 * 196, 400)  # no dx for conv1
    np.testing.assert_allclose(conv2["z"], conv2["cols"] @ conv2["W"].T, rtol=1e-5)
    np.testing.assert_allclose(conv2["dWT"], conv2["cols"].T @ conv2["dz"], rtol=1e-4)
    np.testing.assert_allclose(conv2["dcols"], conv2["dz"] @ conv2["W"], rtol=1e-5, atol=1e-6)
    assert dense["W"].T.flags.c_contiguous  # Dense keeps W as (in, out)
    # conv1 2 GEMMs, conv2 3, dense 3; 2 FLOPs per multiply-add
    want = 2 * 2 * (2 * 784 * 25 * 16 + 3 * 196 * 400 * 32 + 3 * 1568 * 10)
    assert runner.flops_per_step == want == bench.model_step_flops(bench.CNN_MODEL, 2)
    assert runner.run() > 0


def test_a_cnn_row_trains_through_the_trainer():
    rows = bench.measure_training([bench.CNN_MODEL], [4], ["sgd"], ["numba"], repeats=1,
                                  steps=2, comparators=[], sgemm=bench.Stat([1.0]))
    (row,) = rows
    assert (row["engine"], row["model"], row["batch"]) == ("numba", bench.CNN_MODEL, 4)
    assert row["samples_per_s"] > 0 and row["ceiling_samples_per_s"] > 0
    assert row["ceiling_share"] == pytest.approx(row["samples_per_s"]
                                                 / row["ceiling_samples_per_s"])


@pytest.mark.parametrize("argv, models", [
    # --quick leaves the batch-1 row out
    (["--cnn"], [m for m, _, _ in bench.PLAN if m != "784-300-10 sigmoid"] + [bench.CNN_MODEL]),
    (["--cnn", "--models", "0"], ["784-100-10 sigmoid", bench.CNN_MODEL]),
    (["--models", "cnn"], [bench.CNN_MODEL]),
    (["--models", "3"], [bench.CNN_MODEL]),
    (["--models", bench.CNN_MODEL, "--cnn"], [bench.CNN_MODEL]),
])
def test_bench_cli_asks_for_the_cnn(argv, models, monkeypatch):
    from handprop.cli import bench as cli_bench

    assert cli_bench.CNN_NAME == bench.CNN_MODEL  # the help text is written out
    seen = {}

    def fake_measure(chosen, *args, **kwargs):
        seen["models"] = chosen
        return []

    monkeypatch.setattr("handprop.bench.measure_training", fake_measure)
    assert main(["bench", "--quick", "--engines", "cpu", "--no-torch", "--comparators",
                 "none", "--no-ceiling", *argv]) == 0
    assert seen["models"] == models
