"""Training convolutional models: exact resume from a checkpoint after a crash, and whole runs
on every fused engine against the ``cpu`` reference (per-batch losses and final weights)."""

from __future__ import annotations

import numpy as np
import pytest

from engine_cases import make_engine
from handprop.nn import (Activation, AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten,
                         MaxPool2D, Sequential)
from handprop.optim import Adam, make_optimizer
from handprop.train import Trainer
from handprop.train.trainer import CHECKPOINT_NAME


def images(n=96, seed=0):
    """Which quadrant is bright: four classes a small CNN learns in a few epochs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.normal(0.0, 0.5, size=(n, 2, 8, 8))
    for k in range(4):
        r, c = divmod(k, 2)
        x[y == k, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4] += 1.0
    return x, y


def cnn(engine, dtype="float64", seed=0):
    return Sequential([Conv2D(4, 3, padding="same", use_bias=False), BatchNorm(),
                       Activation("relu"), Dropout(0.2), MaxPool2D(2),
                       Conv2D(6, 3, stride=2, padding=1, activation="tanh"), AvgPool2D(2),
                       Flatten(), Dense(4)],
                      input_shape=(2, 8, 8), engine=engine, dtype=dtype, seed=seed)


def test_a_crashed_conv_run_resumes_to_identical_weights(tmp_path):
    x, y = images()

    def trainer(**kwargs):
        return Trainer(cnn(make_engine("cpu")), "softmax_cross_entropy", Adam(lr=0.01),
                       batch_size=16, epochs=4, l2=1e-3, seed=0, progress=False, **kwargs)

    straight = trainer()
    history = straight.fit(x, y)
    # It learns, so the weights really move.
    assert history.rows[-1]["train_loss"] < 0.8 * history.rows[0]["train_loss"]

    class Crash(Exception):
        pass

    def crash(epoch, batch):
        if epoch == 3 and batch == 2:
            raise Crash

    crashed = trainer(checkpoint_dir=tmp_path, on_batch_end=crash)
    with pytest.raises(Crash):
        crashed.fit(x, y)
    resumed = trainer(checkpoint_dir=tmp_path)
    resumed.load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert resumed.epoch == 2
    resumed.fit(x, y)
    final = straight.model.get_weights()
    assert {"layer0.W", "layer1.running_mean", "layer5.W", "layer8.W"} <= set(final)
    for name, value in final.items():
        np.testing.assert_array_equal(resumed.model.get_weights()[name], value, err_msg=name)
    assert resumed.batch_losses == straight.batch_losses
    assert [r["grad_norms"] for r in resumed.history.rows] == \
           [r["grad_norms"] for r in straight.history.rows]
    assert set(history.rows[-1]["grad_norms"]) == {"layer0.W", "layer5.W", "layer8.W"}


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 2e-4)])
@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_whole_conv_run_matches_the_reference(fused_engine, dtype, rtol, optimizer):
    x, y = images(64, seed=1)
    runs = []
    for engine in (make_engine("cpu"), fused_engine):
        trainer = Trainer(cnn(engine, dtype), "softmax_cross_entropy",
                          make_optimizer(optimizer, lr=0.02), batch_size=16, epochs=2, l2=1e-3,
                          seed=3, progress=False)
        trainer.fit(x, y)
        runs.append(trainer)
    ref, mine = runs
    assert len(mine.batch_losses) == 8
    np.testing.assert_allclose(mine.batch_losses, ref.batch_losses, rtol=rtol)
    for name, value in ref.model.get_weights().items():
        np.testing.assert_allclose(mine.model.get_weights()[name], value, rtol=rtol * 10,
                                   atol=rtol, err_msg=name)
    assert mine.history.rows[-1]["train_acc"] == ref.history.rows[-1]["train_acc"]
