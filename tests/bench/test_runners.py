"""The benchmark's runners: the handprop runner's seams (trainer class, ``compile``,
row label) and the GEMM-only ceiling. No speed is asserted."""

from __future__ import annotations

import math

import numpy as np
import pytest

from handprop import bench
from handprop.train.trainer import Trainer

TINY = dict(model="784-100-10 sigmoid", batch=16, optimizer="sgd", steps=3)


class CountingTrainer(Trainer):
    """A profiler's seam: a subclass times (here: counts) the public count_correct."""

    calls = 0

    def __init__(self, *args, compile=None, **kwargs):
        self.compile_option = compile
        super().__init__(*args, **kwargs)

    def count_correct(self, outputs, y):
        CountingTrainer.calls += 1
        return super().count_correct(outputs, y)


def test_trainer_class_seam_and_epochs():
    CountingTrainer.calls = 0
    runner = bench.HandpropRunner("cpu", **TINY, trainer_class=CountingTrainer)
    assert isinstance(runner.trainer, CountingTrainer)
    seconds = runner.epochs(1)
    assert len(seconds) == 1 and seconds[0] > 0 and CountingTrainer.calls == TINY["steps"]
    runner.epochs(1)
    assert runner.trainer.epoch == 2 and CountingTrainer.calls == 2 * TINY["steps"]
    losses = runner.batch_losses()
    assert len(losses) == 2 * TINY["steps"] and all(math.isfinite(v) for v in losses)


def test_one_round_is_a_lead_in_and_a_timed_epoch_of_one_fit_call():
    """The clock: the wall time between the lead-in epoch's end and the timed epoch's end,
    both inside one ``Trainer.fit`` call (read by its ``on_epoch_end`` hook), so the fit's
    once-per-call costs fall on the lead-in, not on the timed epoch."""
    import time

    fits = []

    class SlowStart(Trainer):
        def fit(self, *args, **kwargs):
            fits.append(kwargs.get("more_epochs"))
            time.sleep(0.5)  # a once-per-fit cost, before the first epoch
            return super().fit(*args, **kwargs)

    runner = bench.HandpropRunner("cpu", **TINY, trainer_class=SlowStart)
    lead, timed = runner.epochs(2)
    assert fits == [2] and runner.trainer.epoch == 2
    assert lead >= 0.5 > timed
    assert runner.run() < 0.5 and fits == [2, 2] and runner.trainer.epoch == 4


def test_compile_is_passed_only_when_given():
    default = bench.HandpropRunner("cpu", **TINY, trainer_class=CountingTrainer)
    assert default.trainer.compile_option is None and default.label == "cpu"
    compiled = bench.HandpropRunner("cpu", **TINY, trainer_class=CountingTrainer,
                                    compile=True, label="cpu compiled")
    assert compiled.trainer.compile_option is True and compiled.label == "cpu compiled"
    if "compile" not in Trainer.__init__.__code__.co_varnames:
        with pytest.raises(TypeError):  # this trainer has no compile option yet
            bench.HandpropRunner("cpu", **TINY, compile=False)


def test_ceiling_runs_the_layers_gemms():
    runner = bench.CeilingRunner("784-256-256-10 relu", 8, 2)
    runner.step()
    np.testing.assert_allclose(runner.z[0], runner.x @ runner.W[0], rtol=1e-5)
    np.testing.assert_allclose(runner.dW[0], runner.x.T @ runner.dz[0], rtol=1e-4, atol=1e-5)
    # 784x256, 256x256 (with input gradient), 256x10 (with input gradient)
    assert runner.flops_per_step == 2 * 8 * (2 * 784 * 256 + 3 * 256 * 256 + 3 * 256 * 10)
    assert runner.run() > 0


def test_interleave_rotates_and_counts():
    order = []

    class Fake:
        def __init__(self, label):
            self.label, self.warm = label, 0

        def warmup(self, epochs=1):
            self.warm += epochs

        def run(self):
            order.append(self.label)
            return 1.0

    runners = [Fake("a"), Fake("b"), Fake("c")]
    seconds = bench.interleave(runners, repeats=3, settle=0)
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert {k: v.values for k, v in seconds.items()} == {k: [1.0] * 3 for k in "abc"}
    assert all(r.warm == 1 for r in runners)


def test_handprop_runner_times_epochs_without_the_gradient_probe():
    """The comparators compute no gradient norms, so handprop's timed epochs do not either."""
    runner = bench.HandpropRunner("cpu", **TINY)
    assert bench.HandpropRunner.gradient_probe == 0
    assert runner.trainer.gradient_probe == 0
    runner.run()
    assert runner.trainer.history.rows[-1]["grad_norms"] is None
    profiled = bench.HandpropRunner("cpu", **TINY, trainer_class=CountingTrainer)
    assert profiled.trainer.gradient_probe == 0  # the profiler's trainer too


def test_measured_rows_say_the_probe_was_off():
    rows = bench.measure_training(["784-100-10 sigmoid"], [8], ["sgd"], ["cpu"], repeats=1,
                                  steps=2, comparators=[], with_ceiling=False)
    assert [r["gradient_probe"] for r in rows] == [0]


def test_probe_note_tells_old_runs_from_new():
    from handprop.bench.report import probe_note

    off = probe_note([{"gradient_probe": 0}, {"gradient_probe": 0}])
    assert "probe off (`gradient_probe=0`)" in off and "include" not in off
    old = probe_note([{"engine": "numba"}, {"engine": "cpu"}])  # saved before the switch
    assert "include" in old and "1,024 training samples" in old and "before" in old
    mixed = probe_note([{"gradient_probe": 0}, {}])
    assert "1024 (not recorded)" in mixed and "0" in mixed
    assert probe_note([]) == ""
