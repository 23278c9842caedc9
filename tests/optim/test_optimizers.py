"""Optimizers: single and double steps computed by hand, and against torch.optim."""

from __future__ import annotations

import math

import numpy as np
import pytest

from handprop.errors import ConfigError
from handprop.nn import Dense, Sequential
from handprop.optim import OPTIMIZERS, SGD, Adam, Momentum, Nesterov, make_optimizer
from handprop.optim.schedules import StepDecay

P0, G1, G2, LR = 1.0, 0.5, -0.2, 0.1


def scalar_model(engine, value=P0):
    """A model with one weight (and one bias) so optimizer steps are scalar arithmetic."""
    model = Sequential([Dense(1, "identity")], input_dim=1, engine=engine, dtype="float64")
    model.set_weights({"layer0.W": np.array([[value]]), "layer0.b": np.array([-value])})
    return model


def step_with(model, opt, g):
    layer = model.layers[0]
    layer.grads = {"W": model.engine.asarray(np.array([[g]]), "float64"),
                   "b": model.engine.asarray(np.array([g]), "float64")}
    opt.step(model)
    w = model.get_weights()
    return float(w["layer0.W"][0, 0]), float(w["layer0.b"][0])


def test_sgd_one_step(engine):
    model = scalar_model(engine)
    w, b = step_with(model, SGD(lr=LR), G1)
    assert w == pytest.approx(1.0 - 0.1 * 0.5, abs=1e-15)      # 0.95
    assert b == pytest.approx(-1.0 - 0.1 * 0.5, abs=1e-15)     # -1.05


def test_sgd_weight_decay_is_coupled(engine):
    model = scalar_model(engine)
    w, b = step_with(model, SGD(lr=LR, weight_decay=0.1), G1)
    assert w == pytest.approx(1.0 - 0.1 * (0.5 + 0.1 * 1.0), abs=1e-15)    # 0.94
    assert b == pytest.approx(-1.0 - 0.1 * (0.5 + 0.1 * -1.0), abs=1e-15)  # -1.04


def test_momentum_two_steps(engine):
    model = scalar_model(engine)
    opt = Momentum(lr=LR, momentum=0.9)
    w, _ = step_with(model, opt, G1)
    v1 = 0.5                               # v = 0.9 * 0 + 0.5
    assert w == pytest.approx(1.0 - 0.1 * v1, abs=1e-15)               # 0.95
    w, _ = step_with(model, opt, G2)
    v2 = 0.9 * 0.5 + (-0.2)                # 0.25
    assert w == pytest.approx(0.95 - 0.1 * v2, abs=1e-15)              # 0.925
    assert opt.t == 2


def test_nesterov_two_steps(engine):
    model = scalar_model(engine)
    opt = Nesterov(lr=LR, momentum=0.9)
    w, _ = step_with(model, opt, G1)
    # v1 = 0.5; step by g + mu v1 = 0.5 + 0.45 = 0.95
    assert w == pytest.approx(1.0 - 0.1 * 0.95, abs=1e-15)             # 0.905
    w, _ = step_with(model, opt, G2)
    # v2 = 0.45 - 0.2 = 0.25; step by g + mu v2 = -0.2 + 0.225 = 0.025
    assert w == pytest.approx(0.905 - 0.1 * 0.025, abs=1e-15)          # 0.9025


def test_momentum_with_weight_decay(engine):
    model = scalar_model(engine)
    opt = Momentum(lr=LR, momentum=0.5, weight_decay=0.2)
    w, _ = step_with(model, opt, G1)
    g1 = 0.5 + 0.2 * 1.0                   # 0.7 = v1
    assert w == pytest.approx(1.0 - 0.1 * g1, abs=1e-15)               # 0.93
    w, _ = step_with(model, opt, G2)
    g2 = -0.2 + 0.2 * 0.93                 # -0.014
    v2 = 0.5 * 0.7 + g2                    # 0.336
    assert w == pytest.approx(0.93 - 0.1 * v2, abs=1e-15)              # 0.8964


