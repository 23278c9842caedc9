"""BatchNorm: statistics, running averages, backward (against PyTorch and finite differences),
engines, persistence, resume and the CLI flag."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine_cases import make_engine
from handprop.cli import main
from handprop.gradcheck import gradcheck
from handprop.nn import Activation, BatchNorm, Dense, Sequential, mlp
from handprop.optim import Adam
from handprop.train import Trainer
from handprop.train.trainer import CHECKPOINT_NAME


def bn_model(engine, features=7, dtype="float64", **options):
    return Sequential([BatchNorm(**options)], input_dim=features, engine=engine, dtype=dtype)


def test_training_normalizes_each_feature_and_updates_running_averages(cpu):
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.5, size=(40, 7))
    model = bn_model(cpu, momentum=0.9, eps=1e-5)
    layer = model.layers[0]
    out = cpu.to_numpy(model.forward(cpu.asarray(x), training=True))
    var = x.var(axis=0)
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=0), np.sqrt(var / (var + 1e-5)), rtol=1e-12)
    np.testing.assert_allclose(cpu.to_numpy(layer.buffers["running_mean"]), 0.1 * x.mean(axis=0))
    np.testing.assert_allclose(cpu.to_numpy(layer.buffers["running_var"]),
                               0.9 + 0.1 * x.var(axis=0, ddof=1))  # unbiased, as PyTorch
    # Evaluation uses the running averages, not the batch.
    rm, rv = (cpu.to_numpy(layer.buffers[k]) for k in ("running_mean", "running_var"))
    np.testing.assert_allclose(cpu.to_numpy(model.forward(cpu.asarray(x))),
                               (x - rm) / np.sqrt(rv + 1e-5), rtol=1e-12)


def test_backward_and_running_statistics_match_pytorch(cpu):
    torch = pytest.importorskip("torch", reason="PyTorch is the optional reference (extra 'compare')")
    rng = np.random.default_rng(1)
    x = rng.normal(1.0, 3.0, size=(16, 5))
    g = rng.normal(size=(16, 5))
    gamma, beta = rng.normal(size=5), rng.normal(size=5)
    model = bn_model(cpu, features=5, momentum=0.9)
    layer = model.layers[0]
    layer.params["gamma"], layer.params["beta"] = cpu.asarray(gamma), cpu.asarray(beta)
    out = model.forward(cpu.asarray(x), training=True)
    dx = model.backward(cpu.asarray(g), need_input_grad=True)

    tx = torch.tensor(x, requires_grad=True)
    tg, tb = torch.tensor(gamma, requires_grad=True), torch.tensor(beta, requires_grad=True)
    rm, rv = torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64)
    ty = torch.nn.functional.batch_norm(tx, rm, rv, tg, tb, training=True, momentum=0.1, eps=1e-5)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(cpu.to_numpy(out), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(cpu.to_numpy(dx), tx.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cpu.to_numpy(layer.grads["gamma"]), tg.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(cpu.to_numpy(layer.grads["beta"]), tb.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(cpu.to_numpy(layer.buffers["running_mean"]), rm.numpy(), rtol=1e-12)
    np.testing.assert_allclose(cpu.to_numpy(layer.buffers["running_var"]), rv.numpy(), rtol=1e-12)


def test_every_engine_agrees_with_the_reference(engine, cpu):
    rng = np.random.default_rng(2)
    x, g = rng.normal(size=(33, 6)), rng.normal(size=(33, 6))
    results = []
    for eng in (engine, cpu):
        model = bn_model(eng, features=6, dtype="float32")
        out = model.forward(eng.asarray(x.astype(np.float32)), training=True)
        dx = model.backward(eng.asarray(g.astype(np.float32)), need_input_grad=True)
        results.append([eng.to_numpy(a) for a in (out, dx, model.layers[0].grads["gamma"])])
    for mine, ref in zip(*results):
        np.testing.assert_allclose(mine, ref, rtol=1e-4, atol=1e-5)


def _bn_net(engine="cpu"):
    return Sequential([Dense(6, "identity", use_bias=False), BatchNorm(), Activation("tanh"),
                       Dense(3, "identity")], input_dim=4, engine=engine, dtype="float64", seed=2)


def test_gradcheck_passes_and_catches_the_naive_backward(monkeypatch):
    rng = np.random.default_rng(3)
    x, t = rng.normal(size=(8, 4)), rng.integers(0, 3, size=8)
    model = _bn_net()
    before = model.get_weights()
    assert gradcheck(model, "softmax_cross_entropy", x, t, l2=0.01).passed()
    after = model.get_weights()  # the check leaves the running statistics alone
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])

    # The common mistake: treat mean and variance as constants, dx = g * gamma * inv_std.
    def naive(self, grad_out, need_input_grad=True):
        xp = self.engine.xp
        self.grads["beta"] = xp.sum(grad_out, axis=0)
        self.grads["gamma"] = xp.sum(grad_out * self.x_hat, axis=0)
        return grad_out * self.params["gamma"] * self.inv_std

    monkeypatch.setattr(BatchNorm, "backward", naive)
    assert not gradcheck(model, "softmax_cross_entropy", x, t).passed()


def test_mlp_with_batch_norm_saves_its_running_statistics(tmp_path, cpu):
    model = mlp(8, [6, 5], 3, activation="relu", engine=cpu, batch_norm=True, seed=4)
    assert [layer.describe() for layer in model.layers] == [
        "Dense(6, identity, no bias)", "BatchNorm", "Activation(relu)",
        "Dense(5, identity, no bias)", "BatchNorm", "Activation(relu)", "Dense(3, identity)"]
    assert "b" not in model.layers[0].params and model.num_parameters() == (
        8 * 6 + 2 * 6 + 6 * 5 + 2 * 5 + 5 * 3 + 3)
    x = np.random.default_rng(5).normal(size=(20, 8)).astype(np.float32)
    model.forward(cpu.asarray(x), training=True)  # moves the running averages
    model.save(tmp_path / "m.npz")
    loaded = Sequential.load(tmp_path / "m.npz", engine=cpu)
    assert set(loaded.get_weights()) >= {"layer1.running_mean", "layer1.running_var"}
    np.testing.assert_array_equal(cpu.to_numpy(loaded(x)), cpu.to_numpy(model(x)))


@pytest.mark.parametrize("layers", [{"dropout": 0.5}, {"batch_norm": True, "dropout": 0.2}],
                         ids=["dropout", "batch-norm-and-dropout"])
def test_a_crashed_run_resumes_to_identical_weights(tmp_path, layers):
    """Dropout generators and running statistics travel in the checkpoint."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 5))
    y = (x[:, 0] > x[:, 1]).astype(np.int64)

    def trainer(**kwargs):
        model = mlp(5, [16], 2, activation="relu", engine=make_engine("cpu"), dtype="float64",
                    seed=0, **layers)
        return Trainer(model, "softmax_cross_entropy", Adam(lr=0.01), batch_size=8, epochs=4,
                       seed=0, progress=False, **kwargs)

    straight = trainer()
    straight.fit(x, y)

    class Crash(Exception):
        pass

    def crash(epoch, batch):
        if epoch == 3 and batch == 4:
            raise Crash

    crashed = trainer(checkpoint_dir=tmp_path, on_batch_end=crash)
    with pytest.raises(Crash):
        crashed.fit(x, y)
    resumed = trainer(checkpoint_dir=tmp_path)
    resumed.load_checkpoint(tmp_path / CHECKPOINT_NAME)
    resumed.fit(x, y)
    final = straight.model.get_weights()
    assert ("layer1.running_var" in final) is bool(layers.get("batch_norm"))
    for name, value in final.items():
        np.testing.assert_array_equal(resumed.model.get_weights()[name], value)


