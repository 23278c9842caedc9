"""Sweep point generation: grids, seeded random search, coarse-to-fine, parsing, planning.

No training here: these are pure functions and run in milliseconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from handprop.errors import ConfigError
from handprop.experiments.space import (Distribution, Refine, Space, axis_scale,
                                        parse_distribution, parse_grid_flag, parse_random_flag,
                                        refine_points, refine_ranges, space_from_toml)
from handprop.experiments.sweep import SweepSpec, plan_trials, trial_id


def test_grid_is_the_cartesian_product_in_order():
    space = Space(grid={"lr": [0.1, 1.0], "l2": [0.0, 1e-4, 1e-3]})
    points = space.points()
    assert len(points) == 6
    assert points[0] == {"lr": 0.1, "l2": 0.0}
    assert points[-1] == {"lr": 1.0, "l2": 1e-3}
    assert {(p["lr"], p["l2"]) for p in points} == {(a, b) for a in (0.1, 1.0)
                                                   for b in (0.0, 1e-4, 1e-3)}


def test_grid_repeated_values_give_one_point():
    assert Space(grid={"lr": [0.1, 0.1, 0.2]}).points() == [{"lr": 0.1}, {"lr": 0.2}]


def test_random_points_are_reproducible_and_depend_on_the_seed():
    space = Space(random={"l2": parse_distribution("loguniform(1e-5, 1e-1)"),
                          "momentum": parse_distribution("uniform(0.5, 0.99)"),
                          "activation": parse_distribution("choice(relu, tanh)")})
    first = space.points(trials=20, sample_seed=7)
    assert first == space.points(trials=20, sample_seed=7)
    assert first != space.points(trials=20, sample_seed=8)
    assert len(first) == 20


def test_distributions_stay_in_range_and_cover_it():
    rng = np.random.default_rng(0)
    log = Distribution("loguniform", (1e-5, 1e-1))
    exponents = np.log10([log.sample(rng) for _ in range(400)])
    # lambda = 10^U(-5,-1): every exponent inside, and the draws reach both ends.
    assert exponents.min() >= -5 - 1e-9 and exponents.max() <= -1 + 1e-9
    assert exponents.min() < -4.8 and exponents.max() > -1.2
    # Uniform in the exponent: about a quarter of the draws per decade.
    per_decade = np.histogram(exponents, bins=[-5, -4, -3, -2, -1])[0]
    assert per_decade.min() > 60

    uniform = [Distribution("uniform", (0.2, 0.4)).sample(rng) for _ in range(200)]
    assert min(uniform) >= 0.2 and max(uniform) <= 0.4 and np.std(uniform) > 0.04

    ints = [Distribution("randint", (16, 18)).sample(rng) for _ in range(100)]
    assert set(ints) == {16, 17, 18} and all(isinstance(i, int) for i in ints)

    choices = [Distribution("choice", ("relu", "tanh", 3)).sample(rng) for _ in range(100)]
    assert set(choices) == {"relu", "tanh", 3}


def test_sampled_floats_are_rounded_to_four_significant_digits():
    space = Space(random={"lr": Distribution("loguniform", (1e-3, 1.0))})
    for point in space.points(trials=30):
        assert float(f"{point['lr']:.3e}") == point["lr"]


def test_grid_and_random_combine_each_grid_point_with_each_sample():
    space = Space(grid={"activation": ["relu", "tanh"]},
                  random={"lr": Distribution("uniform", (0.01, 0.1))})
    points = space.points(trials=3, sample_seed=0)
    assert len(points) == 6
    relu = [p["lr"] for p in points if p["activation"] == "relu"]
    tanh = [p["lr"] for p in points if p["activation"] == "tanh"]
    assert relu == tanh  # the same samples for every grid point: a fair comparison


@pytest.mark.parametrize("text, message", [
    ("loguniform(0, 1)", "> 0"),
    ("uniform(1, 1)", "below"),
    ("normal(0, 1)", "unknown distribution"),
    ("uniform(1)", "two numbers"),
    ("randint(1.5, 3)", "whole"),
    ("1e-3", "not a distribution"),
])
def test_bad_distributions_say_what_is_wrong(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_distribution(text)


def test_flags_parse_values_and_accept_flag_spellings():
    assert parse_grid_flag("lr=0.01,0.1") == ("lr", [0.01, 0.1])
    assert parse_grid_flag("val-size=0.1,5000") == ("val_size", [0.1, 5000])
    assert parse_grid_flag("--loss=mse,softmax_cross_entropy")[0] == "output_loss"
    assert parse_grid_flag("hidden=64,128x128") == ("hidden", [64, "128x128"])
    key, dist = parse_random_flag("decay-rate=uniform(0.5, 0.9)")
    assert key == "decay_rate" and dist == Distribution("uniform", (0.5, 0.9))
    with pytest.raises(ConfigError, match="not a training option.*did you mean l2"):
        parse_grid_flag("l2x=1,2")
    with pytest.raises(ConfigError, match="--seeds"):
        parse_grid_flag("seed=1,2")
    with pytest.raises(ConfigError, match="OPTION=V1"):
        parse_grid_flag("lr")


def test_toml_space_lists_are_grids_and_strings_distributions():
    space = space_from_toml({"lr": [0.1, 1.0], "l2": "loguniform(1e-5, 1e-1)",
                             "random": {"momentum": "uniform(0, 0.9)"}})
    assert space.grid == {"lr": [0.1, 1.0]}
    assert set(space.random) == {"l2", "momentum"}
    with pytest.raises(ConfigError, match="list of values"):
        space_from_toml({"lr": 0.1})
    with pytest.raises(ConfigError, match="not both"):
        Space(grid={"lr": [0.1]}, random={"lr": Distribution("uniform", (0.1, 1))})


def test_axis_scale_recognises_log_spacing():
    assert axis_scale([1e-5, 1e-4, 1e-3, 1e-2]) == "log"
    assert axis_scale([0.01, 0.03, 0.1, 0.3]) == "log"
    assert axis_scale([0.0, 1e-5, 1e-4, 1e-3]) == "symlog"
    assert axis_scale([0.1, 0.2, 0.3, 0.4]) == "linear"
    assert axis_scale([-1.0, 1.0, 100.0]) == "linear"


def test_coarse_to_fine_narrows_a_loguniform_range_around_the_best():
    space = Space(random={"l2": Distribution("loguniform", (1e-5, 1e-1))})
    low, high, log, _ = refine_ranges(space, {"l2": 1e-3}, factor=4)["l2"]
    # 4 decades narrowed 4 times: one decade centred on 1e-3.
    assert log and math.isclose(math.log10(low), -3.5) and math.isclose(math.log10(high), -2.5)
    points = refine_points(space, {"l2": 1e-3}, Refine(factor=4, points=5, mode="grid"))
    values = [p["l2"] for p in points]
    assert len(values) == 5 and values == sorted(values)
    assert math.isclose(values[2], 1e-3, rel_tol=1e-3)  # the middle value is the best
    ratios = np.diff(np.log10(values))
    assert np.allclose(ratios, 0.25, atol=1e-3)  # log-spaced


def test_coarse_to_fine_stays_inside_the_original_range_at_an_edge():
    space = Space(random={"momentum": Distribution("uniform", (0.0, 0.8))})
    points = refine_points(space, {"momentum": 0.79}, Refine(factor=4, points=3))
    values = [p["momentum"] for p in points]
    assert values == pytest.approx([0.6, 0.7, 0.8])  # width 0.2, shifted under 0.8


def test_coarse_to_fine_random_mode_is_seeded_and_in_range():
    space = Space(random={"lr": Distribution("loguniform", (1e-3, 1.0))},
                  grid={"activation": ["relu", "tanh"]})
    best = {"activation": "tanh", "lr": 0.03}
    refine = Refine(factor=3, points=6, mode="random")
    points = refine_points(space, best, refine, sample_seed=1)
    assert points == refine_points(space, best, refine, sample_seed=1)
    assert points != refine_points(space, best, refine, sample_seed=2)
    low, high, _, _ = refine_ranges(space, best, 3)["lr"]
    assert all(low * 0.999 <= p["lr"] <= high * 1.001 for p in points)
    assert {p["activation"] for p in points} == {"tanh"}  # non-numeric: kept at the best
    assert list(points[0]) == ["activation", "lr"]  # the space's option order


def test_coarse_to_fine_grid_axis_refines_between_the_neighbours():
    space = Space(grid={"lr": [0.001, 0.01, 0.1, 1.0], "batch_size": [16, 64, 256]})
    ranges = refine_ranges(space, {"lr": 0.01, "batch_size": 256}, factor=4)
    assert ranges["lr"][:3] == (0.001, 0.1, True)
    assert ranges["batch_size"][:2] == (64, 256) and ranges["batch_size"][3]  # integer
    points = refine_points(space, {"lr": 0.01, "batch_size": 256}, Refine(points=3))
    assert len(points) == 9
    assert sorted({p["lr"] for p in points}) == pytest.approx([0.001, 0.01, 0.1])
    assert all(isinstance(p["batch_size"], int) for p in points)


def test_coarse_to_fine_needs_a_numeric_option():
    with pytest.raises(ConfigError, match="numeric"):
        refine_points(Space(grid={"activation": ["relu", "tanh"]}), {"activation": "relu"},
                      Refine())
    with pytest.raises(ConfigError, match="refine-factor"):
        Refine(factor=1)


BASE = {"dataset": "linear", "val_size": 50, "hidden": [4], "epochs": 1, "backend": "cpu"}


def test_trial_ids_are_stable_readable_and_unique():
    spec = SweepSpec(base=BASE, space=Space(grid={"lr": [0.1, 1.0]}), seeds=[0, 1])
    trials = plan_trials(spec, spec.space.points(), stage=1)
    ids = [t.id for t in trials]
    assert len(set(ids)) == 4
    assert ids == [t.id for t in plan_trials(spec, spec.space.points(), stage=1)]
    assert ids[0].startswith("lr=0.1_seed=0-")
    assert trials[1].config["seed"] == 1 and trials[1].config["lr"] == 0.1
    # A different base option is a different trial: never reuse a stale result.
    other = SweepSpec(base={**BASE, "epochs": 2}, space=spec.space, seeds=[0, 1])
    assert not set(ids) & {t.id for t in plan_trials(other, other.space.points(), 1)}
    assert trial_id({"hidden": "128x128"}, 0, {}).startswith("hidden=128x128_seed=0-")


def test_planning_refuses_a_sweep_without_validation_split():
    spec = SweepSpec(base={**BASE, "val_size": 0}, space=Space(grid={"lr": [0.1]}))
    with pytest.raises(ConfigError, match="validation split"):
        plan_trials(spec, spec.space.points(), 1)


def test_planning_names_the_point_with_an_invalid_value():
    spec = SweepSpec(base=BASE, space=Space(grid={"lr": [0.1, -1.0]}))
    with pytest.raises(ConfigError, match="point lr=-1.*lr must be"):
        plan_trials(spec, spec.space.points(), 1)
