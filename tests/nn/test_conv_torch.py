"""Conv2D, MaxPool2D, AvgPool2D and Flatten against ``torch.nn.functional``, on every engine.

Forward outputs and every gradient (input, weights, bias) in float64 to 1e-10,
on random shapes that include batch 1, one channel, stride 2, padding on
some sides only, even kernels with ``"same"`` and overlapping pooling windows.
"""

from __future__ import annotations

import numpy as np
import pytest

from handprop.nn import AvgPool2D, Conv2D, Flatten, MaxPool2D, Sequential

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'handprop[compare]')")
F = torch.nn.functional
torch.set_num_threads(1)

TOL = dict(rtol=1e-10, atol=1e-12)

# (batch, channels, height, width, filters, kernel, stride, padding, activation)
CONV_CASES = [
    (1, 1, 5, 5, 1, 3, 1, 0, "identity"),
    (2, 3, 7, 6, 4, (3, 2), (2, 1), (1, 0, 2, 1), "relu"),
    (3, 2, 8, 8, 5, 3, 2, 1, "tanh"),
    (1, 4, 6, 9, 3, 5, 1, "same", "sigmoid"),
    (2, 1, 6, 6, 2, (4, 2), 1, "same", "leaky_relu"),  # even kernel: the extra row at the bottom
    (4, 3, 5, 7, 6, 1, 1, 0, "lecun_tanh"),
    (2, 2, 9, 5, 3, (2, 3), (3, 2), (0, 2), "relu"),
    # filters in whole vectors: numba's direct convolutions, a one-channel first layer too
    (3, 1, 12, 12, 16, 5, 1, "same", "relu"),
    (2, 16, 8, 8, 16, 3, 1, "same", "leaky_relu"),
]


def torch_activation(kind, alpha=0.01):
    return {"identity": lambda x: x, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
            "relu": torch.relu, "leaky_relu": lambda x: F.leaky_relu(x, alpha),
            "lecun_tanh": lambda x: 1.7159 * torch.tanh(x * (2.0 / 3.0))}[kind]


def torch_padding(layer):
    top, bottom, left, right = layer.padding
    return (left, right, top, bottom)  # F.pad's order: last axis first


def case_id(c):
    return f"{c[0]}x{c[1]}x{c[2]}x{c[3]}-k{c[5]}-s{c[6]}-p{c[7]}"


