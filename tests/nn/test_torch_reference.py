"""Every engine (the reference included) against PyTorch's autograd.

Activations forward and backward in float32 and float64, softmax
cross-entropy and the optimizer updates, which ``base.py`` promises are in
``torch.optim`` form. Skipped with the reason when torch is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest

from handprop.engines import ACTIVATIONS

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install 'handprop[compare]')")
F = torch.nn.functional
torch.set_num_threads(1)  # small tensors; do not compete with the BLAS threads

DTYPES = ["float32", "float64"]
TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-11, atol=1e-13)}
ALPHA = 0.07


def torch_activation(kind):
    return {
        "identity": lambda x: x,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "relu": torch.relu,
        "leaky_relu": lambda x: F.leaky_relu(x, ALPHA),
        "lecun_tanh": lambda x: 1.7159 * torch.tanh(x * (2.0 / 3.0)),
    }[kind]


def close(actual, expected, dtype):
    np.testing.assert_allclose(actual, expected, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ACTIVATIONS)
@pytest.mark.parametrize("scale", [3.0, 1e4], ids=["normal", "extreme"])
def test_activation_forward_backward(engine, rng, kind, dtype, scale):
    z = (rng.standard_normal((37, 19)) * scale).astype(dtype)
    b = rng.standard_normal(19).astype(dtype)
    g = rng.standard_normal((37, 19)).astype(dtype)

    zt = torch.tensor(z, requires_grad=True)
    out_t = torch_activation(kind)(zt + torch.tensor(b))
    out_t.backward(torch.tensor(g))

    out = engine.bias_act(engine.asarray(z), engine.asarray(b), kind, alpha=ALPHA)
    grad = engine.act_backward(engine.asarray(g), out, kind, alpha=ALPHA)
    out, grad = engine.to_numpy(out), engine.to_numpy(grad)
    assert out.dtype == np.dtype(dtype) and grad.dtype == np.dtype(dtype)
    tol = dict(TOL[dtype])
    tol["atol"] *= scale  # identity/relu outputs reach |scale|
    np.testing.assert_allclose(out, out_t.detach().numpy(), **tol)
    close(grad, zt.grad.numpy(), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 2), (64, 10), (13, 257)], ids=str)
def test_softmax_xent(engine, rng, shape, dtype):
    logits = (rng.standard_normal(shape) * 5).astype(dtype)
    labels = rng.integers(0, shape[1], shape[0])
    lt = torch.tensor(logits, requires_grad=True)
    loss_t = F.cross_entropy(lt, torch.tensor(labels))
    loss_t.backward()

    loss, grad = engine.softmax_xent(engine.asarray(logits), engine.asarray(labels))
    loss = engine.to_float(loss)  # may be a 0-d device array on a GPU
    assert loss == pytest.approx(loss_t.item(), rel=TOL[dtype]["rtol"], abs=TOL[dtype]["atol"])
    close(engine.to_numpy(grad), lt.grad.numpy(), dtype)


def _torch_run(opt_factory, param0, grads):
    p = torch.nn.Parameter(torch.tensor(param0))
    opt = opt_factory([p])
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
    return p.detach().numpy(), opt.state[p]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_momentum_matches_torch_sgd(engine, rng, dtype, nesterov, weight_decay):
    param0 = rng.standard_normal((9, 4)).astype(dtype)
    grads = [rng.standard_normal((9, 4)).astype(dtype) for _ in range(5)]
    want, state = _torch_run(
        lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=nesterov,
                                   weight_decay=weight_decay), param0, grads)
    p = engine.asarray(param0.copy())
    v = engine.asarray(np.zeros_like(param0))
    for g in grads:
        engine.momentum_update(p, engine.asarray(g), v, 0.1, 0.9, weight_decay=weight_decay,
                               nesterov=nesterov)
    close(engine.to_numpy(p), want, dtype)
    close(engine.to_numpy(v), state["momentum_buffer"].numpy(), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_sgd_matches_torch(engine, rng, dtype, weight_decay):
    param0 = rng.standard_normal((5, 3)).astype(dtype)
    grads = [rng.standard_normal((5, 3)).astype(dtype) for _ in range(3)]
    want, _ = _torch_run(lambda ps: torch.optim.SGD(ps, lr=0.2, weight_decay=weight_decay),
                         param0, grads)
    p = engine.asarray(param0.copy())
    for g in grads:
        engine.sgd_update(p, engine.asarray(g), 0.2, weight_decay=weight_decay)
    close(engine.to_numpy(p), want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_adam_matches_torch(engine, rng, dtype, weight_decay):
    param0 = rng.standard_normal((6, 7)).astype(dtype)
    grads = [rng.standard_normal((6, 7)).astype(dtype) for _ in range(6)]
    hp = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=weight_decay)
    # foreach=False: torch's plain per-parameter loop, the documented formula.
    want, state = _torch_run(lambda ps: torch.optim.Adam(ps, foreach=False, **hp), param0, grads)
    p = engine.asarray(param0.copy())
    m = engine.asarray(np.zeros_like(param0))
    v = engine.asarray(np.zeros_like(param0))
    for t, g in enumerate(grads, start=1):
        engine.adam_update(p, engine.asarray(g), m, v, 1e-2, 0.9, 0.99, 1e-8, t,
                           weight_decay=weight_decay)
    close(engine.to_numpy(p), want, dtype)
    close(engine.to_numpy(m), state["exp_avg"].numpy(), dtype)
    close(engine.to_numpy(v), state["exp_avg_sq"].numpy(), dtype)
