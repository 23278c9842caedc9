"""Gradient checks for every layer, activation, loss and the L2 term; the
``handprop gradcheck`` command; proof that a broken backward is caught; the
overfit sanity check."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from handprop.cli import main
from handprop.engines.base import ACTIVATIONS
from handprop.errors import ConfigError
from handprop.nn import Activation, Dense, Sequential, mlp
from handprop.nn.layers import Dense as DenseClass
from handprop.optim import SGD, Adam
from handprop.teach.gradcheck import gradcheck, overfit_check, rel_error

TOL = 1e-7
LOSSES = ("softmax_cross_entropy", "mse", "binary_cross_entropy")


def problem(loss, samples=5, inputs=3, outputs=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, inputs))
    if loss == "binary_cross_entropy":
        t = rng.integers(0, 2, size=(samples, outputs)).astype(np.float64)
    elif loss == "mse":
        t = rng.uniform(size=(samples, outputs))
    else:
        t = rng.integers(0, outputs, size=samples)
    return x, t


def test_rel_error_formula():
    assert rel_error(np.array([1.0, 0.0]), np.array([1.0, 0.0])) == 0.0
    # |a-n| / (|a| + |n|) = 1 / (3 + 4) for a = (3, 0), n = (4, 0)... written out:
    assert rel_error(np.array([3.0, 0.0]), np.array([4.0, 0.0])) == pytest.approx(1.0 / 7.0)
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0


@pytest.mark.parametrize("kind", ACTIVATIONS)
def test_dense_with_each_activation(engine, kind):
    model = Sequential([Dense(4, kind, init="xavier_normal", bias_init=0.05), Dense(3, "identity")],
                       input_dim=3, engine=engine, dtype="float64", seed=2)
    x, t = problem("softmax_cross_entropy")
    report = gradcheck(model, "softmax_cross_entropy", x, t)
    names = [c.name for c in report.checks]
    assert names == ["layer0.W", "layer0.b", "layer1.W", "layer1.b", "input"]
    assert all(c.checked == int(np.prod(c.shape)) for c in report.checks)
    assert report.max_rel_error < TOL, report.table()
    assert report.passed()


@pytest.mark.parametrize("kind", ACTIVATIONS)
def test_activation_layer_alone(engine, kind):
    model = Sequential([Dense(4, "identity"), Activation(kind, alpha=0.2), Dense(2, "identity")],
                       input_dim=3, engine=engine, dtype="float64", seed=4)
    x, t = problem("mse", outputs=2)
    report = gradcheck(model, "mse", x, t)
    assert report.max_rel_error < TOL, report.table()


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("l2", [0.0, 0.3])
def test_each_loss_with_and_without_l2(engine, loss, l2):
    out_act = "sigmoid" if loss == "mse" else "identity"
    model = mlp(3, [4], 3, activation="tanh", output_activation=out_act, engine=engine,
                dtype="float64", seed=1)
    x, t = problem(loss)
    report = gradcheck(model, loss, x, t, l2=l2)
    assert report.loss == loss and report.l2 == l2
    assert report.max_rel_error < TOL, report.table()


def test_single_output_losses_with_labels(cpu):
    for loss in ("mse", "binary_cross_entropy"):
        model = mlp(3, [4], 1, activation="tanh", output_activation="identity", engine=cpu,
                    dtype="float64", seed=1)
        x = np.random.default_rng(0).normal(size=(6, 3))
        report = gradcheck(model, loss, x, np.array([0, 1, 1, 0, 1, 0]))
        assert report.max_rel_error < TOL, report.table()


def test_l2_term_is_really_checked(cpu, monkeypatch):
    """If the L2 gradient were forgotten, the check must notice."""
    model = mlp(3, [4], 3, activation="tanh", engine=cpu, dtype="float64", seed=1)
    x, t = problem("softmax_cross_entropy")
    monkeypatch.setattr(Sequential, "add_l2_gradient", lambda self, l2: None)
    report = gradcheck(model, "softmax_cross_entropy", x, t, l2=0.5)
    assert report.max_rel_error > 1e-3
    bias_checks = [c for c in report.checks if c.name.endswith(".b")]
    assert all(c.rel_error < TOL for c in bias_checks)  # biases carry no L2


def test_broken_dense_backward_is_detected(cpu, monkeypatch):
    original = DenseClass.backward

    def off_by_one_percent(self, grad_out, need_input_grad=True):
        grad_in = original(self, grad_out, need_input_grad)
        self.grads["W"] = self.grads["W"] * 1.01
        return grad_in

    model = mlp(3, [4], 3, activation="tanh", engine=cpu, dtype="float64", seed=1)
    x, t = problem("softmax_cross_entropy")
    monkeypatch.setattr(DenseClass, "backward", off_by_one_percent)
    report = gradcheck(model, "softmax_cross_entropy", x, t)
    bad = {c.name: c.rel_error for c in report.checks}
    assert bad["layer0.W"] > 1e-3 and bad["layer1.W"] > 1e-3
    assert bad["layer1.b"] < TOL  # untouched tensors still pass
    assert not report.passed()


def test_wrong_activation_derivative_is_detected(cpu, monkeypatch):
    """tanh' written as 1 - out instead of 1 - out**2: a classic student slip."""
    original = type(cpu).act_backward

    def wrong(self, grad, out, kind, alpha=0.01):
        if kind == "tanh":
            return grad * (1.0 - out)
        return original(self, grad, out, kind, alpha)

    model = Sequential([Dense(4, "identity"), Activation("tanh"), Dense(3)], input_dim=3,
                       engine=cpu, dtype="float64", seed=1)
    x, t = problem("softmax_cross_entropy")
    monkeypatch.setattr(type(cpu), "act_backward", wrong)
    report = gradcheck(model, "softmax_cross_entropy", x, t)
    assert report.max_rel_error > 1e-2