def test_cli_batch_norm_rescues_a_deep_sigmoid_net(tmp_path, capsys):
    flags = ["--train-subset", "2000", "--val-size", "500", "--hidden", "64,64,64,64",
             "--activation", "sigmoid", "--optimizer", "sgd", "--lr", "0.1", "--epochs", "3",
             "--backend", "cpu", "--no-progress"]
    plain, out = tmp_path / "plain", tmp_path / "run"
    assert main(["train", *flags, "--out", str(plain)]) == 0
    assert main(["train", *flags, "--batch-norm", "--out", str(out)]) == 0
    assert "with batch norm" in capsys.readouterr().out
    saved = json.loads((out / "config.json").read_text())["config"]
    summary = json.loads((out / "summary.json").read_text())
    without = json.loads((plain / "summary.json").read_text())
    # Four sigmoid layers barely learn in 3 epochs (about 10 %); normalized, they do (about 83 %).
    assert saved["batch_norm"] is True and without["test_accuracy"] < 0.3
    assert summary["test_accuracy"] > 0.7
    assert main(["evaluate", str(out), "--json"]) == 0  # reloads the running statistics
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(summary["test_accuracy"])
    assert main(["sweep", "--grid", "batch_norm=true,false", "--dry-run",
                 "--out", str(tmp_path / "s")]) == 0
    assert "2 trials" in capsys.readouterr().out
