"""The trainer: batching, determinism, resume, NaN handling, early stopping, output."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from engine_cases import make_engine
from handprop.engines import engine_status
from handprop.errors import CheckpointError, ConfigError, NumericalError
from handprop.nn import mlp
from handprop.optim import Adam, SGD
from handprop.train import Trainer, run_training
from handprop.train.trainer import CHECKPOINT_NAME

SMALL = {"dataset": "mnist", "train_subset": 600, "val_size": 200, "hidden": [16],
         "activation": "tanh", "optimizer": "adam", "lr": 0.01, "batch_size": 32, "epochs": 3,
         "backend": "cpu"}


def toy_problem(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    return x, y


def make_trainer(engine="cpu", seed=0, optimizer=None, compile=True, **kwargs):
    model = mlp(5, [8], 2, activation="tanh", engine=make_engine(engine), dtype="float64", seed=seed)
    return Trainer(model, "softmax_cross_entropy", optimizer or Adam(lr=0.01), seed=seed,
                   progress=False, compile=compile, **kwargs)


_numba = engine_status("numba")
_needs_numba = pytest.mark.skipif(not _numba.available,
                                  reason=f"numba engine unavailable: {_numba.reason}")
#: (engine, compile): the reference, numba layer by layer, and numba's compiled path.
PATHS = [pytest.param("cpu", True, id="cpu-layers"),
         pytest.param("numba", False, id="numba-layers", marks=_needs_numba),
         pytest.param("numba", True, id="numba-compiled", marks=_needs_numba)]


def expect_path(trainer, engine, compile):
    assert trainer.training_path == ("compiled" if engine == "numba" and compile
                                     else "layer by layer")


@pytest.mark.parametrize("engine, compile", PATHS)
@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
def test_batch_sizes_from_one_to_the_full_set(batch_size, engine, compile):
    x, y = toy_problem()
    trainer = make_trainer(engine, batch_size=batch_size, epochs=2, compile=compile)
    expect_path(trainer, engine, compile)
    history = trainer.fit(x, y)
    assert len(history) == 2
    # Every sample is seen once per epoch: the update count tells.
    assert trainer.optimizer.t == 2 * math.ceil(len(x) / batch_size)
    assert 0 <= history.rows[-1]["train_acc"] <= 1


@pytest.mark.parametrize("engine, compile", PATHS)
def test_same_seed_same_run_and_other_seed_differs(engine, compile):
    x, y = toy_problem()
    a = make_trainer(engine, seed=3, batch_size=8, epochs=3, compile=compile)
    b = make_trainer(engine, seed=3, batch_size=8, epochs=3, compile=compile)
    c = make_trainer(engine, seed=4, batch_size=8, epochs=3, compile=compile)
    la = a.fit(x, y).column("train_loss")
    assert la == b.fit(x, y).column("train_loss")
    assert la != c.fit(x, y).column("train_loss")


def test_learning_improves_and_validation_is_reported():
    x, y = toy_problem(200)
    trainer = make_trainer(batch_size=16, epochs=8)
    history = trainer.fit(x[:150], y[:150], x[150:], y[150:])
    assert history.rows[-1]["train_loss"] < history.rows[0]["train_loss"]
    assert history.rows[-1]["val_acc"] > 0.85
    assert all(r["val_loss"] is not None for r in history.rows)


def test_evaluate_matches_a_hand_computed_accuracy():
    x, y = toy_problem(100)
    trainer = make_trainer(batch_size=10, epochs=2, eval_batch_size=7)
    trainer.fit(x, y)
    engine = trainer.engine
    logits = engine.to_numpy(trainer.model.forward(engine.asarray(x, "float64")))
    expected_acc = float(np.mean(logits.argmax(axis=1) == y))
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected_loss = float(-logp[np.arange(len(y)), y].mean())
    loss, acc = trainer.evaluate(x, y)
    assert acc == pytest.approx(expected_acc)
    assert loss == pytest.approx(expected_loss, rel=1e-10)


@pytest.mark.parametrize("engine, compile", PATHS)
def test_interrupted_training_resumes_to_identical_weights(tmp_path, engine, compile):
    """Kill mid-epoch, resume from the last checkpoint: same weights as never stopped."""
    x, y = toy_problem(90)
    options = {"batch_size": 8, "epochs": 5, "compile": compile}
    uninterrupted = make_trainer(engine, checkpoint_dir=tmp_path / "a", **options)
    uninterrupted.fit(x, y, x[:20], y[:20])
    expect_path(uninterrupted, engine, compile)

    class Crash(Exception):
        pass

    def crash(epoch, batch):
        if epoch == 4 and batch == 5:
            raise Crash

    crashed = make_trainer(engine, checkpoint_dir=tmp_path / "b", on_batch_end=crash, **options)
    with pytest.raises(Crash):
        crashed.fit(x, y, x[:20], y[:20])

    resumed = make_trainer(engine, seed=99, checkpoint_dir=tmp_path / "b", **options)
    resumed.load_checkpoint(tmp_path / "b" / CHECKPOINT_NAME)
    assert resumed.epoch == 3 and resumed.optimizer.t == 3 * math.ceil(90 / 8)
    resumed.fit(x, y, x[:20], y[:20])
    for name, value in uninterrupted.model.get_weights().items():
        np.testing.assert_array_equal(resumed.model.get_weights()[name], value)
    assert resumed.history.column("train_loss") == uninterrupted.history.column("train_loss")
    assert resumed.batch_losses == uninterrupted.batch_losses  # kept in the checkpoint


@pytest.mark.parametrize("engine, compile", PATHS)
def test_batch_losses_make_up_the_epoch_means(engine, compile):
    x, y = toy_problem(90)
    # 12 batches, the last of 2 samples
    trainer = make_trainer(engine, batch_size=8, epochs=3, compile=compile)
    history = trainer.fit(x, y)
    losses = np.array(trainer.batch_losses)
    assert losses.shape == (3 * 12,) and np.isfinite(losses).all()
    sizes = np.array([8] * 11 + [2])
    for epoch, row in enumerate(history.rows):
        chunk = losses[epoch * 12:(epoch + 1) * 12]
        assert row["train_loss"] == pytest.approx(float(sizes @ chunk) / 90, rel=1e-12)
    assert losses[:12].mean() > losses[-12:].mean()  # it learns


@pytest.mark.parametrize("activation, vanishing", [("sigmoid", True), ("relu", False)])
def test_gradient_norms_show_vanishing_gradients_in_deep_sigmoid_nets(activation, vanishing):
    from handprop.train import make_config
    from handprop.train.run import prepare_data

    config = make_config(SMALL, {"train_subset": 1000, "hidden": [64] * 5,
                                 "activation": activation, "optimizer": "sgd", "lr": 0.1})
    data = prepare_data(config)
    model = mlp(784, [64] * 5, 10, activation=activation, engine=make_engine("cpu"), seed=0)
    trainer = Trainer(model, "softmax_cross_entropy", SGD(lr=0.1), batch_size=64, epochs=2,
                      seed=0, progress=False)
    history = trainer.fit(data.x_train, data.y_train)
    norms = history.rows[-1]["grad_norms"]
    assert list(norms) == [f"layer{i}.W" for i in range(6)]
    assert all(np.isfinite(v) and v > 0 for v in norms.values())
    first, last = norms["layer0.W"], norms["layer5.W"]
    # Each sigmoid layer scales the gradient by at most 1/4 times its weights.
    assert (first < last / 20) is vanishing
    # Measuring touches neither the weights nor the optimizer.
    before = model.get_weights()
    xs, ys = trainer.to_engine(data.x_train[:100], data.y_train[:100])
    assert trainer.gradient_norms(xs, ys).keys() == norms.keys()
    for name, value in model.get_weights().items():
        np.testing.assert_array_equal(value, before[name])
    assert trainer.optimizer.t == 2 * math.ceil(1000 / 64)


@pytest.mark.parametrize("backend, subset, hidden, path", [
    ("cpu", "3000", "512", "layer by layer"),
    pytest.param("numba", "6000", "256", "compiled", marks=_needs_numba)])
def test_a_killed_cli_run_resumes_to_the_same_result(tmp_path, backend, subset, hidden, path):
    """A real SIGKILL of `handprop train`, then `--resume`; on numba the compiled path
    runs both, so the resumed run must end bit-identical to an uninterrupted compiled one."""
    flags = ["--dataset", "mnist", "--train-subset", subset, "--val-size", "300", "--hidden", hidden,
             "--activation", "relu", "--optimizer", "momentum", "--lr", "0.05",
             "--batch-size", "8", "--epochs", "4", "--backend", backend, "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    make_engine(backend).warmup()  # compiled and cached here, so epoch 1 paces the kill
    killed_dir, clean_dir = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen([sys.executable, "-m", "handprop", "train", *flags, "--out", str(killed_dir)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180  # a first run may compile the kernels
    metrics, lines = killed_dir / "metrics.jsonl", []
    while time.time() < deadline and proc.poll() is None:
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        if lines:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    # Now somewhere inside epoch 2: halfway through it, at the first epoch's pace.
    time.sleep(0.5 * json.loads(lines[0])["seconds"])
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed_dir / "summary.json").exists()
    resume = subprocess.run([sys.executable, "-m", "handprop", "train", "--resume", str(killed_dir),
                             "--no-progress"], env=env, capture_output=True, text=True)
    assert resume.returncode == 0, resume.stderr
    assert "resuming" in resume.stdout and f"path: {path}" in resume.stdout
    clean = subprocess.run([sys.executable, "-m", "handprop", "train", *flags, "--out", str(clean_dir)],
                           env=env, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    a = np.load(killed_dir / "model.npz", allow_pickle=False)
    b = np.load(clean_dir / "model.npz", allow_pickle=False)
    for name in b.files:
        if name != "__meta__":
            np.testing.assert_array_equal(a[name], b[name])
    rows = [json.loads(line) for line in (killed_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]


@pytest.mark.parametrize("engine, compile", PATHS)
def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, engine,
                                                                          compile):
    x, y = toy_problem()

    def poison(epoch, batch):
        if epoch == 2 and batch == 3:
            trainer.model.layers[0].params["W"][0, 0] = np.nan

    trainer = make_trainer(engine, batch_size=8, epochs=4, checkpoint_dir=tmp_path,
                           on_batch_end=poison, compile=compile)
    expect_path(trainer, engine, compile)
    with pytest.raises(NumericalError, match=r"loss became nan at epoch 2, batch 4.*after epoch 1"):
        trainer.fit(x, y)
    again = make_trainer(batch_size=8, epochs=4)
    again.load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert again.epoch == 1
    assert all(np.isfinite(w).all() for w in again.model.get_weights().values())


@pytest.mark.parametrize("engine, compile", PATHS)
def test_early_stopping_restores_the_best_weights(monkeypatch, engine, compile):
    x, y = toy_problem()
    trainer = make_trainer(engine, batch_size=16, epochs=10, patience=2, compile=compile)
    scripted = iter([1.0, 0.5, 0.7, 0.8, 0.9, 0.4])
    monkeypatch.setattr(trainer, "evaluate_on_engine", lambda xs, ys: (next(scripted), 0.5))
    snapshots = {}
    trainer.on_epoch_end = lambda t, row: snapshots.__setitem__(row["epoch"], t.model.get_weights())
    trainer.fit(x, y, x[:10], y[:10])
    assert trainer.stopped_early and trainer.epoch == 4
    assert trainer.best["epoch"] == 2
    for name, value in trainer.model.get_weights().items():
        np.testing.assert_array_equal(value, snapshots[2][name])
    assert not np.array_equal(snapshots[2]["layer0.W"], snapshots[4]["layer0.W"])


def test_early_stopping_without_validation_is_refused():
    x, y = toy_problem()
    with pytest.raises(ConfigError, match="validation"):
        make_trainer(patience=2).fit(x, y)


def test_plain_epoch_lines_when_not_a_terminal(capsys):
    x, y = toy_problem()
    model = mlp(5, [4], 2, engine=make_engine("cpu"), seed=0)
    Trainer(model, "softmax_cross_entropy", SGD(lr=0.1), batch_size=16, epochs=2,
            progress=True).fit(x, y, x[:8], y[:8])
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("epoch   1/2  train_loss") and "val_acc" in lines[0]
    assert "\r" not in capsys.readouterr().err


def test_bad_training_input_is_refused_before_training():
    x, y = toy_problem()
    trainer = make_trainer()
    with pytest.raises(Exception, match="labels must lie in 0..1"):
        trainer.fit(x, y + 5)
    x_bad = x.copy()
    x_bad[3, 2] = np.inf
    with pytest.raises(Exception, match="NaN or Inf"):
        trainer.fit(x_bad, y)
    with pytest.raises(Exception, match="expects 5"):
        trainer.fit(x[:, :4], y)
    assert trainer.optimizer.t == 0


@pytest.mark.parametrize("engine_name", ["numba", "cuda-emulated",
                                         pytest.param("cuda", marks=pytest.mark.gpu)])
def test_whole_run_parity_with_cpu(engine_name):
    """Same seed on cpu and a fused engine: per-epoch losses within 1e-4 relative."""
    from engine_cases import ENGINE_PARAMS
    from handprop.engines import engine_status
    from handprop.train import make_config

    if engine_name not in [p.values[0] for p in ENGINE_PARAMS]:
        pytest.skip(f"{engine_name} engine is not built on this machine (no C++ compiler)")
    status = engine_status(engine_name) if engine_name in ("numba", "cuda") else None
    if status is not None and not status.available:
        what = "no usable GPU" if engine_name == "cuda" else "numba engine unavailable"
        pytest.skip(f"{what}: {status.reason}")
    config = make_config(SMALL, {"epochs": 3, "dtype": "float32"})
    losses = {}
    for name in ("cpu", engine_name):
        engine = make_engine(name)
        from handprop.train.run import build_model, build_optimizer, prepare_data

        data = prepare_data(config)
        model = build_model(config, data.input_dim, data.classes, engine)
        optimizer = build_optimizer(config, math.ceil(len(data.x_train) / config["batch_size"]))
        trainer = Trainer(model, "softmax_cross_entropy", optimizer, batch_size=32, epochs=3,
                          seed=0, progress=False)
        history = trainer.fit(data.x_train, data.y_train, data.x_val, data.y_val)
        losses[name] = history.column("train_loss") + history.column("val_loss")
    np.testing.assert_allclose(losses[engine_name], losses["cpu"], rtol=1e-4)


# ------------------------------------------------------------------ run folders
def test_run_folder_contents(tmp_path):
    summary = run_training(SMALL, tmp_path / "run", progress=False, log=lambda *a: None)
    out = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", CHECKPOINT_NAME, "model.npz", "curves.png",
                 "summary.json", "batch_loss.csv", "gradients.png"):
        assert (out / name).exists(), name
    batch_rows = (out / "batch_loss.csv").read_text().splitlines()
    per_epoch = math.ceil(600 / 32)  # train_subset 600, batches of 32
    assert batch_rows[0] == "epoch,batch,loss" and len(batch_rows) == 1 + 3 * per_epoch
    assert batch_rows[1].startswith("1,1,") and batch_rows[-1].startswith(f"3,{per_epoch},")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert set(rows[0]) >= {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
    saved = json.loads((out / "summary.json").read_text())
    assert set(saved) >= {"test_loss", "test_accuracy", "engine", "epochs", "train_seconds", "parameters"}
    assert saved["parameters"] == 784 * 16 + 16 + 16 * 10 + 10
    assert saved["test_accuracy"] == summary["test_accuracy"] > 0.5
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["hidden"] == [16] and config["preprocessing"]["normalize"]["kind"] == "scale"
    assert (out / "curves.png").stat().st_size > 5000
    # Rerunning from config.json alone reproduces the result.
    again = run_training(config["config"], tmp_path / "again", progress=False, log=lambda *a: None)
    assert again["test_loss"] == summary["test_loss"]


def test_run_refuses_to_overwrite_and_resume_needs_a_run(tmp_path):
    run_training(dict(SMALL, epochs=1), tmp_path / "r", progress=False, log=lambda *a: None)
    with pytest.raises(ConfigError, match="already holds a run"):
        run_training(dict(SMALL, epochs=1), tmp_path / "r", progress=False, log=lambda *a: None)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        run_training({}, tmp_path / "empty", resume=True, progress=False, log=lambda *a: None)


@pytest.mark.parametrize("name, hidden, lr, epochs, batch", [("xor", [3], 2.0, 3000, 21),
                                                              ("linear", [2], 1.0, 1000, 10)])
def test_toy_sets_reach_full_training_accuracy(tmp_path, name, hidden, lr, epochs, batch):
    config = {"dataset": name, "hidden": hidden, "activation": "sigmoid", "output_loss": "mse",
              "val_size": 0, "batch_size": batch, "lr": lr, "epochs": epochs, "backend": "cpu"}
    summary = run_training(config, None, progress=False, log=lambda *a: None)
    assert summary["train_accuracy"] == 1.0


@pytest.mark.parametrize("backend", ["cpu", pytest.param("numba", marks=_needs_numba)])
def test_ctrl_c_keeps_the_checkpoint_and_says_how_to_resume(tmp_path, backend):
    """On numba the compiled path runs chunks of a fraction of a second: Ctrl-C lands
    between two of them."""
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    make_engine(backend).warmup()
    # A test runner started in the background has SIGINT ignored, which a child inherits and
    # Python then keeps: with a handler here instead, the child starts with the default.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "handprop", "train", "--train-subset", "3000",
             "--val-size", "300", "--hidden", "512", "--batch-size", "8", "--epochs", "50",
             "--backend", backend, "--no-progress", "--out", str(out)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.time() + 60
    while time.time() < deadline and not (out / "metrics.jsonl").exists():
        time.sleep(0.05)
    time.sleep(0.2)  # inside the next epoch
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert f"handprop train --resume {out}" in err and "Traceback" not in err
    assert (out / CHECKPOINT_NAME).exists()


def test_resuming_a_checkpoint_from_before_per_batch_losses(tmp_path):
    """Checkpoints written before batch losses and gradient norms were kept still resume."""
    from handprop.io import load_arrays, save_arrays

    out = tmp_path / "run"
    run_training({**SMALL, "epochs": 2}, out, progress=False, log=lambda *a: None)
    arrays, meta = load_arrays(out / CHECKPOINT_NAME)
    arrays.pop("log/batch_loss")
    for row in meta["history"]:
        row.pop("grad_norms")
    save_arrays(out / CHECKPOINT_NAME, arrays, meta)
    config = json.loads((out / "config.json").read_text())
    config["config"]["epochs"] = 4
    (out / "config.json").write_text(json.dumps(config))
    run_training(None, out, resume=True, progress=False, log=lambda *a: None)
    rows = [line.split(",") for line in (out / "batch_loss.csv").read_text().splitlines()[1:]]
    per_epoch = len(rows) // 4
    assert len(rows) == 4 * per_epoch
    assert all(r[2] == "nan" for r in rows[:2 * per_epoch])  # unknown, but kept in step
    assert all(math.isfinite(float(r[2])) for r in rows[2 * per_epoch:])
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [bool(r.get("grad_norms")) for r in history] == [False, False, True, True]
    assert (out / "gradients.png").exists() and (out / "curves.png").exists()


def _probe_model(engine, compile):
    """Dense, dropout and (off numba's compiled path, which has none) batch norm: the
    layers whose random draws and running statistics the probe must put back."""
    from handprop.nn import BatchNorm, Dense, Dropout, Sequential

    middle = [] if engine == "numba" and compile else [BatchNorm()]
    return Sequential([Dense(16, "tanh"), *middle, Dropout(0.3), Dense(2)], input_dim=5,
                      engine=make_engine(engine), dtype="float64", seed=3)


def _probe_run(engine, compile, tmp_path=None, **kwargs):
    x, y = toy_problem(n=200)
    model = _probe_model(engine, compile)
    trainer = Trainer(model, "softmax_cross_entropy", Adam(lr=0.01), batch_size=16, epochs=3,
                      seed=5, progress=False, compile=compile, checkpoint_dir=tmp_path,
                      **kwargs)
    expect_path(trainer, engine, compile)
    history = trainer.fit(x[:150], y[:150], x[150:], y[150:])
    return trainer, history


@pytest.mark.parametrize("engine, compile", PATHS)
def test_gradient_probe_off_trains_the_same_bits(engine, compile):
    on, history_on = _probe_run(engine, compile)
    off, history_off = _probe_run(engine, compile, gradient_probe=0)
    assert on.gradient_probe == 1024 and off.gradient_probe == 0
    assert all(row["grad_norms"] for row in history_on.rows)  # the probe ran (on 150 samples)
    assert [row["grad_norms"] for row in history_off.rows] == [None, None, None]
    assert off.batch_losses == on.batch_losses  # bit for bit, every mini-batch
    weights_on, weights_off = on.model.get_weights(), off.model.get_weights()
    assert weights_off.keys() == weights_on.keys()
    for name in weights_on:  # weights and batch norm's running statistics
        np.testing.assert_array_equal(weights_off[name], weights_on[name])
    states_on = on.optimizer.state_arrays(on.engine)
    for name, value in off.optimizer.state_arrays(off.engine).items():
        np.testing.assert_array_equal(value, states_on[name])
    assert off.rng.bit_generator.state == on.rng.bit_generator.state
    assert off.model.rng_states() == on.model.rng_states()
    for row_on, row_off in zip(history_on.rows, history_off.rows):
        same = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr")
        assert {k: row_off[k] for k in same} == {k: row_on[k] for k in same}


def test_a_smaller_gradient_probe_measures_on_fewer_samples():
    trainer, history = _probe_run("cpu", True, gradient_probe=10)
    xs, ys = trainer.to_engine(*toy_problem(n=200))
    assert history.rows[-1]["grad_norms"] == trainer.gradient_norms(xs[:10], ys[:10])
    assert history.rows[-1]["grad_norms"] != trainer.gradient_norms(xs[:150], ys[:150])


@pytest.mark.parametrize("value", [-1, 1.5, 1024.0, "1024", None, True, [16]])
def test_a_bad_gradient_probe_is_refused(value):
    with pytest.raises(ConfigError, match=r"gradient_probe must be a whole number of training "
                                          r"samples >= 0 \(0 turns the per-epoch gradient-norm "
                                          r"probe off"):
        make_trainer(gradient_probe=value)


def test_gradient_probe_accepts_numpy_integers():
    assert make_trainer(gradient_probe=np.int64(64)).gradient_probe == 64


def test_a_run_without_the_probe_resumes_with_it_and_plots(tmp_path):
    """Rows with ``grad_norms`` None go through the checkpoint, resume with the probe on
    continues the same trajectory, and the gradient plot takes the missing epochs."""
    from handprop.train.plots import plot_gradient_norms

    x, y = toy_problem(n=200)

    def trainer(epochs, **kwargs):
        return Trainer(_probe_model("cpu", True), "softmax_cross_entropy", Adam(lr=0.01),
                       batch_size=16, epochs=epochs, seed=5, progress=False, **kwargs)

    straight = trainer(4)
    straight.fit(x, y)
    first = trainer(2, gradient_probe=0, checkpoint_dir=tmp_path)
    first.fit(x, y)
    resumed = trainer(4)
    resumed.load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert [row["grad_norms"] for row in resumed.history.rows] == [None, None]
    resumed.fit(x, y)
    norms = [row["grad_norms"] for row in resumed.history.rows]
    assert norms[:2] == [None, None]
    assert norms[2:] == [row["grad_norms"] for row in straight.history.rows][2:]
    assert resumed.batch_losses == straight.batch_losses
    for name, value in straight.model.get_weights().items():
        np.testing.assert_array_equal(resumed.model.get_weights()[name], value)
    path = plot_gradient_norms(resumed.history.rows, tmp_path / "gradients.png")
    assert path.exists() and path.stat().st_size > 0
