"""``CupyEngine`` itself, run on a CPU stand-in for CuPy (``cupy_standin.py``).

The kernels are the exact source the engine hands ``RawModule``, compiled for
the host. These tests check the engine's Python code that only a GPU would
otherwise run -- building, compile-once caching, the launch calling
convention, device-resident losses, the trainer's and the CLI's GPU paths.
They prove nothing about a real GPU; ``tests/test_cuda_gpu.py`` does that.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest

cuda_emulation = pytest.importorskip("cuda_emulation")
if cuda_emulation.compiler() is None:
    pytest.skip("no C++ compiler for the host emulation of the CUDA kernels", allow_module_level=True)

import array_api_compat.numpy as np_xp  # noqa: E402
from cupy_standin import DEVICE_NAME, make_standin  # noqa: E402

from handprop.cli import main  # noqa: E402
from handprop.engines import engine_status, get_engine, registry  # noqa: E402
from handprop.engines.cuda.source import KERNEL_FILES, kernel_source  # noqa: E402
from handprop.engines.cuda.engine import CupyEngine  # noqa: E402
from handprop.errors import NumericalError  # noqa: E402
from handprop.nn import mlp  # noqa: E402
from handprop.optim import SGD, Adam  # noqa: E402
from handprop.train import Trainer  # noqa: E402


@pytest.fixture
def standin(monkeypatch):
    """``import cupy`` gives the stand-in; the engine's per-process caches start empty."""
    cupy = make_standin(sm_count=2)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setattr(registry, "_instances", {})
    monkeypatch.setattr(CupyEngine, "_reason", None)
    monkeypatch.setattr(CupyEngine, "_modules", {})
    monkeypatch.setattr(CupyEngine, "_kernels", {})
    monkeypatch.setattr(CupyEngine, "_array_type", object)
    return cupy


def test_engine_builds_and_describes_its_device(standin):
    assert engine_status("cuda").available
    assert registry.resolve_name("auto") == "cuda"  # auto prefers a usable GPU
    engine = get_engine("cuda")
    assert engine.name == "cuda" and engine.is_gpu
    assert engine.xp is np_xp  # the namespace is taken from an array of the library
    info = engine.describe()
    assert info["device"] == DEVICE_NAME and info["compute_capability"] == "9.0"
    assert engine.max_blocks == 64  # 32 resident blocks per multiprocessor


