"""The compiled training path against the layer-by-layer path it stands in for.

Every supported configuration trains twice on the ``numba`` engine, once per
path, from the same weights and batches: per-batch losses agree within 1e-5
relative in float32 and 1e-10 in float64 over 3 epochs, and the accuracy
counts are the same.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine_cases import make_engine
from handprop.engines import engine_status
from handprop.nn import Activation, Dense, Dropout, Layer, Sequential, mlp
from handprop.optim import make_optimizer
from handprop.optim.schedules import make_schedule
from handprop.train import Trainer

pytestmark = pytest.mark.skipif(not engine_status("numba").available,
                                reason=f"numba engine unavailable: {engine_status('numba').reason}")

TOLERANCE = {"float32": 1e-5, "float64": 1e-10}
N_SAMPLES, FEATURES, CLASSES = 150, 12, 3


def data(n=N_SAMPLES, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES))
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 0.5)
    return x, y


def schedule(name):
    options = {"constant": {}, "step": {"drop": 0.5, "every": 7},
               "exponential": {"rate": 0.5, "decay_steps": 10}, "inverse_time": {"k": 0.05},
               "cyclic": {"step_size": 5}}[name]
    return make_schedule(name, 0.05, **options)


# (id, options): everything not given is tanh, softmax cross-entropy, SGD, batch 16, float32.
CONFIGS = (
    [(f"act-{a}", {"activation": a}) for a in
     ("identity", "sigmoid", "tanh", "relu", "leaky_relu", "lecun_tanh")]
    + [("loss-mse", {"loss": "mse", "output": "sigmoid"}),
       ("loss-mse-targets", {"loss": "mse", "output": "sigmoid", "targets": True}),
       ("loss-bce-one-logit", {"loss": "binary_cross_entropy", "classes": 2, "outputs": 1}),
       ("loss-bce-targets", {"loss": "binary_cross_entropy", "targets": True})]
    + [(f"opt-{o}{'-wd' if wd else ''}", {"optimizer": o, "weight_decay": wd})
       for o in ("sgd", "momentum", "nesterov", "adam") for wd in (0.0, 0.01)]
    + [(f"schedule-{s}", {"schedule": s}) for s in
       ("constant", "step", "exponential", "inverse_time", "cyclic")]
    + [("l2", {"l2": 0.01}), ("l2-adam", {"l2": 0.01, "optimizer": "adam"}),
       ("dropout", {"dropout": 0.3, "activation": "relu"}),
       ("dropout-adam-deep", {"dropout": 0.2, "optimizer": "adam", "hidden": [16, 8, 8]}),
       ("separate-activation-layer", {"layers": "activation"}),
       ("no-bias", {"layers": "no-bias"}),
       ("last-batch-smaller", {"batch_size": 32}),   # 150 = 4 * 32 + 22
       ("one-batch-per-epoch", {"batch_size": 150}),
       ("batch-1", {"batch_size": 1, "n": 40}),
       # Mostly zero inputs, as in MNIST: small batches skip the zeros in the first layer.
       ("batch-1-sparse", {"batch_size": 1, "n": 40, "sparse": True}),
       ("batch-3-sparse", {"batch_size": 3, "n": 40, "sparse": True, "activation": "sigmoid"}),
       ("batch-2-sparse-momentum", {"batch_size": 2, "n": 40, "sparse": True,
                                    "optimizer": "momentum"})]
)


def build(options, dtype, engine):
    hidden = options.get("hidden", [16, 8])
    outputs = options.get("outputs", options.get("classes", CLASSES))
    activation = options.get("activation", "tanh")
    if options.get("layers") == "activation":
        layers = [Dense(16), Activation(activation), Dense(8, activation), Dense(outputs)]
        return Sequential(layers, input_dim=FEATURES, engine=engine, dtype=dtype, seed=1)
    if options.get("layers") == "no-bias":
        layers = [Dense(16, activation, use_bias=False), Dense(outputs, use_bias=False)]
        return Sequential(layers, input_dim=FEATURES, engine=engine, dtype=dtype, seed=1)
    return mlp(FEATURES, hidden, outputs, activation=activation,
               output_activation=options.get("output", "identity"), engine=engine, dtype=dtype,
               seed=1, dropout=options.get("dropout", 0.0))


def train(options, dtype, compile, epochs=3, **trainer_options):
    engine = make_engine("numba")
    x, y = data(options.get("n", N_SAMPLES))
    if options.get("sparse"):
        x = x * (np.random.default_rng(3).random(x.shape) < 0.2)
    classes = options.get("classes", CLASSES)
    y = y % classes
    if options.get("targets"):  # target arrays instead of labels
        y = np.eye(classes)[y] * 0.8 + 0.1
    model = build(options, dtype, engine)
    name = options.get("optimizer", "sgd")
    hyper = {"momentum": 0.9} if name in ("momentum", "nesterov") else {}
    lr = schedule(options.get("schedule", "constant"))
    if name == "adam":
        lr = make_schedule("constant", 0.01)
    optimizer = make_optimizer(name, lr=lr, weight_decay=options.get("weight_decay", 0.0), **hyper)
    trainer = Trainer(model, options.get("loss", "softmax_cross_entropy"), optimizer,
                      batch_size=options.get("batch_size", 16), epochs=epochs,
                      l2=options.get("l2", 0.0), seed=2, compile=compile,
                      **{"progress": False, **trainer_options})
    history = trainer.fit(x, y, x[:50], y[:50])
    return trainer, history


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("options", [c[1] for c in CONFIGS], ids=[c[0] for c in CONFIGS])
def test_compiled_matches_the_layer_path(options, dtype):
    compiled, history = train(options, dtype, compile=True)
    layered, reference = train(options, dtype, compile=False)
    assert compiled.training_path == "compiled", compiled.compile_reason
    assert layered.training_path == "layer by layer"
    n = options.get("n", N_SAMPLES)
    assert len(compiled.batch_losses) == 3 * math.ceil(n / options.get("batch_size", 16))
    np.testing.assert_allclose(compiled.batch_losses, layered.batch_losses,
                               rtol=TOLERANCE[dtype], atol=0)
    counts = [round(r["train_acc"] * n) for r in history.rows]
    assert counts == [round(r["train_acc"] * n) for r in reference.rows]
    assert [r["val_acc"] for r in history.rows] == [r["val_acc"] for r in reference.rows]
    assert compiled.optimizer.t == layered.optimizer.t
    assert compiled.batch_losses[-1] != compiled.batch_losses[0]  # it trained


def test_chunk_sizes_do_not_change_the_result():
    """Chunks of one batch (what an on_batch_end callback gets) against whole chunks:
    the same numbers to the last bit, dropout masks and Adam included."""
    options = {"dropout": 0.3, "optimizer": "adam", "activation": "relu"}
    seen = []
    one, _ = train(options, "float32", True, on_batch_end=lambda e, b: seen.append((e, b)))
    whole, _ = train(options, "float32", True)
    assert one.batch_losses == whole.batch_losses
    for name, value in whole.model.get_weights().items():
        np.testing.assert_array_equal(one.model.get_weights()[name], value)
    batches = math.ceil(N_SAMPLES / 16)
    assert seen == [(e, b) for e in (1, 2, 3) for b in range(1, batches + 1)]


def test_the_compiled_path_updates_the_models_own_arrays():
    trainer, history = train({"optimizer": "momentum"}, "float64", True, epochs=1)
    model = trainer.model
    W = model.layers[0].params["W"]
    assert np.shares_memory(W, model.flat_params)
    velocity = trainer.optimizer.state["layer0.W"]["velocity"]
    assert np.shares_memory(velocity, trainer.optimizer.flat_state["velocity"])
    assert np.abs(velocity).sum() > 0
    # Evaluation and the gradient probe read the same weights.
    x, y = data()
    assert trainer.evaluate(x[:50], y[:50])[1] == history.rows[-1]["val_acc"]
    assert set(history.rows[-1]["grad_norms"]) == {"layer0.W", "layer1.W", "layer2.W"}


# ------------------------------------------------------------------ fallbacks
def _reason(model, loss="softmax_cross_entropy", **options):
    optimizer = make_optimizer("sgd", lr=0.1)
    trainer = Trainer(model, loss, optimizer, batch_size=8, progress=False, **options)
    return trainer


def test_cpu_runs_layer_by_layer_and_says_why():
    trainer = _reason(mlp(4, [3], 2, engine=make_engine("cpu")))
    assert trainer.compiled is None and trainer.training_path == "layer by layer"
    assert trainer.compile_reason == "the cpu engine runs the layer-by-layer path only"


def test_compile_false_forces_the_layer_path():
    trainer = _reason(mlp(4, [3], 2, engine=make_engine("numba")), compile=False)
    assert trainer.compiled is None and "--no-compile" in trainer.compile_reason
    assert _reason(mlp(4, [3], 2, engine=make_engine("numba"))).compiled is not None


def test_batch_norm_is_refused_by_name_and_still_trains():
    model = mlp(FEATURES, [8], CLASSES, batch_norm=True, engine=make_engine("numba"))
    trainer = _reason(model)
    assert trainer.compiled is None
    assert trainer.compile_reason == ("batch norm: the compiled path does not support it yet; "
                                      "running layer by layer")
    x, y = data(40)
    assert len(trainer.fit(x, y, more_epochs=1)) == 1


class Scale(Layer):
    """A layer the compiled path has never heard of."""

    def forward(self, x, training=False):
        return x * 2.0

    def backward(self, grad_out, need_input_grad=True):
        return grad_out * 2.0

    def describe(self):
        return "Scale(2)"


def test_an_unknown_layer_type_falls_back_with_its_name():
    model = Sequential([Dense(5, "tanh"), Scale(), Dense(2)], input_dim=4,
                       engine=make_engine("numba"))
    trainer = _reason(model)
    assert trainer.compiled is None
    assert trainer.compile_reason.startswith("layer 1 (Scale(2)) here")
    for layers, words in (([Dropout(0.5), Dense(2)], "layer 0 (Dropout(0.5))"),
                          ([Dense(3), Dense(2), Dropout(0.2)], "dropout after the output")):
        model = Sequential(layers, input_dim=4, engine=make_engine("numba"))
        assert words in _reason(model).compile_reason


# ---------------------------------------------------- against PyTorch autograd
@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_compiled_run_matches_pytorch_batch_for_batch(name):
    """The same network, initial weights and batches in PyTorch float64: the compiled
    path's per-batch losses agree to 1e-10 over 3 epochs."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install "
                                                "'handprop[compare]')")
    torch.set_num_threads(1)
    options = {"optimizer": name, "weight_decay": 0.01}
    engine = make_engine("numba")
    model = build(options, "float64", engine)
    start = model.get_weights()
    trainer, _ = train(options, "float64", True)
    assert trainer.training_path == "compiled"

    x, y = data()
    layers = []
    for i in (0, 1, 2):
        linear = torch.nn.Linear(*start[f"layer{i}.W"].shape).double()
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(start[f"layer{i}.W"].T.copy()))
            linear.bias.copy_(torch.from_numpy(start[f"layer{i}.b"]))
        layers += [linear, torch.nn.Tanh()]
    net = torch.nn.Sequential(*layers[:-1])
    if name == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=0.01, weight_decay=0.01, foreach=False)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01)
    rng, losses = np.random.default_rng(2), []  # the trainer's seed: the same batch order
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(3):
        order = torch.from_numpy(rng.permutation(len(x)))
        for b in range(0, len(x), 16):
            idx = order[b:b + 16]
            loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    np.testing.assert_allclose(trainer.batch_losses, losses, rtol=1e-10)


