"""The gradient check of convolution, pooling and Flatten: ``handprop gradcheck --conv``, the
library call on every engine, and proof that a broken convolution or pooling backward is caught."""

from __future__ import annotations

import json

import numpy as np
import pytest

from handprop.cli import main
from handprop.engines.base import Engine
from handprop.nn import AvgPool2D, Conv2D, Dense, Flatten, MaxPool2D, Sequential
from handprop.teach.gradcheck import (CONV_INPUT_SHAPE, default_conv_network, default_problem,
                                      gradcheck)

TOL = 1e-7


def test_cli_gradcheck_conv_json(capsys):
    rc = main(["gradcheck", "--conv", "--json", "--backend", "cpu", "--loss", "mse"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["passed"] is True and out["network"] == "conv"
    assert 0 < out["max_rel_error"] < TOL
    tensors = {t["name"]: t for t in out["checks"][0]["tensors"]}
    # Three convolutions (one bias-free, before the batch norm), batch norm, the output Dense.
    assert list(tensors) == ["layer0.W", "layer0.b", "layer2.W", "layer3.gamma", "layer3.beta",
                             "layer6.W", "layer6.b", "layer9.W", "layer9.b", "input"]
    assert tensors["layer0.W"]["shape"] == [3, 2, 3, 3]
    assert tensors["layer2.W"]["shape"] == [4, 3, 3, 3]
    assert tensors["input"]["shape"] == [4, *CONV_INPUT_SHAPE]
    assert all(t["entries"] == int(np.prod(t["shape"])) for t in tensors.values())  # every entry


def test_cli_gradcheck_conv_text_and_every_loss(capsys):
    assert main(["gradcheck", "--conv", "--backend", "cpu", "--samples", "2"]) == 0
    text = capsys.readouterr().out
    assert text.count("convolutional network") == 3
    assert "PASS: worst relative error" in text


@pytest.mark.parametrize("flags", [["--hidden", "4"], ["--inputs", "5"], ["--batch-norm"],
                                   ["--dropout", "0.2"]])
def test_cli_gradcheck_conv_refuses_mlp_options(capsys, flags):
    assert main(["gradcheck", "--conv", "--backend", "cpu", *flags]) == 2
    assert "--conv checks its own CNN" in capsys.readouterr().err


def test_conv_network_covers_every_layer_kind():
    model = default_conv_network("softmax_cross_entropy", engine="cpu")
    convs = [layer for layer in model.layers if isinstance(layer, Conv2D)]
    assert {layer.stride for layer in convs} == {(1, 1), (2, 2)}
    assert {layer.same for layer in convs} == {True, False}
    assert any(layer.padding == (0, 0, 0, 0) for layer in convs)
    kinds = {type(layer) for layer in model.layers}
    assert {MaxPool2D, AvgPool2D, Flatten} <= kinds
    assert [layer.output_shape for layer in model.layers][:2] == [(3, 11, 9), (3, 5, 4)]


def test_conv_gradients_on_every_engine(engine):
    model = default_conv_network("softmax_cross_entropy", engine=engine, seed=1)
    x, t = default_problem("softmax_cross_entropy", 3, CONV_INPUT_SHAPE, 3, seed=1)
    report = gradcheck(model, "softmax_cross_entropy", x, t, l2=0.05, max_entries=40, seed=1)
    assert report.max_rel_error < TOL, report.table()


@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 0), (1, "same"), (2, (0, 1, 2, 0)),
                                             ((1, 2), 1)])
def test_single_convolution_configurations(cpu, stride, padding):
    model = Sequential([Conv2D(2, (3, 2), stride=stride, padding=padding, activation="tanh"),
                        Flatten(), Dense(3)], input_shape=(2, 7, 5), engine=cpu, dtype="float64")
    x, t = default_problem("softmax_cross_entropy", 2, (2, 7, 5), 3, seed=4)
    report = gradcheck(model, "softmax_cross_entropy", x, t, l2=0.1)
    assert report.max_rel_error < TOL, report.table()


def test_a_broken_convolution_backward_is_caught(capsys, monkeypatch):
    original = Conv2D.backward

    def broken(self, grad_out, need_input_grad=True):
        grad_in = original(self, grad_out, need_input_grad)
        self.grads["W"] = self.grads["W"] * 1.01
        return grad_in

    monkeypatch.setattr(Conv2D, "backward", broken)
    rc = main(["gradcheck", "--conv", "--json", "--backend", "cpu", "--loss", "mse"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["passed"] is False
    bad = {t["name"]: t["rel_error"] for t in out["checks"][0]["tensors"]}
    assert bad["layer0.W"] > 1e-3 and bad["layer6.W"] > 1e-3
    assert bad["input"] < TOL  # the input gradient does not use dW


@pytest.mark.parametrize("primitive", ["col2im", "max_pool_backward", "avg_pool_backward"])
def test_a_broken_primitive_shows_in_the_input_gradient(cpu, monkeypatch, primitive):
    original = getattr(Engine, primitive)

    def broken(self, *args, **kwargs):
        dx = original(self, *args, **kwargs)
        dx[..., 0, 0] = 0.0  # lose one position's gradient
        return dx

    monkeypatch.setattr(Engine, primitive, broken)
    model = default_conv_network("softmax_cross_entropy", engine=cpu, seed=2)
    x, t = default_problem("softmax_cross_entropy", 3, CONV_INPUT_SHAPE, 3, seed=2)
    report = gradcheck(model, "softmax_cross_entropy", x, t, max_entries=200, seed=0)
    assert report.checks[-1].name == "input" and report.checks[-1].rel_error > 1e-4