def test_adam_two_steps(engine):
    model = scalar_model(engine)
    opt = Adam(lr=LR, beta1=0.9, beta2=0.999, eps=1e-8)
    w, _ = step_with(model, opt, G1)
    # step 1: m = 0.1*0.5 = 0.05, v = 0.001*0.25 = 0.00025
    # m_hat = 0.05/(1-0.9) = 0.5, v_hat = 0.00025/(1-0.999) = 0.25, sqrt = 0.5
    w1 = 1.0 - 0.1 * 0.5 / (0.5 + 1e-8)
    assert w == pytest.approx(w1, abs=1e-15)
    assert w == pytest.approx(0.9, abs=1e-8)  # Adam's first step is ~lr * sign(g)
    w, _ = step_with(model, opt, G2)
    m2 = 0.9 * 0.05 + 0.1 * (-0.2)             # 0.025
    v2 = 0.999 * 0.00025 + 0.001 * 0.04        # 0.00028975
    m_hat = m2 / (1 - 0.9**2)                  # / 0.19
    v_hat = v2 / (1 - 0.999**2)                # / 0.001999
    w2 = w1 - 0.1 * m_hat / (math.sqrt(v_hat) + 1e-8)
    assert w == pytest.approx(w2, abs=1e-14)
    assert w == pytest.approx(0.9 - 0.1 * 0.131578947 / 0.380719, abs=1e-6)


def test_adam_weight_decay(engine):
    model = scalar_model(engine, value=2.0)
    opt = Adam(lr=0.01, beta1=0.5, beta2=0.75, eps=0.1, weight_decay=0.5)
    w, _ = step_with(model, opt, 1.0)
    g = 1.0 + 0.5 * 2.0                        # 2.0
    m_hat = (0.5 * g) / 0.5                    # 2.0
    v_hat = (0.25 * g * g) / 0.25              # 4.0
    assert w == pytest.approx(2.0 - 0.01 * m_hat / (v_hat**0.5 + 0.1), abs=1e-15)


def test_adam_primitive_refuses_step_zero(cpu):
    x = cpu.asarray(np.ones(2))
    with pytest.raises(ConfigError, match="step >= 1"):
        cpu.adam_update(x, x, cpu.xp.zeros_like(x), cpu.xp.zeros_like(x), 0.1, 0.9, 0.999, 1e-8, 0)


def test_optimizer_follows_schedule_from_t0(engine):
    model = scalar_model(engine)
    opt = SGD(lr=StepDecay(lr=0.1, drop=0.5, every=2))
    assert opt.lr == 0.1
    expected = 1.0
    for lr in (0.1, 0.1, 0.05, 0.05, 0.025):
        w, _ = step_with(model, opt, 1.0)
        expected -= lr
        assert w == pytest.approx(expected, abs=1e-14)
    assert opt.t == 5 and opt.lr == pytest.approx(0.025)


def test_optimizer_updates_in_place_and_keeps_state_per_parameter(engine):
    model = Sequential([Dense(3, "tanh"), Dense(2)], input_dim=2, engine=engine, dtype="float64")
    W = model.layers[0].params["W"]
    before = engine.to_numpy(W).copy()
    for layer in model.layers:
        layer.grads = {k: engine.xp.ones_like(v) for k, v in layer.params.items()}
    opt = Adam(lr=0.01)
    opt.step(model)
    assert model.layers[0].params["W"] is W  # same array object, updated in place
    np.testing.assert_allclose(engine.to_numpy(W), before - 0.01, atol=1e-9)
    assert set(opt.state) == {"layer0.W", "layer0.b", "layer1.W", "layer1.b"}
    assert set(opt.state["layer1.b"]) == {"m", "v"}


