"""Learning-rate schedules evaluated at chosen update counts, worked by hand."""

from __future__ import annotations

import pytest

from handprop.errors import ConfigError
from handprop.optim import SCHEDULES, make_optimizer
from handprop.optim.optimizers import optimizer_from_config
from handprop.optim.schedules import (
    Constant,
    ExponentialDecay,
    InverseTimeDecay,
    StepDecay,
    TriangularCyclic,
    make_schedule,
    schedule_config,
    schedule_from_config,
)


def test_constant():
    s = Constant(0.3)
    assert [s(t) for t in (0, 1, 10**6)] == [0.3, 0.3, 0.3]


def test_step_decay():
    s = StepDecay(lr=1.0, drop=0.5, every=10)
    assert s(0) == 1.0 and s(9) == 1.0          # first 10 updates at lr0
    assert s(10) == 0.5 and s(19) == 0.5
    assert s(25) == 0.25                        # 25 // 10 = 2 halvings
    assert s(100) == pytest.approx(1.0 / 1024)


def test_exponential_decay():
    s = ExponentialDecay(lr=0.2, rate=0.5, decay_steps=100)
    assert s(0) == 0.2
    assert s(50) == pytest.approx(0.2 * 0.7071067811865476, rel=1e-14)  # 0.2 * sqrt(0.5)
    assert s(100) == pytest.approx(0.1, rel=1e-14)
    assert s(200) == pytest.approx(0.05, rel=1e-14)


def test_inverse_time_decay():
    s = InverseTimeDecay(lr=0.3, k=0.5)
    assert s(0) == 0.3
    assert s(2) == pytest.approx(0.15)          # 0.3 / (1 + 1)
    assert s(4) == pytest.approx(0.1)           # 0.3 / (1 + 2)
    assert InverseTimeDecay(lr=0.3, k=0.0)(1000) == 0.3


@pytest.mark.parametrize("t, expected", [
    (0, 0.1),    # start of cycle 1 at eta_min
    (1, 0.2),    # rising 0.4 / 4 per update
    (2, 0.3),
    (3, 0.4),
    (4, 0.5),    # peak after step_size updates
    (5, 0.4),
    (6, 0.3),
    (8, 0.1),    # back to eta_min: cycle 1 done
    (10, 0.3),   # cycle 2 rising
    (12, 0.5),   # peak of cycle 2
    (15, 0.2),
    (16, 0.1),   # two cycles done
    (17, 0.1),   # stays at eta_min (a third cycle would give 0.2)
    (20, 0.1),   # (a third cycle would peak here at 0.5)
    (1000, 0.1),
])
def test_triangular_cyclic_with_cycles(t, expected):
    s = TriangularCyclic(eta_min=0.1, eta_max=0.5, step_size=4, cycles=2)
    assert s(t) == pytest.approx(expected, abs=1e-15)


def test_triangular_cyclic_without_cycle_limit_keeps_cycling():
    s = TriangularCyclic(eta_min=0.1, eta_max=0.5, step_size=4)
    assert s(17) == pytest.approx(0.2)
    assert s(20) == pytest.approx(0.5)
    assert s(4 + 8 * 1000) == pytest.approx(0.5)
    assert s(8 * 1000) == pytest.approx(0.1)


def test_make_schedule_by_name():
    assert set(SCHEDULES) == {"constant", "step", "exponential", "inverse_time", "cyclic"}
    assert make_schedule("constant", 0.2)(5) == 0.2
    assert make_schedule("step", 0.2, drop=0.1, every=3)(3) == pytest.approx(0.02)
    assert make_schedule("exponential", 1.0, rate=0.25, decay_steps=2)(1) == pytest.approx(0.5)
    assert make_schedule("inverse_time", 1.0, k=1.0)(3) == pytest.approx(0.25)
    cyc = make_schedule("cyclic", 0.5, step_size=10)
    # For cyclic, lr is eta_max and eta_min defaults to lr / 10.
    assert cyc(0) == pytest.approx(0.05) and cyc(10) == pytest.approx(0.5)


def test_schedule_config_round_trip():
    for s in (Constant(0.1), StepDecay(0.1, 0.3, 7), ExponentialDecay(0.1, 0.9, 50),
              InverseTimeDecay(0.1, 0.01), TriangularCyclic(0.01, 0.1, 5, 3)):
        again = schedule_from_config(schedule_config(s))
        assert again == s
        assert [again(t) for t in range(40)] == [s(t) for t in range(40)]


def test_optimizer_config_round_trip_keeps_schedule():
    opt = make_optimizer("momentum", lr=StepDecay(0.2, 0.5, 3), momentum=0.8, weight_decay=0.01)
    again = optimizer_from_config(opt.config())
    assert type(again) is type(opt)
    assert again.momentum == 0.8 and again.weight_decay == 0.01
    assert again.schedule == opt.schedule


# --------------------------------------------------------------------- errors
@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan")])
@pytest.mark.parametrize("name", ["constant", "step", "exponential", "inverse_time"])
def test_schedules_refuse_non_positive_lr(name, lr):
    with pytest.raises(ConfigError, match="learning rate must be a positive number"):
        make_schedule(name, lr)


def test_cyclic_refuses_bad_bounds():
    with pytest.raises(ConfigError, match="eta_min must be a positive number"):
        TriangularCyclic(eta_min=0.0, eta_max=0.1)
    with pytest.raises(ConfigError, match="eta_max must be a positive number"):
        TriangularCyclic(eta_min=0.1, eta_max=-0.1)
    # Through make_schedule the derived eta_min (lr / 10) is checked first.
    with pytest.raises(ConfigError, match="must be a positive number"):
        make_schedule("cyclic", -0.1)
    with pytest.raises(ConfigError, match=r"eta_max \(0.1\) must be >= eta_min \(0.2\)"):
        TriangularCyclic(eta_min=0.2, eta_max=0.1)
    with pytest.raises(ConfigError, match="step_size must be at least 1"):
        TriangularCyclic(0.1, 0.2, step_size=0)
    with pytest.raises(ConfigError, match="cycles must be at least 1"):
        TriangularCyclic(0.1, 0.2, step_size=3, cycles=0)


def test_decay_parameters_are_checked():
    with pytest.raises(ConfigError, match=r"drop must be in \(0, 1\]"):
        StepDecay(0.1, drop=1.5)
    with pytest.raises(ConfigError, match="'every' must be at least 1"):
        StepDecay(0.1, every=0)
    with pytest.raises(ConfigError, match=r"rate must be in \(0, 1\]"):
        ExponentialDecay(0.1, rate=0.0)
    with pytest.raises(ConfigError, match="decay_steps must be a positive number"):
        ExponentialDecay(0.1, decay_steps=-5)
    with pytest.raises(ConfigError, match="k must be >= 0"):
        InverseTimeDecay(0.1, k=-1.0)


def test_unknown_schedule_lists_valid_names():
    with pytest.raises(ConfigError, match="unknown schedule 'cosine'") as info:
        make_schedule("cosine", 0.1)
    for name in SCHEDULES:
        assert name in str(info.value)


def test_unknown_schedule_option_is_a_config_error():
    with pytest.raises(ConfigError, match="bad options for schedule 'step'"):
        make_schedule("step", 0.1, gamma=0.5)


def test_unknown_cyclic_option_is_a_config_error():
    with pytest.raises(ConfigError, match="bad options for schedule 'cyclic'"):
        make_schedule("cyclic", 0.1, gamma=0.5)
