"""Checks that need a real GPU and CuPy; skipped elsewhere with the probe's reason.

The shared parity suite (tests/test_primitive_parity.py) already runs on the
``cuda`` engine through conftest's engine fixture; these add a whole-step
check and the array-mixing guard on real device arrays.
"""

from __future__ import annotations

import numpy as np
import pytest

from handprop.engines import engine_status, get_engine
from handprop.errors import ConfigError

STATUS = engine_status("cuda")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not STATUS.available, reason=f"no usable GPU: {STATUS.reason}"),
]


def _dense_step(engine, x, y, w, b, dtype):
    """Forward, backward and an Adam step of Dense(tanh) -> Dense -> softmax xent."""
    xp = engine.xp
    # Fresh copies: the cpu engine's asarray may alias the host array, and the
    # Adam step below writes in place.
    x, w1, b1, w2, b2 = (engine.asarray(np.array(a, dtype=dtype)) for a in (x, w[0], b[0], w[1], b[1]))
    labels = engine.asarray(y)
    h = engine.bias_act(x @ w1, b1, "tanh")
    logits = engine.bias_act(h @ w2, b2, "identity")
    loss, g_logits = engine.softmax_xent(logits, labels)
    g_w2 = xp.matmul(xp.matrix_transpose(h), g_logits)
    g_b2 = engine.bias_grad(g_logits)
    g_h = engine.act_backward(xp.matmul(g_logits, xp.matrix_transpose(w2)), h, "tanh")
    g_w1 = xp.matmul(xp.matrix_transpose(x), g_h)
    g_b1 = engine.bias_grad(g_h)
    params = [w1, b1, w2, b2]
    for p, g in zip(params, [g_w1, g_b1, g_w2, g_b2]):
        m, v = xp.zeros_like(p), xp.zeros_like(p)
        engine.adam_update(p, g, m, v, 1e-2, 0.9, 0.999, 1e-8, 1, weight_decay=1e-4)
    engine.synchronize()
    return loss, [engine.to_numpy(p) for p in params]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_whole_dense_step_matches_numpy(dtype):
    rng = np.random.default_rng(0)
    # Sizes above one 256-thread block so grid-stride tails run.
    x = rng.standard_normal((300, 17))
    y = rng.integers(0, 10, 300)
    w = [rng.standard_normal((17, 33)) * 0.3, rng.standard_normal((33, 10)) * 0.3]
    b = [rng.standard_normal(33) * 0.1, rng.standard_normal(10) * 0.1]
    loss_gpu, params_gpu = _dense_step(get_engine("cuda"), x, y, w, b, dtype)
    loss_cpu, params_cpu = _dense_step(get_engine("cpu"), x, y, w, b, dtype)
    rtol = 1e-4 if dtype == np.float32 else 1e-10
    assert loss_gpu == pytest.approx(loss_cpu, rel=rtol)
    for a, r in zip(params_gpu, params_cpu):
        np.testing.assert_allclose(a, r, rtol=rtol, atol=rtol)


def test_mixing_numpy_and_cupy_is_refused():
    import cupy

    engine = get_engine("cuda")
    z = cupy.zeros((4, 3), dtype=cupy.float32)
    with pytest.raises(ConfigError, match="Mixing NumPy and CuPy"):
        engine.bias_act(z, np.zeros(3, dtype=np.float32), "relu")
    with pytest.raises(ConfigError, match="Mixing NumPy and CuPy"):
        engine.sgd_update(z, np.zeros((4, 3), dtype=np.float32), 0.1)


def test_labels_out_of_range_on_the_gpu_poison_the_loss():
    """No per-step host round trip: a bad label shows as a NaN loss, not a sync."""
    engine = get_engine("cuda")
    logits = engine.asarray(np.zeros((3, 4), dtype=np.float32))
    loss, _ = engine.softmax_xent(logits, engine.asarray(np.array([0, 4, 1])))
    assert not isinstance(loss, float)  # still on the device
    assert np.isnan(engine.to_float(loss))


def test_kernels_compile_once_and_are_reused():
    from handprop.engines.cuda.engine import CupyEngine

    engine = get_engine("cuda")
    z = engine.asarray(np.ones((2, 3), dtype=np.float32))
    engine.activation(z, "relu")
    kernel = CupyEngine._kernels["bias_act_f32"]
    engine.activation(z, "sigmoid")
    assert CupyEngine._kernels["bias_act_f32"] is kernel