# -------------------------------------------------------------- vs torch.optim
def _run_ours(name, params, grads, **hyper):
    from handprop.engines import get_engine

    eng = get_engine("cpu")
    model = Sequential([Dense(params[0].shape[1], "identity")], input_dim=params[0].shape[0],
                       engine=eng, dtype="float64")
    # Copies: on the cpu engine set_weights keeps the caller's arrays (see test_core_model).
    model.set_weights({"layer0.W": params[0].copy(), "layer0.b": params[1].copy()})
    opt = make_optimizer(name, **hyper)
    for gW, gb in grads:
        model.layers[0].grads = {"W": eng.asarray(gW, "float64"), "b": eng.asarray(gb, "float64")}
        opt.step(model)
    w = model.get_weights()
    return w["layer0.W"], w["layer0.b"]


def _run_torch(torch, name, params, grads, lr, **hyper):
    tensors = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in params]
    if name == "sgd":
        opt = torch.optim.SGD(tensors, lr=lr, weight_decay=hyper.get("weight_decay", 0.0))
    elif name in ("momentum", "nesterov"):
        opt = torch.optim.SGD(tensors, lr=lr, momentum=hyper["momentum"],
                              weight_decay=hyper.get("weight_decay", 0.0), nesterov=name == "nesterov")
    else:
        opt = torch.optim.Adam(tensors, lr=lr, betas=(hyper["beta1"], hyper["beta2"]),
                               eps=hyper["eps"], weight_decay=hyper.get("weight_decay", 0.0))
    for gW, gb in grads:
        tensors[0].grad = torch.tensor(gW, dtype=torch.float64)
        tensors[1].grad = torch.tensor(gb, dtype=torch.float64)
        opt.step()
    return [t.detach().numpy() for t in tensors]


@pytest.mark.parametrize("name, hyper", [
    ("sgd", {}),
    ("sgd", {"weight_decay": 0.05}),
    ("momentum", {"momentum": 0.9}),
    ("momentum", {"momentum": 0.8, "weight_decay": 0.01}),
    ("nesterov", {"momentum": 0.9}),
    ("nesterov", {"momentum": 0.7, "weight_decay": 0.02}),
    ("adam", {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}),
    ("adam", {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "weight_decay": 0.01}),
])
def test_matches_torch_optim(name, hyper):
    torch = pytest.importorskip("torch", reason="torch not importable: comparison skipped")
    rng = np.random.default_rng(5)
    params = [rng.normal(size=(3, 4)), rng.normal(size=4)]
    grads = [(rng.normal(size=(3, 4)), rng.normal(size=4)) for _ in range(6)]
    ours = _run_ours(name, params, grads, lr=0.05, **hyper)
    theirs = _run_torch(torch, name, params, grads, lr=0.05, **hyper)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert not np.allclose(ours[0], params[0])  # something really moved


# --------------------------------------------------------------------- errors
@pytest.mark.parametrize("cls", [SGD, Momentum, Nesterov, Adam])
@pytest.mark.parametrize("lr", [0.0, -0.01, float("nan"), float("inf")])
def test_non_positive_learning_rate_is_refused(cls, lr):
    with pytest.raises(ConfigError, match="learning rate must be a positive number"):
        cls(lr=lr)


