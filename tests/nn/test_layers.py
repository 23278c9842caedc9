"""Layers and activations: hand-computed values, on every engine.

Expected values come from ``math`` on scalars or from explicit loops written
the way a student works the example on paper -- never from the library.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from handprop.engines.base import ACTIVATIONS, LECUN_A, LECUN_S
from handprop.errors import ConfigError
from handprop.nn import Activation, Dense, Sequential
from handprop.nn.losses import MeanSquaredError
from handprop.optim import SGD

Z_VALUES = [-3.0, -0.7, -1e-3, 0.0, 2e-3, 0.4, 1.5, 6.0]
ALPHA = 0.1


def f_scalar(kind, z, alpha=ALPHA):
    """The activation written from its textbook definition."""
    if kind == "identity":
        return z
    if kind == "sigmoid":
        return 1.0 / (1.0 + math.exp(-z))
    if kind == "tanh":
        return math.tanh(z)
    if kind == "relu":
        return max(z, 0.0)
    if kind == "leaky_relu":
        return z if z > 0 else alpha * z
    if kind == "lecun_tanh":
        return 1.7159 * math.tanh(2.0 * z / 3.0)
    raise AssertionError(kind)


def df_scalar(kind, z, alpha=ALPHA):
    """The derivative written in terms of z (not of the output, as the library does)."""
    if kind == "identity":
        return 1.0
    if kind == "sigmoid":
        return math.exp(-z) / (1.0 + math.exp(-z)) ** 2
    if kind == "tanh":
        return 1.0 / math.cosh(z) ** 2
    if kind == "relu":
        return 1.0 if z > 0 else 0.0
    if kind == "leaky_relu":
        return 1.0 if z > 0 else alpha
    if kind == "lecun_tanh":
        return 1.7159 * (2.0 / 3.0) / math.cosh(2.0 * z / 3.0) ** 2
    raise AssertionError(kind)


def test_lecun_constants_are_the_published_ones():
    assert LECUN_A == 1.7159
    assert LECUN_S == pytest.approx(2.0 / 3.0, abs=1e-15)
    # f(1) = 1 and f(-1) = -1 is why LeCun chose these constants.
    assert 1.7159 * math.tanh(2.0 / 3.0) == pytest.approx(1.0, abs=1e-4)


def test_activation_set_is_complete():
    assert set(ACTIVATIONS) == {"identity", "sigmoid", "tanh", "relu", "leaky_relu", "lecun_tanh"}


@pytest.mark.parametrize("kind", ACTIVATIONS)
def test_activation_forward_and_backward_values(engine, kind):
    z = np.array([Z_VALUES, [v / 2 for v in Z_VALUES]], dtype=np.float64)
    grad = np.linspace(-1.3, 2.1, z.size).reshape(z.shape)
    out = engine.activation(engine.asarray(z), kind, ALPHA)
    expected = np.vectorize(lambda v: f_scalar(kind, v))(z)
    np.testing.assert_allclose(engine.to_numpy(out), expected, rtol=1e-12, atol=1e-15)

    back = engine.act_backward(engine.asarray(grad), out, kind, ALPHA)
    expected_back = grad * np.vectorize(lambda v: df_scalar(kind, v))(z)
    np.testing.assert_allclose(engine.to_numpy(back), expected_back, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("kind", ACTIVATIONS)
def test_bias_act_adds_bias_per_column(engine, kind):
    z = np.array([[0.5, -1.0, 2.0], [-0.25, 0.0, 1.0]])
    b = np.array([0.1, -0.2, 0.3])
    out = engine.bias_act(engine.asarray(z), engine.asarray(b), kind, ALPHA)
    expected = [[f_scalar(kind, z[i, j] + b[j]) for j in range(3)] for i in range(2)]
    np.testing.assert_allclose(engine.to_numpy(out), expected, rtol=1e-12, atol=1e-15)


def test_bias_grad_is_column_sums(engine):
    g = np.array([[1.0, 2.0, -3.0], [0.5, -1.0, 4.0]])
    np.testing.assert_allclose(engine.to_numpy(engine.bias_grad(engine.asarray(g))), [1.5, 1.0, 1.0])


def test_sum_squares(engine):
    w = np.array([[1.0, -2.0], [3.0, 0.5]])
    assert engine.sum_squares(engine.asarray(w)) == pytest.approx(1 + 4 + 9 + 0.25, rel=1e-14)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_is_stable_for_huge_inputs(engine, dtype):
    z = np.array([[-1e4, -800.0, 0.0, 800.0, 1e4]], dtype=dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        out = engine.to_numpy(engine.activation(engine.asarray(z), "sigmoid"))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, [[0.0, 0.0, 0.5, 1.0, 1.0]], atol=1e-30)


# ----------------------------------------------------------------------- Dense
def test_dense_forward_backward_by_hand(engine):
    """Two samples, three inputs, two tanh units; every sum written out."""
    x = np.array([[1.0, -2.0, 0.5], [0.0, 1.0, -1.0]])
    W = np.array([[0.2, -0.1], [0.4, 0.3], [-0.5, 0.6]])
    b = np.array([0.05, -0.05])
    model = Sequential([Dense(2, "tanh")], input_dim=3, engine=engine, dtype="float64")
    model.set_weights({"layer0.W": W, "layer0.b": b})

    # z[n, j] = sum_i x[n, i] W[i, j] + b[j]
    z00 = 1.0 * 0.2 + (-2.0) * 0.4 + 0.5 * (-0.5) + 0.05   # -0.80
    z01 = 1.0 * (-0.1) + (-2.0) * 0.3 + 0.5 * 0.6 - 0.05   # -0.45
    z10 = 0.0 * 0.2 + 1.0 * 0.4 + (-1.0) * (-0.5) + 0.05   # 0.95
    z11 = 0.0 * (-0.1) + 1.0 * 0.3 + (-1.0) * 0.6 - 0.05   # -0.35
    assert (z00, z01, z10, z11) == pytest.approx((-0.80, -0.45, 0.95, -0.35))
    a = np.tanh([[z00, z01], [z10, z11]])

    layer = model.layers[0]
    out = layer.forward(engine.asarray(x, "float64"), training=True)
    np.testing.assert_allclose(engine.to_numpy(out), a, rtol=1e-12)

    g = np.array([[1.0, -1.0], [0.5, 2.0]])
    # dz = g * (1 - tanh(z)^2)
    dz = g * (1.0 - a**2)
    dW = np.zeros((3, 2))
    for i in range(3):
        for j in range(2):
            dW[i, j] = x[0, i] * dz[0, j] + x[1, i] * dz[1, j]
    db = np.array([dz[0, 0] + dz[1, 0], dz[0, 1] + dz[1, 1]])
    dx = np.zeros((2, 3))
    for n in range(2):
        for i in range(3):
            dx[n, i] = dz[n, 0] * W[i, 0] + dz[n, 1] * W[i, 1]

    grad_in = layer.backward(engine.asarray(g, "float64"))
    np.testing.assert_allclose(engine.to_numpy(layer.grads["W"]), dW, rtol=1e-12)
    np.testing.assert_allclose(engine.to_numpy(layer.grads["b"]), db, rtol=1e-12)
    np.testing.assert_allclose(engine.to_numpy(grad_in), dx, rtol=1e-12)
    # The input gradient can be skipped (first layer of a model).
    assert layer.backward(engine.asarray(g, "float64"), need_input_grad=False) is None


def test_two_two_one_sigmoid_net_by_hand(engine):
    """A 2-2-1 sigmoid net worked on paper (the numbers of Mazur's example,
    keeping only its first output).

    Inputs i1=0.05, i2=0.10; w1..w4 input->hidden, w5, w6 hidden->output,
    biases 0.35 and 0.60, target 0.01, E = 1/2 (t - o)^2, one SGD step, lr 0.5.
    """
    i1, i2 = 0.05, 0.10
    w1, w2, w3, w4 = 0.15, 0.20, 0.25, 0.30   # w1: i1->h1, w2: i2->h1, w3: i1->h2, w4: i2->h2
    w5, w6 = 0.40, 0.45                       # h1->o, h2->o
    b1, b2 = 0.35, 0.60
    t = 0.01

    def sig(v):
        return 1.0 / (1.0 + math.exp(-v))

    net_h1 = w1 * i1 + w2 * i2 + b1           # 0.3775
    net_h2 = w3 * i1 + w4 * i2 + b1           # 0.3925
    out_h1, out_h2 = sig(net_h1), sig(net_h2)
    net_o = w5 * out_h1 + w6 * out_h2 + b2
    out_o = sig(net_o)
    E = 0.5 * (t - out_o) ** 2
    delta_o = (out_o - t) * out_o * (1.0 - out_o)
    dE_dw5, dE_dw6, dE_db2 = delta_o * out_h1, delta_o * out_h2, delta_o
    delta_h1 = delta_o * w5 * out_h1 * (1.0 - out_h1)
    delta_h2 = delta_o * w6 * out_h2 * (1.0 - out_h2)
    dE_dw1, dE_dw2 = delta_h1 * i1, delta_h1 * i2
    dE_dw3, dE_dw4 = delta_h2 * i1, delta_h2 * i2

    # Cross-check our arithmetic against the published numbers of the example.
    assert net_h1 == pytest.approx(0.3775) and net_h2 == pytest.approx(0.3925)
    assert out_h1 == pytest.approx(0.593269992, abs=1e-9)
    assert out_h2 == pytest.approx(0.596884378, abs=1e-9)
    assert out_o == pytest.approx(0.75136507, abs=1e-8)
    assert E == pytest.approx(0.274811083, abs=1e-9)
    assert dE_dw5 == pytest.approx(0.082167041, abs=1e-9)

    model = Sequential([Dense(2, "sigmoid"), Dense(1, "sigmoid")], input_dim=2,
                       engine=engine, dtype="float64")
    model.set_weights({
        "layer0.W": np.array([[w1, w3], [w2, w4]]),  # (fan_in, fan_out)
        "layer0.b": np.array([b1, b1]),
        "layer1.W": np.array([[w5], [w6]]),
        "layer1.b": np.array([b2]),
    })
    x = engine.asarray(np.array([[i1, i2]]), "float64")
    target = engine.asarray(np.array([[t]]), "float64")
    out = model.forward(x, training=True)
    assert engine.to_numpy(out)[0, 0] == pytest.approx(out_o, rel=1e-12)
    loss, grad = MeanSquaredError()(engine, out, target)
    assert loss == pytest.approx(E, rel=1e-12)
    model.backward(grad)
    l0, l1 = model.layers
    np.testing.assert_allclose(engine.to_numpy(l1.grads["W"]), [[dE_dw5], [dE_dw6]], rtol=1e-12)
    np.testing.assert_allclose(engine.to_numpy(l1.grads["b"]), [dE_db2], rtol=1e-12)
    np.testing.assert_allclose(engine.to_numpy(l0.grads["W"]),
                               [[dE_dw1, dE_dw3], [dE_dw2, dE_dw4]], rtol=1e-11)
    np.testing.assert_allclose(engine.to_numpy(l0.grads["b"]), [delta_h1, delta_h2], rtol=1e-11)

    SGD(lr=0.5).step(model)
    w = model.get_weights()
    # w5 and w6 only see the output: these are the published updated values.
    assert w["layer1.W"][0, 0] == pytest.approx(0.35891648, abs=1e-8)
    assert w["layer1.W"][1, 0] == pytest.approx(0.408666186, abs=1e-9)
    assert w["layer1.b"][0] == pytest.approx(b2 - 0.5 * dE_db2, rel=1e-12)
    np.testing.assert_allclose(w["layer0.W"], [[w1 - 0.5 * dE_dw1, w3 - 0.5 * dE_dw3],
                                               [w2 - 0.5 * dE_dw2, w4 - 0.5 * dE_dw4]], rtol=1e-12)


def test_mazur_two_two_two_network_published_numbers(engine):
    """Mazur's "step by step backpropagation example", both outputs, checked
    against the numbers printed in the article."""
    model = Sequential([Dense(2, "sigmoid"), Dense(2, "sigmoid")], input_dim=2,
                       engine=engine, dtype="float64")
    model.set_weights({
        "layer0.W": np.array([[0.15, 0.25], [0.20, 0.30]]),
        "layer0.b": np.array([0.35, 0.35]),
        "layer1.W": np.array([[0.40, 0.50], [0.45, 0.55]]),
        "layer1.b": np.array([0.60, 0.60]),
    })
    x = engine.asarray(np.array([[0.05, 0.10]]), "float64")
    target = engine.asarray(np.array([[0.01, 0.99]]), "float64")
    out = model.forward(x, training=True)
    np.testing.assert_allclose(engine.to_numpy(out), [[0.75136507, 0.772928465]], atol=1e-8)
    loss, grad = MeanSquaredError()(engine, out, target)
    assert loss == pytest.approx(0.298371109, abs=1e-9)
    model.backward(grad)
    assert engine.to_numpy(model.layers[1].grads["W"])[0, 0] == pytest.approx(0.082167041, abs=1e-9)
    assert engine.to_numpy(model.layers[0].grads["W"])[0, 0] == pytest.approx(0.000438568, abs=1e-9)
    SGD(lr=0.5).step(model)
    w = model.get_weights()
    np.testing.assert_allclose(w["layer1.W"], [[0.35891648, 0.51130127], [0.408666186, 0.561370121]],
                               atol=1e-8)
    np.testing.assert_allclose(w["layer0.W"], [[0.149780716, 0.24975114], [0.19956143, 0.29950229]],
                               atol=1e-8)


def test_activation_layer_forward_backward(engine):
    layer = Activation("leaky_relu", alpha=0.2)
    model = Sequential([Dense(2, "identity"), layer], input_dim=2, engine=engine, dtype="float64")
    model.set_weights({"layer0.W": np.eye(2), "layer0.b": np.zeros(2)})
    x = np.array([[1.5, -2.0]])
    out = model.forward(engine.asarray(x, "float64"), training=True)
    np.testing.assert_allclose(engine.to_numpy(out), [[1.5, -0.4]])
    g = engine.asarray(np.array([[3.0, 3.0]]), "float64")
    np.testing.assert_allclose(engine.to_numpy(model.backward(g, need_input_grad=True)), [[3.0, 0.6]])


def test_l2_penalty_and_gradient_by_hand(engine):
    model = Sequential([Dense(2, "identity"), Activation("tanh"), Dense(1, "identity")],
                       input_dim=2, engine=engine, dtype="float64")
    W0 = np.array([[1.0, -2.0], [0.5, 3.0]])
    W1 = np.array([[2.0], [-1.0]])
    model.set_weights({"layer0.W": W0, "layer0.b": np.array([10.0, 10.0]),
                       "layer2.W": W1, "layer2.b": np.array([7.0])})
    l2 = 0.1
    # l2/2 * (1 + 4 + 0.25 + 9 + 4 + 1); biases are excluded.
    assert model.l2_penalty(l2) == pytest.approx(0.05 * 19.25, rel=1e-14)
    assert model.l2_penalty(0.0) == 0.0
    x = engine.asarray(np.array([[0.3, -0.2]]), "float64")
    model.forward(x, training=True)
    model.backward(engine.asarray(np.ones((1, 1)), "float64"))
    before = engine.to_numpy(model.layers[0].grads["W"]).copy()
    before_b = engine.to_numpy(model.layers[0].grads["b"]).copy()
    model.add_l2_gradient(l2)
    np.testing.assert_allclose(engine.to_numpy(model.layers[0].grads["W"]), before + l2 * W0, rtol=1e-13)
    np.testing.assert_allclose(engine.to_numpy(model.layers[0].grads["b"]), before_b)


def test_dense_config_errors():
    with pytest.raises(ConfigError, match="positive whole number of units"):
        Dense(0)
    with pytest.raises(ConfigError, match="units"):
        Dense(2.5)
    with pytest.raises(ConfigError, match="unknown activation 'softsign'") as info:
        Dense(3, "softsign")
    for name in ACTIVATIONS:
        assert name in str(info.value)
    with pytest.raises(ConfigError, match="alpha"):
        Dense(3, "leaky_relu", alpha=1.5)
    with pytest.raises(ConfigError, match="unknown activation"):
        Activation("swish")


def test_layer_config_round_trip():
    from handprop.nn.model import layer_from_config

    d = Dense(7, "leaky_relu", init="he_uniform", bias_init=0.1, alpha=0.2)
    rebuilt = layer_from_config(d.config())
    assert (rebuilt.units, rebuilt.activation, rebuilt.init, rebuilt.bias_init, rebuilt.alpha) == \
        (7, "leaky_relu", "he_uniform", 0.1, 0.2)
    with pytest.raises(ConfigError, match="unknown layer type 'Conv'"):
        layer_from_config({"type": "Conv"})
