"""The reference implementations, unchanged, on ``array-api-strict`` arrays.

``array_api_strict`` implements the array API standard and nothing else, so
anything here that works proves the reference engine, the layers, the losses
and the optimizers use only the standard -- and so run on CuPy too. Results
are compared with the NumPy (``cpu``) engine.
"""

from __future__ import annotations

import numpy as np
import pytest

from handprop.engines.base import ACTIVATIONS, Engine
from handprop.gradcheck import gradcheck
from handprop.nn import Activation, BatchNorm, Dense, Dropout, Sequential
from handprop.nn.losses import LOSSES, get_loss
from handprop.optim import OPTIMIZERS, make_optimizer

xp_strict = pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")


class StrictEngine(Engine):
    """The base class as it is: only ``xp`` changes."""

    name = "array-api-strict"

    def __init__(self):
        super().__init__(xp_strict)


@pytest.fixture
def strict():
    return StrictEngine()


def is_strict(a) -> bool:
    return type(a).__module__.startswith("array_api_strict")


def pair(strict, cpu, host, dtype="float64"):
    # Separate copies: Engine.asarray may keep the host buffer (it does on NumPy),
    # and the in-place optimizer updates would then hit one shared array twice.
    host = np.asarray(host)
    return strict.asarray(host.copy(), dtype), cpu.asarray(host.copy(), dtype)


def same(strict, a_strict, a_cpu, rtol=1e-14):
    assert is_strict(a_strict), f"result is {type(a_strict)}, not an array_api_strict array"
    np.testing.assert_allclose(strict.to_numpy(a_strict), np.asarray(a_cpu), rtol=rtol, atol=1e-15)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ACTIVATIONS)
def test_activation_primitives(strict, cpu, rng, kind, dtype):
    z_host = rng.normal(scale=3.0, size=(5, 4))
    z_host[0, :2] = [0.0, 1e4]
    b_host = rng.normal(size=4)
    g_host = rng.normal(size=(5, 4))
    zs, zc = pair(strict, cpu, z_host, dtype)
    bs, bc = pair(strict, cpu, b_host, dtype)
    gs, gc = pair(strict, cpu, g_host, dtype)
    rtol = 1e-6 if dtype == "float32" else 1e-14
    out_s, out_c = strict.activation(zs, kind, 0.1), cpu.activation(zc, kind, 0.1)
    same(strict, out_s, out_c, rtol)
    same(strict, strict.bias_act(zs, bs, kind, 0.1), cpu.bias_act(zc, bc, kind, 0.1), rtol)
    same(strict, strict.act_backward(gs, out_s, kind, 0.1), cpu.act_backward(gc, out_c, kind, 0.1), rtol)
    assert strict.to_numpy(out_s).dtype == np.dtype(dtype)


def test_reduction_and_loss_primitives(strict, cpu, rng):
    z_host = rng.normal(size=(6, 4)) * 50.0
    labels = np.array([0, 3, 1, 2, 2, 0])
    zs, zc = pair(strict, cpu, z_host)
    ls, lc = strict.asarray(labels), cpu.asarray(labels)
    same(strict, strict.bias_grad(zs), cpu.bias_grad(zc))
    assert strict.sum_squares(zs) == pytest.approx(cpu.sum_squares(zc), rel=1e-14)
    same(strict, strict.log_softmax(zs), cpu.log_softmax(zc))
    same(strict, strict.one_hot(ls, 4, zs.dtype), cpu.one_hot(lc, 4, zc.dtype))
    loss_s, grad_s = strict.softmax_xent(zs, ls)
    loss_c, grad_c = cpu.softmax_xent(zc, lc)
    assert isinstance(loss_s, float) and loss_s == pytest.approx(loss_c, rel=1e-14)
    same(strict, grad_s, grad_c)


@pytest.mark.parametrize("loss_name", sorted(LOSSES))
def test_losses(strict, cpu, rng, loss_name):
    out_host = rng.normal(size=(5, 3))
    if loss_name == "softmax_cross_entropy":
        targets = rng.integers(0, 3, size=5)
    else:
        targets = rng.uniform(size=(5, 3))
    loss = get_loss(loss_name)
    os_, oc = pair(strict, cpu, out_host)
    val_s, grad_s = loss(strict, os_, strict.asarray(targets))
    val_c, grad_c = loss(cpu, oc, cpu.asarray(targets))
    assert strict.to_float(val_s) == pytest.approx(cpu.to_float(val_c), rel=1e-14)
    same(strict, grad_s, grad_c)
    same(strict, loss.predict(strict, os_), loss.predict(cpu, oc))
    # Class labels through the one-hot / column path too.
    labels = rng.integers(0, 2, size=5)
    one = pair(strict, cpu, out_host[:, :1])
    if loss_name != "softmax_cross_entropy":
        val_s, grad_s = loss(strict, one[0], strict.asarray(labels))
        val_c, grad_c = loss(cpu, one[1], cpu.asarray(labels))
        assert strict.to_float(val_s) == pytest.approx(cpu.to_float(val_c), rel=1e-14)
        same(strict, grad_s, grad_c)
        same(strict, loss.predict(strict, one[0]), loss.predict(cpu, one[1]))