def test_max_entries_limits_the_work(cpu):
    model = mlp(6, [8], 3, activation="tanh", engine=cpu, dtype="float64")
    x, t = problem("softmax_cross_entropy", inputs=6)
    report = gradcheck(model, "softmax_cross_entropy", x, t, max_entries=5)
    assert [c.checked for c in report.checks] == [5, 5, 5, 3, 5]  # layer1.b has only 3 entries
    assert report.max_rel_error < TOL


def test_gradcheck_refuses_float32(cpu):
    model = mlp(3, [4], 3, engine=cpu, dtype="float32")
    x, t = problem("softmax_cross_entropy")
    with pytest.raises(ConfigError, match="float64"):
        gradcheck(model, "softmax_cross_entropy", x, t)


def test_report_to_dict_and_table(cpu):
    model = mlp(3, [4], 3, activation="tanh", engine=cpu, dtype="float64")
    x, t = problem("softmax_cross_entropy")
    report = gradcheck(model, "softmax_cross_entropy", x, t, l2=0.1)
    d = report.to_dict()
    assert d["max_rel_error"] == max(tt["rel_error"] for tt in d["tensors"])
    assert [tt["name"] for tt in d["tensors"]] == ["layer0.W", "layer0.b", "layer1.W", "layer1.b", "input"]
    assert d["tensors"][0]["shape"] == [3, 4] and d["tensors"][0]["entries"] == 12
    assert "layer0.W" in report.table() and "3x4" in report.table()