@pytest.mark.parametrize("momentum", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_momentum_is_refused(momentum):
    for cls in (Momentum, Nesterov):
        with pytest.raises(ConfigError, match=r"momentum must be in \[0, 1\)"):
            cls(lr=0.1, momentum=momentum)


@pytest.mark.parametrize("key", ["beta1", "beta2"])
@pytest.mark.parametrize("value", [-0.5, 1.0, 2.0])
def test_bad_betas_are_refused(key, value):
    with pytest.raises(ConfigError, match=rf"{key} must be in \[0, 1\)"):
        Adam(lr=0.1, **{key: value})


def test_bad_eps_and_weight_decay_are_refused():
    with pytest.raises(ConfigError, match="eps must be > 0"):
        Adam(lr=0.1, eps=0.0)
    with pytest.raises(ConfigError, match="weight_decay must be >= 0"):
        SGD(lr=0.1, weight_decay=-1e-4)


def test_unknown_optimizer_lists_valid_names():
    with pytest.raises(ConfigError, match="unknown optimizer 'rmsprop'") as info:
        make_optimizer("rmsprop", lr=0.1)
    for name in OPTIMIZERS:
        assert name in str(info.value)
    assert set(OPTIMIZERS) == {"sgd", "momentum", "nesterov", "adam"}


def test_unknown_optimizer_option_is_a_config_error():
    with pytest.raises(ConfigError, match="bad options for optimizer 'sgd'"):
        make_optimizer("sgd", lr=0.1, momentum=0.9)


# ------------------------------------------------------------- flat updates
@pytest.mark.parametrize("name, hyper", [
    ("sgd", {"weight_decay": 0.05}), ("momentum", {"momentum": 0.8, "weight_decay": 0.01}),
    ("nesterov", {"momentum": 0.7}), ("adam", {"beta1": 0.8, "beta2": 0.99, "weight_decay": 0.01})])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_one_flat_update_equals_one_update_per_parameter(engine, name, hyper, dtype):
    """A built Sequential is updated in one pass over its flat buffer; a model without
    flat buffers, parameter by parameter. Element-wise the two are the same arithmetic."""
    rng = np.random.default_rng(2)
    model = Sequential([Dense(4, "tanh"), Dense(3)], input_dim=5, engine=engine, dtype=dtype)

    class PerTensor:  # the same layers, without the flat buffers
        engine, layers = model.engine, [Dense(4, "tanh"), Dense(3)]
        named_parameters = Sequential.named_parameters

    plain = PerTensor()
    for mine, theirs in zip(model.layers, plain.layers):
        theirs.params = {k: engine.asarray(engine.to_numpy(v).copy()) for k, v in mine.params.items()}
    flat_opt, plain_opt = make_optimizer(name, lr=0.05, **hyper), make_optimizer(name, lr=0.05, **hyper)
    for _ in range(3):
        for mine, theirs in zip(model.layers, plain.layers):
            grads = {k: rng.normal(size=v.shape).astype(dtype) for k, v in mine.params.items()}
            mine.grads = {k: engine.asarray(g.copy()) for k, g in grads.items()}
            theirs.grads = {k: engine.asarray(g.copy()) for k, g in grads.items()}
        flat_opt.step(model)
        plain_opt.step(plain)
    assert flat_opt.flat_state is not None and plain_opt.flat_state is None
    for mine, theirs in zip(model.layers, plain.layers):
        for k in mine.params:
            np.testing.assert_array_equal(engine.to_numpy(mine.params[k]),
                                          engine.to_numpy(theirs.params[k]))
    for key, value in plain_opt.state_arrays(engine).items():
        np.testing.assert_array_equal(flat_opt.state_arrays(engine)[key], value)


def test_loaded_state_goes_into_the_bound_flat_buffers(cpu):
    model = Sequential([Dense(3, "tanh"), Dense(2)], input_dim=2, engine=cpu, dtype="float64")
    opt = Adam(lr=0.01)
    flat = opt.bind(model)
    saved = {k: np.full(v.shape, 0.5) for k, v in opt.state_arrays(cpu).items()}
    opt.load_state_arrays(cpu, saved, 7, "float64")
    assert opt.bind(model) is flat and opt.t == 7
    np.testing.assert_array_equal(flat["m"], np.full(model.num_parameters(), 0.5))
    # Before binding, loaded values are kept and then laid out flat.
    fresh = Adam(lr=0.01)
    fresh.load_state_arrays(cpu, saved, 7, "float64")
    np.testing.assert_array_equal(fresh.bind(model)["v"], np.full(model.num_parameters(), 0.5))
