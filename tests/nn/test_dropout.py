"""Dropout: the layer, its masks on every engine, gradient check, resume and the CLI flag."""

from __future__ import annotations

import json

import numpy as np
import pytest

from handprop.cli import main
from handprop.errors import ConfigError
from handprop.gradcheck import default_network, default_problem, gradcheck
from handprop.nn import Dense, Dropout, Sequential, mlp
from handprop.optim import Adam
from handprop.train import Trainer


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, True, "0.5"])
def test_bad_rates_are_refused(rate):
    with pytest.raises(ConfigError, match=r"dropout rate must be in \[0, 1\)"):
        Dropout(rate)


def dropout_model(engine, rate=0.3, width=500, seed=0):
    return Sequential([Dropout(rate)], input_dim=width, engine=engine, dtype="float64", seed=seed)


def test_training_drops_a_fraction_and_rescales_the_rest(cpu):
    model = dropout_model(cpu)
    x = np.ones((200, 500))
    assert model.forward(x, training=False) is x  # test time: passed through untouched
    out = cpu.to_numpy(model.forward(cpu.asarray(x), training=True))
    dropped = out == 0.0
    assert abs(dropped.mean() - 0.3) < 0.01  # 100,000 draws
    np.testing.assert_allclose(out[~dropped], 1 / 0.7)
    assert abs(out.mean() - 1.0) < 0.02  # inverted dropout keeps the expectation
    # Backward multiplies by the very mask of the forward pass.
    grad = cpu.to_numpy(model.backward(cpu.asarray(np.full((200, 500), 2.0)),
                                       need_input_grad=True))
    np.testing.assert_array_equal(grad, 2.0 * out)
    # A new forward pass draws a new mask.
    again = cpu.to_numpy(model.forward(cpu.asarray(x), training=True))
    assert (again != out).any()


def test_every_engine_draws_the_same_masks(engine, cpu):
    x = np.random.default_rng(3).normal(size=(64, 50))
    mine = engine.to_numpy(dropout_model(engine, width=50).forward(engine.asarray(x), training=True))
    ref = cpu.to_numpy(dropout_model(cpu, width=50).forward(cpu.asarray(x), training=True))
    np.testing.assert_array_equal(mine, ref)


def test_initial_weights_do_not_depend_on_dropout():
    plain = mlp(20, [16, 8], 3, seed=5, engine="cpu")
    dropped = mlp(20, [16, 8], 3, seed=5, engine="cpu", dropout=0.5)
    assert [layer.describe() for layer in dropped.layers] == [
        "Dense(16, relu)", "Dropout(0.5)", "Dense(8, relu)", "Dropout(0.5)", "Dense(3, identity)"]
    dense = [layer for layer in dropped.layers if isinstance(layer, Dense)]
    for a, b in zip(plain.layers, dense):
        np.testing.assert_array_equal(a.params["W"], b.params["W"])


def test_gradcheck_covers_dropout_and_catches_a_wrong_backward(monkeypatch):
    x, t = default_problem("softmax_cross_entropy")
    model = default_network("softmax_cross_entropy", engine="cpu")
    assert any(isinstance(layer, Dropout) for layer in model.layers)
    assert gradcheck(model, "softmax_cross_entropy", x, t).passed()
    # A backward that forgets the mask passes gradients through dropped units.
    monkeypatch.setattr(Dropout, "backward", lambda self, grad_out, need_input_grad=True: grad_out)
    assert not gradcheck(model, "softmax_cross_entropy", x, t).passed()


def test_save_and_load_keep_the_layer(tmp_path, cpu):
    model = mlp(6, [5], 2, engine=cpu, dropout=0.25, seed=1)
    model.save(tmp_path / "m.npz")
    loaded = Sequential.load(tmp_path / "m.npz", engine=cpu)
    assert [layer.describe() for layer in loaded.layers] == [layer.describe() for layer in model.layers]
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    np.testing.assert_array_equal(cpu.to_numpy(loaded(x)), cpu.to_numpy(model(x)))


def test_measuring_gradient_norms_leaves_the_masks_alone(cpu):
    model = mlp(5, [8], 2, engine=cpu, dropout=0.5, dtype="float64")
    trainer = Trainer(model, "softmax_cross_entropy", Adam(), progress=False)
    before = json.dumps(model.rng_states())
    xs, ys = trainer.to_engine(np.ones((10, 5)), np.zeros(10, dtype=np.int64))
    trainer.gradient_norms(xs, ys)
    assert json.dumps(model.rng_states()) == before


def test_cli_dropout_flag(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--train-subset", "2000", "--val-size", "500", "--hidden", "64",
                 "--activation", "relu", "--optimizer", "adam", "--lr", "0.003", "--dropout", "0.3",
                 "--epochs", "3", "--backend", "cpu", "--no-progress", "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())["config"]
    summary = json.loads((out / "summary.json").read_text())
    assert saved["dropout"] == 0.3 and summary["test_accuracy"] > 0.85
    capsys.readouterr()
    assert main(["train", "--dropout", "1", "--epochs", "1", "--out", str(tmp_path / "bad")]) == 2
    assert "dropout must be in [0, 1)" in capsys.readouterr().err