@pytest.mark.parametrize("case", CONV_CASES, ids=case_id)
def test_conv2d_matches_torch(engine, rng, case):
    n, c, h, w, filters, kernel, stride, padding, activation = case
    layer = Conv2D(filters, kernel, stride=stride, padding=padding, activation=activation)
    model = Sequential([layer], input_shape=(c, h, w), engine=engine, dtype="float64", seed=3)
    layer.params["b"] = engine.asarray(rng.standard_normal(filters), "float64")  # not zero
    x = rng.standard_normal((n, c, h, w))
    W = engine.to_numpy(layer.params["W"])
    b = engine.to_numpy(layer.params["b"])

    xt = torch.tensor(x, requires_grad=True)
    Wt = torch.tensor(W, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    padded = F.pad(xt, torch_padding(layer))
    ref = torch_activation(activation)(F.conv2d(padded, Wt, bt, stride=layer.stride))
    if padding == "same":
        assert ref.shape[2:] == (h, w)
    grad = rng.standard_normal(tuple(ref.shape))
    ref.backward(torch.tensor(grad))

    out = model.forward(engine.asarray(x, "float64"), training=True)
    assert tuple(out.shape) == tuple(ref.shape) == (n, *layer.output_shape)
    np.testing.assert_allclose(engine.to_numpy(out), ref.detach().numpy(), **TOL)
    dx = layer.backward(engine.asarray(grad, "float64"))
    np.testing.assert_allclose(engine.to_numpy(dx), xt.grad.numpy(), **TOL)
    np.testing.assert_allclose(engine.to_numpy(layer.grads["W"]), Wt.grad.numpy(), **TOL)
    np.testing.assert_allclose(engine.to_numpy(layer.grads["b"]), bt.grad.numpy(), **TOL)
    # as a first layer (no input gradient: act_backward_weight_grad), the same gradients
    assert layer.backward(engine.asarray(grad, "float64"), need_input_grad=False) is None
    np.testing.assert_allclose(engine.to_numpy(layer.grads["W"]), Wt.grad.numpy(), **TOL)
    np.testing.assert_allclose(engine.to_numpy(layer.grads["b"]), bt.grad.numpy(), **TOL)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_conv2d_torch_same_convention(cpu, rng):
    """``"same"`` pads like ``F.conv2d(padding="same")``, even kernels included."""
    x = rng.standard_normal((2, 2, 7, 6))
    for kernel in [(3, 3), (4, 4), (2, 5)]:
        layer = Conv2D(3, kernel, padding="same")
        Sequential([layer], input_shape=(2, 7, 6), engine=cpu, dtype="float64")
        want = F.conv2d(torch.tensor(x), torch.tensor(layer.params["W"]), padding="same")
        np.testing.assert_allclose(layer.forward(x), want.numpy(), **TOL)


def test_conv2d_without_bias_and_without_input_gradient(engine, rng):
    layer = Conv2D(2, 3, padding=1, use_bias=False)
    Sequential([layer], input_shape=(3, 5, 5), engine=engine, dtype="float64")
    assert set(layer.params) == {"W"}
    x = rng.standard_normal((2, 3, 5, 5))
    want = F.conv2d(torch.tensor(x), torch.tensor(engine.to_numpy(layer.params["W"])), padding=1)
    out = layer.forward(engine.asarray(x, "float64"), training=True)
    np.testing.assert_allclose(engine.to_numpy(out), want.numpy(), **TOL)
    assert layer.backward(engine.asarray(np.ones(tuple(out.shape)), "float64"),
                          need_input_grad=False) is None
    assert tuple(layer.grads["W"].shape) == (2, 3, 3, 3)


POOL_CASES = [
    # (batch, channels, height, width, size, stride)
    (1, 1, 4, 4, 2, None),
    (2, 3, 7, 6, (3, 2), (2, 1)),  # overlapping rows, ragged edge
    (3, 2, 5, 5, 3, 1),  # heavily overlapping
    (2, 1, 9, 8, 2, 3),  # gaps between windows
    (1, 4, 6, 6, (1, 3), None),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}x{c[3]}-p{c[4]}-s{c[5]}")
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pooling_matches_torch(engine, rng, kind, case):
    n, c, h, w, size, stride = case
    layer = (MaxPool2D if kind == "max" else AvgPool2D)(size, stride)
    Sequential([layer], input_shape=(c, h, w), engine=engine, dtype="float64")
    x = rng.standard_normal((n, c, h, w))
    xt = torch.tensor(x, requires_grad=True)
    pool = F.max_pool2d if kind == "max" else F.avg_pool2d
    ref = pool(xt, layer.size, layer.stride)
    grad = rng.standard_normal(tuple(ref.shape))
    ref.backward(torch.tensor(grad))

    out = layer.forward(engine.asarray(x, "float64"), training=True)
    assert tuple(out.shape) == tuple(ref.shape) == (n, *layer.output_shape)
    np.testing.assert_allclose(engine.to_numpy(out), ref.detach().numpy(), **TOL)
    dx = layer.backward(engine.asarray(grad, "float64"))
    np.testing.assert_allclose(engine.to_numpy(dx), xt.grad.numpy(), **TOL)


def test_max_pool_ties_go_to_the_first_maximum(engine):
    # Every window of this image is constant: the whole gradient goes to the top-left entry.
    x = np.repeat(np.repeat(np.array([[1.0, 2.0], [3.0, 4.0]]), 2, axis=0), 2, axis=1)[None, None]
    layer = MaxPool2D(2)
    Sequential([layer], input_shape=(1, 4, 4), engine=engine, dtype="float64")
    out = layer.forward(engine.asarray(x, "float64"), training=True)
    np.testing.assert_array_equal(engine.to_numpy(out)[0, 0], [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(engine.to_numpy(layer.argmax), np.zeros((1, 1, 2, 2)))
    dx = engine.to_numpy(layer.backward(engine.asarray(np.full((1, 1, 2, 2), 5.0), "float64")))
    want = np.zeros((4, 4))
    want[::2, ::2] = 5.0
    np.testing.assert_array_equal(dx[0, 0], want)
    xt = torch.tensor(x, requires_grad=True)
    F.max_pool2d(xt, 2).backward(torch.full((1, 1, 2, 2), 5.0, dtype=torch.float64))
    np.testing.assert_array_equal(dx, xt.grad.numpy())  # PyTorch picks the first one too


def test_small_cnn_matches_torch_end_to_end(engine, rng):
    """conv -> max-pool -> conv (stride 2) -> avg-pool -> flatten -> dense: every gradient."""
    from handprop.nn import Dense

    model = Sequential([Conv2D(3, 3, padding="same", activation="relu"), MaxPool2D(2),
                        Conv2D(4, 3, stride=2, padding=1, activation="tanh"), AvgPool2D(2, 1),
                        Flatten(), Dense(5)], input_shape=(2, 10, 10), engine=engine,
                       dtype="float64", seed=4)
    x = rng.standard_normal((3, 2, 10, 10))
    weights = model.get_weights()
    tw = {k: torch.tensor(v, requires_grad=True) for k, v in weights.items()}
    xt = torch.tensor(x, requires_grad=True)
    h = torch.relu(F.conv2d(xt, tw["layer0.W"], tw["layer0.b"], padding=1))
    h = F.max_pool2d(h, 2)
    h = torch.tanh(F.conv2d(h, tw["layer2.W"], tw["layer2.b"], stride=2, padding=1))
    h = F.avg_pool2d(h, 2, 1)
    ref = torch.flatten(h, 1) @ tw["layer5.W"] + tw["layer5.b"]
    grad = rng.standard_normal(tuple(ref.shape))
    ref.backward(torch.tensor(grad))

    out = model.forward(engine.asarray(x, "float64"), training=True)
    np.testing.assert_allclose(engine.to_numpy(out), ref.detach().numpy(), **TOL)
    dx = model.backward(engine.asarray(grad, "float64"), need_input_grad=True)
    np.testing.assert_allclose(engine.to_numpy(dx), xt.grad.numpy(), **TOL)
    for name, layer, key in model.named_parameters():
        np.testing.assert_allclose(engine.to_numpy(layer.grads[key]), tw[name].grad.numpy(),
                                   err_msg=name, **TOL)