# ------------------------------------------------------------------------ CLI
def test_cli_gradcheck_json(capsys):
    rc = main(["gradcheck", "--json", "--backend", "cpu"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["passed"] is True and out["engine"] == "cpu"
    assert [c["loss"] for c in out["checks"]] == list(LOSSES)
    worst = max(t["rel_error"] for c in out["checks"] for t in c["tensors"])
    assert out["max_rel_error"] == worst
    assert 0 < out["max_rel_error"] < 1e-7
    # The default network: one Dense per activation (6) and the output Dense, each
    # with W and b; a bias-free Dense (W) and a BatchNorm (gamma, beta) between the
    # stand-alone activations; plus the input.
    names = [t["name"] for t in out["checks"][0]["tensors"]]
    assert len(names) == 7 * 2 + 1 + 2 + 1
    assert sum(n.endswith(".gamma") for n in names) == 1 and names[-1] == "input"
    assert all(c["l2"] == 0.01 for c in out["checks"])


def test_cli_gradcheck_fails_with_broken_backward(capsys, monkeypatch):
    original = DenseClass.backward

    def broken(self, grad_out, need_input_grad=True):
        grad_in = original(self, grad_out, need_input_grad)
        if self.use_bias:
            self.grads["b"] = self.grads["b"] * 0.5
        return grad_in

    monkeypatch.setattr(DenseClass, "backward", broken)
    rc = main(["gradcheck", "--json", "--backend", "cpu", "--loss", "mse"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert out["passed"] is False and out["max_rel_error"] > 0.1


def test_cli_gradcheck_hidden_and_text_output(capsys):
    rc = main(["gradcheck", "--backend", "cpu", "--hidden", "5,4", "--activation", "relu",
               "--loss", "binary_cross_entropy"])
    text = capsys.readouterr().out
    assert rc == 0
    assert "PASS: worst relative error" in text and "layer2.W" in text


def test_cli_gradcheck_bad_arguments(capsys):
    assert main(["gradcheck", "--backend", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "unknown engine 'nosuch'" in err and "cpu" in err and "Traceback" not in err
    assert main(["gradcheck", "--backend", "cpu", "--hidden", "5,x"]) == 2
    assert "--hidden takes widths like 16,8" in capsys.readouterr().err
    assert main(["gradcheck", "--backend", "cpu", "--samples", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err


def test_cli_gradcheck_subprocess():
    env = {**os.environ, "HANDPROP_BACKEND": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "handprop", "gradcheck", "--json", "--loss", "mse"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["engine"] == "cpu" and out["max_rel_error"] < 1e-7


# --------------------------------------------------------------- overfit check
def tiny_subset():
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 4)), np.array([0, 1, 2, 0, 1, 2, 0, 1])


def test_overfit_check_passes_on_tiny_subset(engine):
    x, y = tiny_subset()
    model = mlp(4, [16], 3, activation="tanh", engine=engine, dtype="float64", seed=0)
    result = overfit_check(model, "softmax_cross_entropy", Adam(lr=0.05), x, y, steps=500,
                           threshold=0.05)
    assert result.passed, result.message()
    assert result.final_loss < 0.05 <= result.losses[0]
    assert result.losses[0] == pytest.approx(math.log(3), rel=0.5)  # ~uniform at the start
    assert result.steps == len(result.losses) < 500
    assert "passed" in result.message()


@pytest.mark.parametrize("lr, steps", [(1e-6, 50), (0.1, 1)])
def test_overfit_check_reports_failure(cpu, lr, steps):
    x, y = tiny_subset()
    model = mlp(4, [16], 3, activation="tanh", engine=cpu, dtype="float64", seed=0)
    result = overfit_check(model, "softmax_cross_entropy", SGD(lr=lr), x, y, steps=steps,
                           threshold=0.05)
    assert not result.passed
    assert result.steps == steps and len(result.losses) == steps
    assert result.final_loss > 0.5
    assert "FAILED" in result.message()


def test_cli_gradcheck_hidden_with_batch_norm_and_dropout(capsys):
    rc = main(["gradcheck", "--backend", "cpu", "--hidden", "6,5", "--activation", "sigmoid",
               "--batch-norm", "--dropout", "0.3", "--loss", "softmax_cross_entropy", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["passed"]
    names = [t["name"] for t in out["checks"][0]["tensors"]]
    # Dense(no bias), BatchNorm, sigmoid, Dropout per hidden layer: W, gamma, beta each.
    assert names[:3] == ["layer0.W", "layer1.gamma", "layer1.beta"]
    assert "layer0.b" not in names
    assert main(["gradcheck", "--batch-norm"]) == 2
    assert "give --hidden too" in capsys.readouterr().err