def test_doctor_passes_and_each_kernel_file_compiles_once(standin, capsys):
    assert main(["doctor", "--backend", "cuda"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"PASS: all 80 checks match the cpu reference on cuda ({DEVICE_NAME})"

    rec = standin.recorder
    # One RawModule per .cu file, built from the self-contained source, no options.
    assert sorted(code for code, _ in rec.compiled) == sorted(kernel_source(f) for f in KERNEL_FILES)
    assert all(options == () for _, options in rec.compiled)
    # Kernel objects are looked up once and kept, though the doctor launches each many times.
    assert len(rec.functions) == len(set(rec.functions)) >= 16
    assert len(rec.launches) > 10 * len(rec.functions)
    for name, grid, block in rec.launches:
        assert block == (256,), name
        assert 1 <= grid[0] <= 64, (name, grid)
    # The doctor's (300, 129) case needs more than one block; small ones need one.
    assert max(grid[0] for _, grid, _ in rec.launches) > 1
    assert min(grid[0] for _, grid, _ in rec.launches) == 1

    # A second engine object shares the compiled modules and kernels.
    compiled, functions = len(rec.compiled), len(rec.functions)
    other = CupyEngine()
    other.activation(np.ones((2, 3), np.float32), "relu")
    other.adam_update(*(np.ones(5, np.float64) for _ in range(4)), 1e-3, 0.9, 0.999, 1e-8, 1)
    assert (len(rec.compiled), len(rec.functions)) == (compiled, functions)


def test_softmax_xent_leaves_the_loss_on_the_device(standin):
    """A bad label poisons the loss instead of forcing a host read of a flag."""
    engine = get_engine("cuda")
    logits = np.zeros((3, 4), dtype=np.float32)
    synchronizes = standin.recorder.synchronizes  # the probe's
    loss, grad = engine.softmax_xent(logits, np.array([0, 4, 1]))  # 4 is out of range
    assert standin.recorder.host_copies == 0 and standin.recorder.synchronizes == synchronizes
    assert math.isnan(engine.to_float(loss))
    loss, grad = engine.softmax_xent(logits, np.array([0, 3, 1]))
    assert engine.to_float(loss) == pytest.approx(math.log(4), rel=1e-6)


def _fit(engine, *, batch_size, epochs=2, optimizer=None, with_val=True, activation="tanh",
         seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(600, 20)).astype(np.float32)
    y = (x[:, :10].sum(axis=1) > x[:, 10:].sum(axis=1)).astype(np.int64)
    model = mlp(20, [16], 2, activation=activation, engine=engine, dtype="float32", seed=seed)
    trainer = Trainer(model, "softmax_cross_entropy", optimizer or Adam(lr=0.01),
                      batch_size=batch_size, epochs=epochs, seed=seed, progress=False)
    val = (x[:100], y[:100]) if with_val else (None, None)
    return trainer.fit(x[100:], y[100:], *val)


def test_training_reads_the_device_per_epoch_not_per_batch(standin, monkeypatch):
    engine = get_engine("cuda")
    reads = {"to_float": 0, "to_numpy": 0}
    for name in reads:
        original = getattr(engine, name)

        def counted(value, _name=name, _original=original):
            reads[_name] += 1
            return _original(value)

        monkeypatch.setattr(engine, name, counted)
    synchronizes = standin.recorder.synchronizes  # the probe's
    history = _fit(engine, batch_size=4)  # 125 batches an epoch
    # Per epoch: the NaN check at batches 50, 100 and 125, train loss and
    # accuracy, validation loss and accuracy, the gradient norms of the two
    # weight matrices -- 9 reads, whatever the batch count -- and one copy of
    # the epoch's per-batch losses.
    assert reads == {"to_float": 2 * 9, "to_numpy": 2}
    assert standin.recorder.host_copies == 2
    assert standin.recorder.synchronizes - synchronizes == 2  # at the end of each epoch
    # The same numbers as the reference engine, which reads every batch.
    reference = _fit(get_engine("cpu"), batch_size=4)
    for column in ("train_loss", "val_loss", "train_acc", "val_acc"):
        np.testing.assert_allclose(history.column(column), reference.column(column), rtol=1e-4)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning", "ignore:invalid:RuntimeWarning")
def test_a_diverging_run_stops_at_the_next_device_check(standin):
    def diverge(engine):
        _fit(engine, batch_size=4, optimizer=SGD(lr=1e20), activation="relu", with_val=False)

    with pytest.raises(NumericalError, match=r"epoch 1, batch 50;"):
        diverge(get_engine("cuda"))
    # The host engine checks every batch, so it stops within the first few.
    with pytest.raises(NumericalError, match=r"epoch 1, batch [1-9];"):
        diverge(get_engine("cpu"))


def test_train_command_runs_and_checkpoints_on_the_cuda_engine(standin, tmp_path):
    out = tmp_path / "run"
    code = main(["train", "--backend", "cuda", "--dataset", "mnist", "--train-subset", "500",
                 "--val-size", "100", "--hidden", "16", "--optimizer", "adam", "--lr", "0.01",
                 "--batch-size", "50", "--epochs", "2", "--no-progress", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["engine"] == "cuda" and summary["test_accuracy"] > 0.5
    # Resuming a finished run loads the checkpoint through the engine and changes nothing.
    before = dict(np.load(out / "model.npz"))
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    after = dict(np.load(out / "model.npz"))
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])


def test_lr_find_runs_on_the_cuda_engine(standin, tmp_path, capsys):
    assert main(["lr-find", "--backend", "cuda", "--train-subset", "600", "--val-size", "0",
                 "--hidden", "16", "--optimizer", "adam", "--batch-size", "32", "--steps", "40",
                 "--no-progress", "--json", "--out", str(tmp_path / "lr.png")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 10 <= len(report["losses"]) <= 40 and report["minimum"] is not None
    assert any(name.startswith("adam_update") for name, _, _ in standin.recorder.launches)