# ----------------------------------------------------- lr-find, CLI and sweeps
LR_FIND = {"train_subset": 2000, "val_size": 500, "hidden": [32], "activation": "sigmoid",
           "optimizer": "sgd", "batch_size": 32, "backend": "numba", "dtype": "float64"}


def test_lr_find_gives_the_same_curve_on_both_paths():
    from handprop.train.config import make_config
    from handprop.train.lr_find import lr_range_test

    compiled = lr_range_test(make_config(LR_FIND), 1e-4, 100.0, 120, progress=False)
    layered = lr_range_test(make_config(LR_FIND, {"compile": False}), 1e-4, 100.0, 120,
                            progress=False)
    assert compiled.path.startswith("path: compiled")
    assert layered.path == "path: layer by layer (compiling was turned off (--no-compile))"
    assert compiled.lrs == layered.lrs and compiled.stopped == layered.stopped
    assert compiled.stopped.startswith("the smoothed loss passed 4x its minimum")
    np.testing.assert_allclose(compiled.losses, layered.losses, rtol=1e-10)
    assert compiled.suggestion == layered.suggestion


def test_the_cli_says_which_path_runs_and_no_compile_reaches_every_command(tmp_path, capsys):
    import json

    from handprop.cli import main

    quick = ["--train-subset", "300", "--val-size", "100", "--hidden", "8", "--epochs", "1",
             "--backend", "numba", "--no-progress"]
    assert main(["train", *quick, "--out", str(tmp_path / "a")]) == 0
    assert "\npath: compiled (" in capsys.readouterr().out
    assert main(["train", *quick, "--no-compile", "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "path: layer by layer (compiling was turned off (--no-compile))" in out
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["training_path"] == "layer by layer"
    assert json.loads((tmp_path / "b" / "config.json").read_text())["config"]["compile"] is False
    # Resuming may switch the path, as it may switch the engine.
    (tmp_path / "b" / "summary.json").unlink()
    assert main(["train", "--resume", str(tmp_path / "b"), "--no-progress"]) == 0
    assert "path: layer by layer" in capsys.readouterr().out

    assert main(["lr-find", "--train-subset", "300", "--hidden", "8", "--backend", "numba",
                 "--steps", "20", "--no-compile", "--no-progress",
                 "--out", str(tmp_path / "lr.png")]) == 0
    assert "path: layer by layer" in capsys.readouterr().out

    assert main(["sweep", "--dataset", "linear", "--val-size", "50", "--hidden", "4",
                 "--epochs", "1", "--backend", "numba", "--no-compile", "--grid", "lr=0.1,1",
                 "--out", str(tmp_path / "s"), "--no-progress", "--no-plots"]) == 0
    results = [json.loads(p.read_text()) for p in (tmp_path / "s").glob("trials/*/result.json")]
    assert len(results) == 2
    assert all(r["config"]["compile"] is False for r in results)
    assert all(r["summary"]["training_path"] == "layer by layer" for r in results)


def test_the_progress_bar_moves_chunk_by_chunk(monkeypatch):
    """On a terminal the batch bar advances after every compiled chunk, with the loss
    and accuracy so far; chunks are sized by the clock (here: a few batches each)."""
    import io
    import sys

    from handprop.train import trainer as trainer_module

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    advanced = []
    real_advance = trainer_module.EpochReporter.advance

    def advance(self, count, read_metrics):
        advanced.append((count, *read_metrics()))
        real_advance(self, count, read_metrics)

    monkeypatch.setattr(sys, "stderr", Terminal())
    monkeypatch.setattr(trainer_module.EpochReporter, "advance", advance)
    monkeypatch.setattr(trainer_module.ChunkClock, "record", lambda self, batches, seconds: None)
    monkeypatch.setattr(trainer_module.ChunkClock, "__init__",
                        lambda self, batch_size, target=0.25: setattr(self, "size", 4))
    trainer, _ = train({"batch_size": 8}, "float32", True, epochs=1, progress=True)
    assert trainer.training_path == "compiled"
    batches = math.ceil(N_SAMPLES / 8)
    assert [count for count, _, _ in advanced] == [4] * (batches // 4) + [batches % 4]
    assert all(math.isfinite(loss) and 0 <= acc <= 1 for _, loss, acc in advanced)
    assert "epoch   1/1  train_loss" in sys.stderr.getvalue()


def test_the_compiled_gemms_run_in_numpys_own_blas():
    """One OpenBLAS for the whole process: the compiled epoch's products go to the copy NumPy
    calls (its wheels export scipy_sgemm_64_), so no second thread pool spins against it."""
    from threadpoolctl import threadpool_info

    from handprop.engines.numba import blas

    numpy_pools = [p for p in threadpool_info() if p["internal_api"] == "openblas"
                   and "numpy" in p["filepath"]]
    assert numpy_pools, "this test expects NumPy's wheel, which ships its own OpenBLAS"
    found = blas.numpy_blas_gemm()
    assert found and found["float32"] and found["float64"] and found["float32"] != found["float64"]
    blas.register_blas()
    assert blas.BLAS_INT_BITS == [64]


@pytest.mark.parametrize("options", [
    {"batch_size": 150},  # one batch an epoch, ten units of rows
    {"batch_size": 32},   # the last batch smaller
    {"batch_size": 64, "dropout": 0.2, "optimizer": "adam", "hidden": [16, 8, 8]}],
    ids=["one-batch", "last-batch-smaller", "dropout-adam-deep"])
def test_the_threads_of_the_dense_epoch_give_the_same_bits_as_one(monkeypatch, options):
    """The compiled epoch on handprop's own products shares each step between threads with
    fixed parts (rows for the data, weight rows for the weights) and sums the loss per unit
    of rows: the same losses and weights on one thread or several, run after run. Layers of
    unequal widths, so a thread working on one layer while another works on the next would
    show any row it overwrites (repeated: such a race shows in some runs only)."""
    from handprop.engines.numba import simd, threads

    if not simd.vector_kernels():
        pytest.skip("the numba kernels target a CPU without AVX2 or AVX-512: BLAS runs")
    monkeypatch.setattr(threads, "kernel_threads", lambda: 1)
    one, _ = train(options, "float64", compile=True)
    assert "1 thread)" in one.compiled.describe()
    for count in (2, 3):
        monkeypatch.setattr(threads, "kernel_threads", lambda count=count: count)
        for _ in range(8):
            many, _ = train(options, "float64", compile=True)
            assert f"{min(count, -(-options['batch_size'] // 16))} threads)" in \
                many.compiled.describe()  # never more threads than units of rows
            np.testing.assert_array_equal(many.batch_losses, one.batch_losses)
            np.testing.assert_array_equal(many.model.flat_params, one.model.flat_params)
