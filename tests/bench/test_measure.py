"""The benchmark's method: epoch lengths, the lengthening of short epochs, per-round ratios
and the noisy mark. Fake runners stand in for the contenders; no speed is measured."""

from __future__ import annotations

import pytest

from handprop import bench
from handprop.bench import measure
from handprop.bench.stats import Stat, ratio_stat, spread


class FakeRunner:
    """A contender whose timed epochs take ``per_step * steps`` seconds, round by round
    scaled by ``pattern`` (without sleeping)."""

    def __init__(self, label, steps, per_step, pattern=(1.0,)):
        self.label, self.steps, self.per_step = label, steps, per_step
        self.pattern, self.rounds = pattern, 0
        self.warmup_epochs, self.warmup_seconds, self.closed = None, None, False

    def warmup(self, epochs=1):
        self.warmup_epochs = [self.per_step * self.steps] * (epochs + 1)
        self.warmup_seconds = sum(self.warmup_epochs)

    def run(self):
        value = self.per_step * self.steps * self.pattern[self.rounds % len(self.pattern)]
        self.rounds += 1
        return value

    def close(self):
        self.closed = True


@pytest.fixture
def fakes(monkeypatch):
    """``make_runners`` builds fake contenders: handprop's cpu row, jax scan and the ceiling."""
    built = []
    speeds = {"cpu": (1e-3, (1.0, 2.0, 1.0)), "jax scan": (2e-3, (1.0, 1.0, 1.5)),
              "ceiling": (1e-5, (1.0,))}

    def make(model, batch, optimizer, engines, *, steps, comparators=(), with_ceiling=True,
             seed=0):
        labels = ["cpu", *comparators] + (["ceiling"] if with_ceiling else [])
        runners = [FakeRunner(label, steps, *speeds[label]) for label in labels]
        built.append(runners)
        return runners

    monkeypatch.setattr(measure, "make_runners", make)
    return built


def test_ratios_are_taken_round_by_round():
    handprop, other = Stat([1.0, 2.0, 1.0]), Stat([2.0, 2.0, 3.0])
    assert ratio_stat(other, handprop).values == [2.0, 1.0, 3.0]
    assert spread(Stat([1.0, 2.0, 4.0])) == 1.5
    with pytest.raises(ValueError, match="same rounds"):
        ratio_stat(Stat([1.0]), handprop)


def test_a_short_epoch_is_lengthened_and_the_runners_rebuilt(fakes):
    secs, steps = measure.measure_config("784-100-10 sigmoid", 64, "sgd", ["cpu"], steps=4,
                                         repeats=3, comparators=["jax scan"])
    # cpu's warm-up epoch took 4 ms: 4 steps -> ceil(4 * 1.2 * 0.25 / 0.004) = 300 steps
    assert steps == 300 and len(fakes) == 2
    assert all(r.closed for runners in fakes for r in runners)
    assert secs["cpu"].values == pytest.approx([0.3, 0.6, 0.3])
    # the ceiling is a limit, not a contender: its 0.003 s epochs did not set the length
    assert min(secs["ceiling"].values) < measure.MIN_EPOCH_SECONDS


def test_rows_carry_per_round_ratios_spreads_and_the_noisy_mark(fakes):
    rows = bench.measure_training(["784-100-10 sigmoid"], [64], ["sgd"], ["cpu"], repeats=3,
                                  comparators=["jax scan"], with_ceiling=False)
    (row,) = rows
    assert row["epoch_samples"] == row["steps"] * 64 >= bench.MIN_EPOCH_SAMPLES
    # per round jax/cpu seconds: 1/1, 1/2, 1.5/1 (times 2e-3/1e-3): 2, 1, 3
    assert (row["ratio_to_jax_scan"], row["ratio_to_jax_scan_min"],
            row["ratio_to_jax_scan_max"]) == pytest.approx((2.0, 1.0, 3.0))
    assert row["spread"] == pytest.approx(0.5) and row["noisy"] is True  # rates r, r/2, r
    assert row["min_epoch_seconds"] >= measure.MIN_EPOCH_SECONDS
    table = bench.format_training_table(rows)
    assert "2.00 [1.00-3.00]" in table and "50 % noisy" in table


def test_every_plan_has_long_enough_epochs():
    for model, batch, _ in bench.plan_configs() + bench.plan_configs([bench.CNN_MODEL]):
        least = 4096 if bench.is_cnn(model) else 16384
        assert bench.default_steps(model, batch) * batch >= least
        assert bench.default_steps(model, batch, scale=0.25) * batch >= least  # never shorter