def test_optimizer_primitives_in_place(strict, cpu, rng):
    p_host, g_host = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    p_start = p_host.copy()  # cpu.asarray does not copy: the cpu update also changes p_host
    for update in ("sgd", "momentum", "nesterov", "adam"):
        ps, pc = pair(strict, cpu, p_start)
        gs, gc = pair(strict, cpu, g_host)
        s1, s2 = xp_strict.zeros_like(ps), xp_strict.zeros_like(ps)
        c1, c2 = np.zeros_like(pc), np.zeros_like(pc)
        for step in (1, 2):
            if update == "sgd":
                strict.sgd_update(ps, gs, 0.1, 0.01)
                cpu.sgd_update(pc, gc, 0.1, 0.01)
            elif update == "adam":
                strict.adam_update(ps, gs, s1, s2, 0.1, 0.9, 0.999, 1e-8, step, 0.01)
                cpu.adam_update(pc, gc, c1, c2, 0.1, 0.9, 0.999, 1e-8, step, 0.01)
            else:
                nesterov = update == "nesterov"
                strict.momentum_update(ps, gs, s1, 0.1, 0.9, 0.01, nesterov)
                cpu.momentum_update(pc, gc, c1, 0.1, 0.9, 0.01, nesterov)
        same(strict, ps, pc)
        assert not np.allclose(strict.to_numpy(ps), p_start), update  # really updated in place
        if update != "sgd":
            same(strict, s1, c1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opt_name", sorted(OPTIMIZERS))
def test_whole_model_step(strict, cpu, rng, opt_name, dtype):
    """Every layer's forward/backward, loss, L2 and an optimizer step, twice, on both engines."""
    def build(engine):
        return Sequential([Dense(5, "relu"), Dropout(0.3), Dense(4, "identity", use_bias=False),
                           BatchNorm(), Activation("lecun_tanh"), Activation("sigmoid"),
                           Dense(3, "identity")], input_dim=4, engine=engine, dtype=dtype, seed=9)

    ms, mc = build(strict), build(cpu)
    x_host = rng.normal(size=(6, 4))
    y_host = rng.integers(0, 3, size=6)
    xs, xc = pair(strict, cpu, x_host, dtype)
    ys, yc = strict.asarray(y_host), cpu.asarray(y_host)
    opt_s, opt_c = make_optimizer(opt_name, lr=0.05), make_optimizer(opt_name, lr=0.05)
    loss = get_loss("softmax_cross_entropy")
    rtol = 2e-5 if dtype == "float32" else 1e-12
    for _ in range(2):
        out_s, out_c = ms.forward(xs, training=True), mc.forward(xc, training=True)
        same(strict, out_s, out_c, rtol)
        val_s, g_s = loss(strict, out_s, ys)
        val_c, g_c = loss(cpu, out_c, yc)
        assert val_s == pytest.approx(val_c, rel=rtol)
        dx_s, dx_c = ms.backward(g_s, need_input_grad=True), mc.backward(g_c, need_input_grad=True)
        same(strict, dx_s, dx_c, rtol)
        ms.add_l2_gradient(0.01)
        mc.add_l2_gradient(0.01)
        assert ms.l2_penalty(0.01) == pytest.approx(mc.l2_penalty(0.01), rel=rtol)
        opt_s.step(ms)
        opt_c.step(mc)
    for name, value in mc.get_weights().items():
        np.testing.assert_allclose(ms.get_weights()[name], value, rtol=rtol, atol=1e-7)


def test_gradcheck_runs_on_strict_arrays(strict):
    model = Sequential([Dense(4, "tanh"), Activation("leaky_relu"), Dense(3, "sigmoid")],
                       input_dim=3, engine=strict, dtype="float64", seed=1)
    rng = np.random.default_rng(0)
    report = gradcheck(model, "mse", rng.normal(size=(4, 3)), rng.integers(0, 3, size=4), l2=0.1)
    assert report.max_rel_error < 1e-7, report.table()


def test_strict_namespace_really_is_strict(strict):
    """Guard: the namespace must refuse something NumPy allows, or the tests above prove nothing."""
    a = strict.asarray(np.ones((2, 2)), "float64")
    assert is_strict(a)
    assert not hasattr(a, "astype")  # NumPy's method, not in the standard
    with pytest.raises(TypeError, match="cannot be type promoted"):
        a + strict.asarray(np.ones((2, 2), dtype=np.int64))  # int + float: NumPy allows it
    with pytest.raises(TypeError):
        a + np.ones((2, 2))  # mixing with NumPy arrays is refused


# ------------------------------------------------------------- convolution
CONV_GEOMETRIES = [((2, 3, 7, 6), (3, 2), (2, 1), (1, 0, 2, 1)),
                   ((1, 1, 5, 5), (5, 5), (1, 1), (0, 0, 0, 0)),
                   ((3, 2, 6, 9), (2, 3), (1, 3), (2, 2, 0, 1))]


@pytest.mark.parametrize("x_shape, kernel, stride, padding", CONV_GEOMETRIES, ids=str)
def test_convolution_primitives(strict, cpu, rng, x_shape, kernel, stride, padding):
    xs, xc = pair(strict, cpu, rng.normal(size=x_shape))
    cols_s, cols_c = strict.im2col(xs, kernel, stride, padding), cpu.im2col(xc, kernel, stride, padding)
    same(strict, cols_s, cols_c)
    gs, gc = pair(strict, cpu, rng.normal(size=tuple(cols_c.shape)))
    same(strict, strict.col2im(gs, x_shape, kernel, stride, padding),
         cpu.col2im(gc, x_shape, kernel, stride, padding))
    rows = (cols_c.shape[0], 4)
    grad_s, grad_c = pair(strict, cpu, rng.normal(size=rows))
    out_s, out_c = pair(strict, cpu, np.maximum(rng.normal(size=rows), 0))
    for mine, ref in zip(strict.act_backward_weight_grad(xs, grad_s, out_s, "relu", 0.01, kernel,
                                                         stride, padding),
                         cpu.act_backward_weight_grad(xc, grad_c, out_c, "relu", 0.01, kernel,
                                                      stride, padding)):
        same(strict, mine, ref)


@pytest.mark.parametrize("x_shape, size, stride", [((2, 3, 7, 6), (3, 2), (2, 1)),
                                                   ((1, 2, 4, 4), (2, 2), (2, 2))], ids=str)
def test_pooling_primitives(strict, cpu, rng, x_shape, size, stride):
    host = rng.normal(size=x_shape)
    host[0, 0, :2, :2] = 1.5  # a tie
    xs, xc = pair(strict, cpu, host)
    (out_s, arg_s), (out_c, arg_c) = (strict.max_pool_forward(xs, size, stride),
                                      cpu.max_pool_forward(xc, size, stride))
    same(strict, out_s, out_c)
    same(strict, arg_s, arg_c)
    gs, gc = pair(strict, cpu, rng.normal(size=tuple(out_c.shape)))
    same(strict, strict.max_pool_backward(gs, arg_s, x_shape, size, stride),
         cpu.max_pool_backward(gc, arg_c, x_shape, size, stride))
    same(strict, strict.avg_pool_forward(xs, size, stride), cpu.avg_pool_forward(xc, size, stride))
    same(strict, strict.avg_pool_backward(gs, x_shape, size, stride),
         cpu.avg_pool_backward(gc, x_shape, size, stride))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_whole_cnn_step(strict, cpu, rng, dtype):
    """Every conv-model layer (conv, batch norm per channel, dropout, both poolings, flatten),
    the loss, L2 and an Adam step, twice, on both engines."""
    from handprop.nn import AvgPool2D, Conv2D, Flatten, MaxPool2D

    def build(engine):
        return Sequential([Conv2D(3, 3, padding="same", activation="relu", use_bias=False),
                           BatchNorm(), Dropout(0.2), MaxPool2D(2),
                           Conv2D(2, 2, stride=2, padding=1, activation="tanh"), AvgPool2D(2, 1),
                           Flatten(), Dense(3)], input_shape=(2, 8, 7), engine=engine,
                          dtype=dtype, seed=3)

    ms, mc = build(strict), build(cpu)
    xs, xc = pair(strict, cpu, rng.normal(size=(4, 2, 8, 7)), dtype)
    y_host = rng.integers(0, 3, size=4)
    ys, yc = strict.asarray(y_host), cpu.asarray(y_host)
    opt_s, opt_c = make_optimizer("adam", lr=0.05), make_optimizer("adam", lr=0.05)
    loss = get_loss("softmax_cross_entropy")
    rtol = 2e-5 if dtype == "float32" else 1e-12
    for _ in range(2):
        out_s, out_c = ms.forward(xs, training=True), mc.forward(xc, training=True)
        same(strict, out_s, out_c, rtol)
        val_s, g_s = loss(strict, out_s, ys)
        val_c, g_c = loss(cpu, out_c, yc)
        dx_s, dx_c = ms.backward(g_s, need_input_grad=True), mc.backward(g_c, need_input_grad=True)
        same(strict, dx_s, dx_c, rtol)
        ms.add_l2_gradient(0.01)
        mc.add_l2_gradient(0.01)
        opt_s.step(ms)
        opt_c.step(mc)
    for name, value in mc.get_weights().items():
        np.testing.assert_allclose(ms.get_weights()[name], value, rtol=rtol, atol=1e-6)
