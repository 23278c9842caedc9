"""Weight initializers: the statistics each promises, and seeded reproducibility."""

from __future__ import annotations

import math

import numpy as np
import pytest

from handprop.errors import ConfigError
from handprop.nn import Dense, Sequential
from handprop.nn.init import INITIALIZERS, init_weights, resolve_init

FAN_IN, FAN_OUT = 300, 500  # 150,000 draws: std estimates good to ~0.5 %

# name -> (distribution, std, uniform limit or None), from the papers' formulas.
EXPECTED = {
    "uniform": ("uniform", None, 1.0 / math.sqrt(FAN_IN)),
    "lecun": ("normal", math.sqrt(1.0 / FAN_IN), None),
    "xavier_uniform": ("uniform", None, math.sqrt(6.0 / (FAN_IN + FAN_OUT))),
    "xavier_normal": ("normal", math.sqrt(2.0 / (FAN_IN + FAN_OUT)), None),
    "he": ("normal", math.sqrt(2.0 / FAN_IN), None),
    "he_uniform": ("uniform", None, math.sqrt(6.0 / FAN_IN)),
}


def test_every_initializer_is_covered():
    assert set(INITIALIZERS) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_initializer_statistics(name):
    kind, std, limit = EXPECTED[name]
    w = init_weights(name, FAN_IN, FAN_OUT, np.random.default_rng(7))
    assert w.shape == (FAN_IN, FAN_OUT) and w.dtype == np.float64
    if kind == "uniform":
        std = limit / math.sqrt(3.0)  # std of U(-a, a)
        assert np.abs(w).max() <= limit
        assert np.abs(w).max() > 0.999 * limit  # the range is really used
    else:
        # A normal has ~0.3 % of draws beyond 3 std and essentially none beyond 6.
        assert np.abs(w).max() > 3.5 * std
        assert np.abs(w).max() < 6.0 * std
    assert abs(w.mean()) < 0.02 * std
    assert w.std() == pytest.approx(std, rel=0.01)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_initializer_is_seeded(name):
    a = init_weights(name, 20, 30, np.random.default_rng(3))
    b = init_weights(name, 20, 30, np.random.default_rng(3))
    c = init_weights(name, 20, 30, np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_auto_init_follows_the_activation():
    assert resolve_init("auto", "relu") == "he"
    assert resolve_init("auto", "leaky_relu") == "he"
    assert resolve_init("auto", "lecun_tanh") == "lecun"
    for act in ("tanh", "sigmoid", "identity"):
        assert resolve_init("auto", act) == "xavier_uniform"
    assert resolve_init("he_uniform", "tanh") == "he_uniform"


def test_unknown_initializer_lists_valid_names():
    with pytest.raises(ConfigError, match="unknown initializer 'glorot'") as info:
        Dense(4, "tanh", init="glorot")
    for name in INITIALIZERS:
        assert name in str(info.value)
    with pytest.raises(ConfigError, match="unknown initializer 'zeros'"):
        init_weights("zeros", 2, 2, np.random.default_rng(0))


def test_model_weights_identical_on_every_engine_for_a_seed(engine, cpu):
    def build(eng, seed):
        return Sequential([Dense(6, "relu"), Dense(3, "tanh", bias_init=0.25)], input_dim=4,
                          engine=eng, dtype="float64", seed=seed).get_weights()

    here, ref = build(engine, 11), build(cpu, 11)
    assert list(here) == ["layer0.W", "layer0.b", "layer1.W", "layer1.b"]
    for key in ref:
        np.testing.assert_array_equal(here[key], ref[key])
    np.testing.assert_array_equal(here["layer1.b"], [0.25, 0.25, 0.25])
    # Each layer draws in order from one Generator(seed): layer0 is He, layer1 Xavier.
    rng = np.random.default_rng(11)
    np.testing.assert_array_equal(here["layer0.W"], rng.normal(0, math.sqrt(2 / 4), size=(4, 6)))
    lim = math.sqrt(6 / 9)
    np.testing.assert_array_equal(here["layer1.W"], rng.uniform(-lim, lim, size=(6, 3)))
    assert not np.array_equal(build(cpu, 12)["layer0.W"], ref["layer0.W"])
