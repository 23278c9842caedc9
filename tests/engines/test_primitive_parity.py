"""Every fused engine against the ``cpu`` reference, primitive by primitive.

Written only against the Engine interface (``asarray``, ``to_numpy``,
``to_float`` and the primitives) so that it runs unchanged on ``numba``,
``cuda`` and ``cuda-emulated``. Inputs cover random values, extreme values
(|z| up to 1e4: no NaN/Inf, no warnings), batch 1, odd sizes that leave
tails, optimizer state after several steps, and non-contiguous views.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from handprop.engines import ACTIVATIONS, get_engine
from handprop.engines.cases import LAYOUTS, all_cases, trials
from handprop.errors import HandpropError

DTYPES = ["float32", "float64"]
SHAPES = [(1, 1), (1, 10), (7, 13), (300, 10), (1031, 3)]
GRAD_ACTIVATIONS = [k for k in ACTIVATIONS]
# Different libm/SIMD/GPU implementations of tanh/exp differ by a few ulp.
TOL = {"float32": dict(rtol=2e-5, atol=2e-6), "float64": dict(rtol=1e-10, atol=1e-12)}
HYPO = settings(
    max_examples=25,
    deadline=None,  # the first call may compile kernels
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

CPU = get_engine("cpu")


def close(actual, expected, dtype, scale=1.0):
    tol = TOL[str(dtype)]
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale)


def run_both(engine, method, *host_args, **kwargs):
    """Call ``method`` on ``engine`` (inputs moved there) and on the reference;
    return both results as host arrays/floats. Warnings are errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = getattr(engine, method)(*[engine.asarray(a) for a in host_args], **kwargs)
        want = getattr(CPU, method)(*[np.asarray(a) for a in host_args], **kwargs)
    return got, want


def host(engine, array):
    out = engine.to_numpy(array)
    assert isinstance(out, np.ndarray)
    return out


def random_zb(rng, shape, dtype, scale=3.0):
    z = (rng.standard_normal(shape) * scale).astype(dtype)
    b = (rng.standard_normal(shape[1]) * scale).astype(dtype)
    return z, b


def extreme_zb(rng, shape, dtype):
    """Values spread over [-1e4, 1e4], with the extremes and zero present."""
    z = (rng.uniform(-1, 1, shape) * 10.0 ** rng.uniform(-3, 4, shape)).astype(dtype)
    flat = z.reshape(-1)
    flat[: min(3, flat.size)] = np.array([1e4, -1e4, 0.0])[: min(3, flat.size)]
    return z, np.zeros(shape[1], dtype=dtype)


# ------------------------------------------------------------- activations
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind", ACTIVATIONS)
def test_bias_act_random(fused_engine, rng, kind, shape, dtype):
    z, b = random_zb(rng, shape, dtype)
    got, want = run_both(fused_engine, "bias_act", z, b, kind=kind)
    got = host(fused_engine, got)
    assert got.dtype == np.dtype(dtype) and got.shape == shape
    close(got, want, dtype, scale=3.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha", [0.01, 0.2])
def test_leaky_relu_alpha(fused_engine, rng, alpha, dtype):
    z, b = random_zb(rng, (9, 17), dtype)
    got, want = run_both(fused_engine, "bias_act", z, b, kind="leaky_relu", alpha=alpha)
    close(host(fused_engine, got), want, dtype)
    g = rng.standard_normal(z.shape).astype(dtype)
    got, want = run_both(fused_engine, "act_backward", g, want, kind="leaky_relu", alpha=alpha)
    close(host(fused_engine, got), want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ACTIVATIONS)
def test_bias_act_extreme_is_finite_and_silent(fused_engine, rng, kind, dtype):
    z, b = extreme_zb(rng, (64, 33), dtype)
    got, want = run_both(fused_engine, "bias_act", z, b, kind=kind)
    got = host(fused_engine, got)
    assert np.all(np.isfinite(got))
    close(got, want, dtype, scale=1e4)
    if kind in ("sigmoid", "tanh", "lecun_tanh"):
        assert np.abs(got).max() <= 1.7159 + 1e-6  # saturated, not overshooting


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("kind", GRAD_ACTIVATIONS)
def test_act_backward(fused_engine, rng, kind, shape, dtype):
    z, b = random_zb(rng, shape, dtype)
    out = CPU.bias_act(z, b, kind)
    g = rng.standard_normal(shape).astype(dtype)
    got, want = run_both(fused_engine, "act_backward", g, out, kind=kind)
    got = host(fused_engine, got)
    assert got.dtype == np.dtype(dtype) and got.shape == shape
    close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", GRAD_ACTIVATIONS)
def test_act_backward_extreme(fused_engine, rng, kind, dtype):
    z, b = extreme_zb(rng, (50, 21), dtype)
    out = CPU.bias_act(z, b, kind)
    g = (rng.standard_normal(z.shape) * 1e3).astype(dtype)
    got, want = run_both(fused_engine, "act_backward", g, out, kind=kind)
    got = host(fused_engine, got)
    assert np.all(np.isfinite(got))
    close(got, want, dtype, scale=1e3)


def _matrices(dtype, max_abs=1e4):
    width = 32 if dtype == "float32" else 64
    return hnp.arrays(
        np.dtype(dtype),
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=24),
        elements=st.floats(-max_abs, max_abs, allow_nan=False, width=width),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ACTIVATIONS)
@HYPO
@given(data=st.data())
def test_bias_act_hypothesis(fused_engine, kind, dtype, data):
    z = data.draw(_matrices(dtype), label="z")
    b = data.draw(
        hnp.arrays(np.dtype(dtype), z.shape[1],
                   elements=st.floats(-10, 10, width=32 if dtype == "float32" else 64)),
        label="b",
    )
    got, want = run_both(fused_engine, "bias_act", z, b, kind=kind)
    got = host(fused_engine, got)
    assert np.all(np.isfinite(got))
    close(got, want, dtype, scale=1e4)
    g = np.ones_like(z)
    got_b, want_b = run_both(fused_engine, "act_backward", g, want, kind=kind)
    close(host(fused_engine, got_b), want_b, dtype)


# -------------------------------------------------------------- reductions
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_bias_grad(fused_engine, rng, shape, dtype):
    g = rng.standard_normal(shape).astype(dtype)
    got, want = run_both(fused_engine, "bias_grad", g)
    got = host(fused_engine, got)
    assert got.shape == (shape[1],) and got.dtype == np.dtype(dtype)
    # Summation order differs between engines: tolerance grows with the batch.
    close(got, want, dtype, scale=shape[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(100,), (3, 4, 5)], ids=str)
def test_sum_squares(fused_engine, rng, shape, dtype):
    w = rng.standard_normal(shape).astype(dtype)
    got, want = run_both(fused_engine, "sum_squares", w)
    assert isinstance(got, float)
    assert got == pytest.approx(want, rel=1e-5 if dtype == "float32" else 1e-12)


# ------------------------------------------------------ batch normalization
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(64, 128)], ids=str)
@pytest.mark.parametrize("spread", [1.0, 1e3], ids=["unit", "wide"])
def test_batch_norm(fused_engine, rng, shape, dtype, spread):
    x = (rng.normal(2.0, 3.0, size=shape) * spread).astype(dtype)
    gamma, beta = (rng.standard_normal(shape[1]).astype(dtype) for _ in range(2))
    got, want = run_both(fused_engine, "batch_norm_forward", x, gamma, beta, eps=1e-5)
    names = ("out", "x_hat", "inv_std", "mean", "var")
    for name, mine, ref in zip(names, got, want):
        mine = host(fused_engine, mine)
        assert mine.dtype == np.dtype(dtype), name
        close(mine, ref, dtype, scale=max(1.0, float(np.abs(ref).max())))
    # Backward from the reference's saved x_hat and inv_std, so only backward is compared.
    _, x_hat, inv_std, _, _ = want
    grad = rng.standard_normal(shape).astype(dtype)
    got, want = run_both(fused_engine, "batch_norm_backward", grad, x_hat, inv_std, gamma)
    for name, mine, ref in zip(("dx", "dgamma", "dbeta"), got, want):
        mine = host(fused_engine, mine)
        assert mine.dtype == np.dtype(dtype) and mine.shape == ref.shape, name
        close(mine, ref, dtype, scale=shape[0] * max(1.0, float(np.abs(ref).max())))


# ------------------------------------------------------------------ losses
def _check_xent(engine, logits, labels, dtype, scale=1.0):
    (loss, grad), (want_loss, want_grad) = run_both(engine, "softmax_xent", logits, labels)
    # The loss may stay on the engine (a 0-d device array on a GPU): read it
    # the documented way.
    loss = engine.to_float(loss)
    assert isinstance(loss, float) and np.isfinite(loss)
    grad = host(engine, grad)
    assert grad.dtype == np.dtype(dtype) and grad.shape == logits.shape
    assert np.all(np.isfinite(grad))
    rel = 1e-5 if dtype == "float32" else 1e-11
    assert loss == pytest.approx(want_loss, rel=rel, abs=rel * scale)
    close(grad, want_grad, dtype)
    # The gradient of a mean loss: each row sums to 0 and lies in [-1/n, 1/n].
    n = logits.shape[0]
    assert np.abs(grad.astype(np.float64).sum(axis=1)).max() <= 1e-5 / n * logits.shape[1] + 1e-12
    assert np.abs(grad).max() <= 1.0 / n * (1 + 1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES + [(64, 100), (5, 1000)], ids=str)
def test_softmax_xent_random(fused_engine, rng, shape, dtype):
    logits = (rng.standard_normal(shape) * 4).astype(dtype)
    labels = rng.integers(0, shape[1], shape[0])
    _check_xent(fused_engine, logits, labels, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_xent_extreme(fused_engine, rng, dtype):
    logits = (rng.uniform(-1e4, 1e4, (257, 10))).astype(dtype)
    logits[0] = 1e4
    logits[1] = -1e4
    logits[2, :] = -1e4
    logits[2, 3] = 1e4  # one dominant class, label elsewhere: loss ~ 2e4
    labels = rng.integers(0, 10, 257)
    labels[2] = 0
    _check_xent(fused_engine, logits, labels, dtype, scale=1e4)


@pytest.mark.parametrize("label_dtype", ["int64", "int32", "uint8"])
def test_softmax_xent_label_dtypes(fused_engine, rng, label_dtype):
    logits = rng.standard_normal((33, 7)).astype("float32")
    labels = rng.integers(0, 7, 33).astype(label_dtype)
    _check_xent(fused_engine, logits, labels, "float32")


def test_softmax_xent_nan_propagates(fused_engine, rng):
    # The trainer detects divergence from a NaN loss: it must not be hidden.
    logits = rng.standard_normal((4, 5))
    logits[2, 1] = np.nan
    with np.errstate(invalid="ignore"):
        loss, _ = fused_engine.softmax_xent(fused_engine.asarray(logits),
                                            fused_engine.asarray(np.array([0, 1, 2, 3])))
        assert np.isnan(fused_engine.to_float(loss))


@pytest.mark.parametrize("dtype", DTYPES)
@HYPO
@given(data=st.data())
def test_softmax_xent_hypothesis(fused_engine, dtype, data):
    logits = data.draw(_matrices(dtype), label="logits")
    n, k = logits.shape
    labels = data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, k - 1)), label="labels")
    _check_xent(fused_engine, logits, labels, dtype, scale=1e4)


# -------------------------------------------------------------- optimizers
def _state_run(engine, update, shapes_dtype, steps, rng, **kwargs):
    """Run ``steps`` updates on ``engine`` and on the reference from the same
    start and the same gradients; return both final states as host arrays."""
    shape, dtype = shapes_dtype
    param0 = rng.standard_normal(shape).astype(dtype)
    grads = [rng.standard_normal(shape).astype(dtype) for _ in range(steps)]
    n_state = {"sgd_update": 0, "momentum_update": 1, "adam_update": 2}[update]
    results = []
    for eng in (engine, CPU):
        # ``asarray`` may alias a host array (it does on NumPy engines): copy.
        arrays = [eng.asarray(param0.copy())] + [eng.asarray(np.zeros(shape, dtype))
                                                 for _ in range(n_state)]
        for t, g in enumerate(grads, start=1):
            extra = {"step": t} if update == "adam_update" else {}
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                ret = getattr(eng, update)(arrays[0], eng.asarray(g), *arrays[1:], **kwargs, **extra)
            assert ret is None  # in place
        results.append([eng.to_numpy(a) for a in arrays])
        assert not np.array_equal(results[-1][0], param0)  # the update did move it
    return results


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (1031, 3), (257,)], ids=str)
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_sgd_update(fused_engine, rng, shape, dtype, weight_decay):
    got, want = _state_run(fused_engine, "sgd_update", (shape, dtype), 5, rng,
                           lr=0.1, weight_decay=weight_decay)
    for a, b in zip(got, want):
        assert a.dtype == np.dtype(dtype)
        close(a, b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (1031, 3)], ids=str)
@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_momentum_update(fused_engine, rng, shape, dtype, nesterov, weight_decay):
    got, want = _state_run(fused_engine, "momentum_update", (shape, dtype), 6, rng,
                           lr=0.05, momentum=0.9, weight_decay=weight_decay, nesterov=nesterov)
    for a, b in zip(got, want):  # param and velocity
        close(a, b, dtype, scale=10.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (1031, 3)], ids=str)
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_update(fused_engine, rng, shape, dtype, weight_decay):
    got, want = _state_run(fused_engine, "adam_update", (shape, dtype), 7, rng,
                           lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=weight_decay)
    for a, b in zip(got, want):  # param, m, v
        close(a, b, dtype)


def test_adam_rejects_step_zero(fused_engine):
    p = fused_engine.asarray(np.ones((2, 2)))
    z = fused_engine.asarray(np.zeros((2, 2)))
    with pytest.raises(HandpropError):
        fused_engine.adam_update(p, z, z, z, 0.1, 0.9, 0.999, 1e-8, 0)


# -------------------------------------------------------- non-contiguous
def _views(engine, base_host):
    """Strided and transposed views, made on the engine itself."""
    base = engine.asarray(base_host)
    return {"strided": (base[:, ::2], base_host[:, ::2]), "transposed": (base.T, base_host.T)}


@pytest.mark.parametrize("layout", ["strided", "transposed"])
@pytest.mark.parametrize("kind", ACTIVATIONS)
def test_noncontiguous_activation_inputs(fused_engine, rng, kind, layout):
    zb = rng.standard_normal((14, 14)).astype("float32") * 3
    z_eng, z_host = _views(fused_engine, zb)[layout]
    b = rng.standard_normal(z_host.shape[1]).astype("float32")
    try:
        out = host(fused_engine, fused_engine.bias_act(z_eng, fused_engine.asarray(b), kind))
        g_eng, g_host = _views(fused_engine, zb * 0.5)[layout]
        back = host(fused_engine, fused_engine.act_backward(g_eng, fused_engine.asarray(out), kind))
    except HandpropError as exc:  # refusing is fine if it says why
        assert "contiguous" in str(exc)
        return
    close(out, CPU.bias_act(z_host, b, kind), "float32")
    close(back, CPU.act_backward(g_host, out, kind), "float32")


@pytest.mark.parametrize("layout", ["strided", "transposed"])
def test_noncontiguous_loss_and_reductions(fused_engine, rng, layout):
    xb = rng.standard_normal((12, 12)).astype("float32")
    x_eng, x_host = _views(fused_engine, xb)[layout]
    labels = rng.integers(0, x_host.shape[1], x_host.shape[0])
    try:
        loss, grad = fused_engine.softmax_xent(x_eng, fused_engine.asarray(labels))
        loss = fused_engine.to_float(loss)
        bias = host(fused_engine, fused_engine.bias_grad(x_eng))
        ss = fused_engine.sum_squares(x_eng)
    except HandpropError as exc:
        assert "contiguous" in str(exc)
        return
    want_loss, want_grad = CPU.softmax_xent(x_host, labels)
    assert loss == pytest.approx(want_loss, rel=1e-5)
    close(host(fused_engine, grad), want_grad, "float32")
    close(bias, CPU.bias_grad(x_host), "float32", scale=12)
    assert ss == pytest.approx(CPU.sum_squares(x_host), rel=1e-5)


@pytest.mark.parametrize("update", ["sgd_update", "momentum_update", "adam_update"])
def test_noncontiguous_inplace_update_writes_through(fused_engine, rng, update):
    """A strided parameter view is updated in place in its base array (or
    refused with a clear error); entries outside the view stay untouched."""
    base_host = rng.standard_normal((6, 10))
    grad_host = rng.standard_normal((6, 5))
    base = fused_engine.asarray(base_host.copy())  # asarray may alias on NumPy
    param = base[:, ::2]
    state = [fused_engine.asarray(np.zeros((6, 10)))[:, 1::2] for _ in range(2)]
    args = {
        "sgd_update": (dict(lr=0.1), 0),
        "momentum_update": (dict(lr=0.1, momentum=0.9, nesterov=True), 1),
        "adam_update": (dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, step=1), 2),
    }[update]
    kwargs, n_state = args
    try:
        getattr(fused_engine, update)(param, fused_engine.asarray(grad_host), *state[:n_state], **kwargs)
    except HandpropError as exc:
        assert "contiguous" in str(exc)
        return
    want = base_host.copy()
    ref_state = [np.zeros((6, 10))[:, 1::2] for _ in range(2)]
    getattr(CPU, update)(want[:, ::2], grad_host, *ref_state[:n_state], **kwargs)
    got = host(fused_engine, base)
    close(got, want, "float64")
    np.testing.assert_array_equal(got[:, 1::2], base_host[:, 1::2])
    for s, r in zip(state[:n_state], ref_state):
        close(host(fused_engine, s), r, "float64")


# ------------------------------------------------------------- convolution
# (x shape, kernel, stride, padding (top, bottom, left, right))
CONV_GEOMETRIES = [
    ((1, 1, 1, 1), (1, 1), (1, 1), (0, 0, 0, 0)),
    ((1, 1, 5, 5), (3, 3), (1, 1), (1, 1, 1, 1)),
    ((2, 3, 7, 6), (3, 2), (2, 1), (1, 0, 2, 1)),
    ((3, 2, 9, 8), (5, 5), (1, 1), (2, 2, 2, 2)),
    ((2, 4, 8, 8), (4, 4), (1, 1), (1, 2, 1, 2)),  # "same" for an even kernel
    ((2, 2, 6, 9), (2, 3), (3, 2), (0, 2, 0, 2)),
    ((1, 2, 4, 4), (3, 3), (1, 1), (3, 3, 3, 3)),  # windows lying wholly in the padding
    ((17, 16, 14, 14), (5, 5), (1, 1), (2, 2, 2, 2)),  # 3,332 rows: many rounds of any grid
]
# (x shape, window, stride)
POOL_GEOMETRIES = [
    ((1, 1, 1, 1), (1, 1), (1, 1)),
    ((1, 1, 4, 4), (2, 2), (2, 2)),
    ((2, 3, 7, 6), (3, 2), (2, 1)),  # overlapping rows, ragged edge
    ((3, 2, 5, 5), (3, 3), (1, 1)),  # heavily overlapping
    ((2, 1, 9, 8), (2, 2), (3, 3)),  # gaps
    ((9, 16, 28, 28), (2, 2), (2, 2)),
]


def conv_engines(engine):
    """The engine, and for the emulated CUDA kernels also grids larger than the data and one
    sized to it (the fixture's 2 blocks of 3 threads is smaller than all but the first case)."""
    if engine.name != "cuda-emulated":
        return [engine]
    from cuda_emulation import emulated_engine

    return [engine, emulated_engine(grid=512, block=64), emulated_engine(grid=None, block=32)]


def geometry_id(case):
    return "-".join("x".join(map(str, part)) for part in case)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_GEOMETRIES, ids=geometry_id)
def test_im2col_and_col2im(fused_engine, rng, case, dtype):
    x_shape, kernel, stride, padding = case
    x = rng.standard_normal(x_shape).astype(dtype)
    want_cols = CPU.im2col(x, kernel, stride, padding)
    grad_cols = rng.standard_normal(want_cols.shape).astype(dtype)
    want_dx = CPU.col2im(grad_cols, x_shape, kernel, stride, padding)
    for eng in conv_engines(fused_engine):
        cols = host(eng, eng.im2col(eng.asarray(x), kernel, stride, padding))
        assert cols.dtype == np.dtype(dtype) and cols.shape == want_cols.shape
        np.testing.assert_array_equal(cols, want_cols)  # a gather: exact
        dx = host(eng, eng.col2im(eng.asarray(grad_cols), x_shape, kernel, stride, padding))
        assert dx.dtype == np.dtype(dtype) and dx.shape == x_shape
        # Overlapping windows summed in the reference's order (offset i, then j): exact.
        np.testing.assert_array_equal(dx, want_dx)


@pytest.mark.parametrize("layout", ["contiguous", "channels-last"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_GEOMETRIES, ids=geometry_id)
def test_window_products(fused_engine, rng, case, dtype, layout):
    """``im2col_matmul``, ``im2col_t_matmul`` and ``matmul_col2im`` agree with im2col/col2im
    around one GEMM, for images as a model's input and as a convolution's output (a
    channels-last view); results are images in any layout, compared by value."""
    x_shape, kernel, stride, padding = case
    n, c = x_shape[:2]
    x = rng.standard_normal(x_shape).astype(dtype)
    cols = CPU.im2col(x, kernel, stride, padding)
    filters = 3
    w = rng.standard_normal((cols.shape[1], filters)).astype(dtype)
    g = rng.standard_normal((cols.shape[0], filters)).astype(dtype)
    want_z, want_dw = cols @ w, cols.T @ g
    want_dx = CPU.col2im(g @ w.T, x_shape, kernel, stride, padding)
    # atol scaled by the terms of each sum: C*kh*kw, the N*OH*OW windows, F per overlap
    terms = {"z": cols.shape[1], "dw": cols.shape[0], "dx": filters * kernel[0] * kernel[1]}
    for eng in conv_engines(fused_engine):
        xe = eng.asarray(x)
        if layout == "channels-last":
            xe = eng.xp.permute_dims(eng.asarray(np.ascontiguousarray(x.transpose(0, 2, 3, 1))),
                                     (0, 3, 1, 2))
        z = host(eng, eng.im2col_matmul(xe, eng.asarray(w), kernel, stride, padding))
        assert z.dtype == np.dtype(dtype) and z.shape == want_z.shape
        close(z, want_z, dtype, scale=terms["z"])
        dw = host(eng, eng.im2col_t_matmul(xe, eng.asarray(g), kernel, stride, padding))
        assert dw.shape == want_dw.shape
        close(dw, want_dw, dtype, scale=terms["dw"])
        dx = host(eng, eng.matmul_col2im(eng.asarray(g), eng.asarray(np.ascontiguousarray(w.T)),
                                         x_shape, kernel, stride, padding))
        assert dx.dtype == np.dtype(dtype) and dx.shape == x_shape
        close(dx, want_dx, dtype, scale=terms["dx"])


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "sigmoid"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, filters", [(CONV_GEOMETRIES[2], 3), (CONV_GEOMETRIES[3], 16),
                                           (CONV_GEOMETRIES[-1], 32)],
                         ids=lambda v: geometry_id(v) if isinstance(v, tuple) else f"f{v}")
def test_a_first_layers_backward(fused_engine, rng, case, filters, dtype, activation):
    """``act_backward_weight_grad`` is ``act_backward_bias_grad`` then ``im2col_t_matmul``."""
    x_shape, kernel, stride, padding = case
    x = rng.standard_normal(x_shape).astype(dtype)
    cols = CPU.im2col(x, kernel, stride, padding)
    out = CPU.activation(rng.standard_normal((cols.shape[0], filters)).astype(dtype), activation)
    grad = rng.standard_normal(out.shape).astype(dtype)
    dz = CPU.act_backward(grad, out, activation)
    want_dw, want_db = cols.T @ dz, CPU.bias_grad(dz)
    for eng in conv_engines(fused_engine):
        dw, db = eng.act_backward_weight_grad(eng.asarray(x), eng.asarray(grad), eng.asarray(out),
                                              activation, 0.01, kernel, stride, padding)
        close(host(eng, dw), want_dw, dtype, scale=cols.shape[0])
        close(host(eng, db), want_db, dtype, scale=cols.shape[0])


@pytest.mark.parametrize("activation", ["identity", "relu", "leaky_relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_window_product_with_bias_and_activation(fused_engine, rng, dtype, activation):
    """``im2col_matmul(..., bias, activation)`` is ``activation(im2col(x) @ w + bias)``, and
    ``act_backward_bias_grad`` is ``act_backward`` then ``bias_grad``; big enough to split
    over threads."""
    x_shape, kernel, stride, padding = CONV_GEOMETRIES[-1]
    x = rng.standard_normal(x_shape).astype(dtype)
    cols = CPU.im2col(x, kernel, stride, padding)
    w = rng.standard_normal((cols.shape[1], 6)).astype(dtype)
    bias = rng.standard_normal(6).astype(dtype)
    want = CPU.bias_act(cols @ w, bias, activation)
    grad = rng.standard_normal(want.shape).astype(dtype)
    want_dz = CPU.act_backward(grad, want, activation)
    want_db = CPU.bias_grad(want_dz)
    for eng in conv_engines(fused_engine):
        z = host(eng, eng.im2col_matmul(eng.asarray(x), eng.asarray(w), kernel, stride, padding,
                                        eng.asarray(bias), activation))
        close(z, want, dtype, scale=cols.shape[1])
        z_no_bias = host(eng, eng.im2col_matmul(eng.asarray(x), eng.asarray(w), kernel, stride,
                                                padding, None, activation))
        close(z_no_bias, CPU.activation(cols @ w, activation), dtype, scale=cols.shape[1])
        dz, db = eng.act_backward_bias_grad(eng.asarray(grad), eng.asarray(want), activation)
        np.testing.assert_array_equal(host(eng, dz), want_dz)  # element-wise: exact
        close(host(eng, db), want_db, dtype, scale=grad.shape[0])


@pytest.mark.parametrize("case", CONV_GEOMETRIES[1:4], ids=geometry_id)
def test_im2col_writes_into_a_buffer_that_fits(fused_engine, rng, case):
    """``out=``: the result lands in a buffer of the right shape and dtype (no new allocation
    every step); any other buffer is left alone and a new array comes back."""
    x_shape, kernel, stride, padding = case
    x = rng.standard_normal(x_shape).astype("float32")
    want = CPU.im2col(x, kernel, stride, padding)
    xe = fused_engine.asarray(x)
    buffer = fused_engine.asarray(np.full(want.shape, 7.0, dtype="float32"))
    cols = fused_engine.im2col(xe, kernel, stride, padding, out=buffer)
    assert cols is buffer
    np.testing.assert_array_equal(host(fused_engine, buffer), want)
    for misfit in (fused_engine.asarray(np.zeros((want.shape[0] + 1, want.shape[1]), "float32")),
                   fused_engine.asarray(np.zeros(want.shape, "float64"))):
        before = host(fused_engine, misfit).copy()
        cols = fused_engine.im2col(xe, kernel, stride, padding, out=misfit)
        assert cols is not misfit
        np.testing.assert_array_equal(host(fused_engine, cols), want)
        np.testing.assert_array_equal(host(fused_engine, misfit), before)
    # The reference takes the argument and allocates.
    assert CPU.im2col(x, kernel, stride, padding, out=want) is not want


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", POOL_GEOMETRIES, ids=geometry_id)
def test_pooling(fused_engine, rng, case, dtype):
    x_shape, size, stride = case
    x = rng.standard_normal(x_shape).astype(dtype)
    x.reshape(-1)[::7] = 0.5  # ties inside many windows
    want_out, want_arg = CPU.max_pool_forward(x, size, stride)
    grad = rng.standard_normal(want_out.shape).astype(dtype)
    want_dx = CPU.max_pool_backward(grad, want_arg, x_shape, size, stride)
    want_avg = CPU.avg_pool_forward(x, size, stride)
    want_avg_dx = CPU.avg_pool_backward(grad, x_shape, size, stride)
    for eng in conv_engines(fused_engine):
        out, arg = eng.max_pool_forward(eng.asarray(x), size, stride)
        np.testing.assert_array_equal(host(eng, out), want_out)
        np.testing.assert_array_equal(host(eng, arg), want_arg)
        assert host(eng, out).dtype == np.dtype(dtype)
        dx = host(eng, eng.max_pool_backward(eng.asarray(grad), arg, x_shape, size, stride))
        close(dx, want_dx, dtype, scale=size[0] * size[1])
        close(host(eng, eng.avg_pool_forward(eng.asarray(x), size, stride)), want_avg, dtype)
        dx = host(eng, eng.avg_pool_backward(eng.asarray(grad), x_shape, size, stride))
        close(dx, want_avg_dx, dtype, scale=size[0] * size[1])


def test_max_pool_nan_and_infinity_follow_the_reference(fused_engine):
    x = np.array([[[[1.0, np.nan, 3.0, np.inf], [np.nan, 0.0, -np.inf, -np.inf]]]])
    x = np.concatenate([x, x[:, :, :, ::-1]], axis=1)  # two channels
    want_out, want_arg = CPU.max_pool_forward(x, (2, 2), (2, 2))
    assert np.isnan(want_out[0, 0, 0, 0]) and want_arg[0, 0, 0, 0] == 1  # the first NaN
    for eng in conv_engines(fused_engine):
        # Contiguous, and channels-last memory as a convolution's output is.
        channels_last = eng.xp.permute_dims(
            eng.asarray(np.ascontiguousarray(x.transpose(0, 2, 3, 1))), (0, 3, 1, 2))
        for image in (eng.asarray(x), channels_last):
            out, arg = eng.max_pool_forward(image, (2, 2), (2, 2))
            np.testing.assert_array_equal(host(eng, out), want_out)
            np.testing.assert_array_equal(host(eng, arg), want_arg)


@pytest.mark.parametrize("layout", ["strided", "transposed"])
def test_noncontiguous_images(fused_engine, rng, layout):
    """A convolution's output reaches pooling as a transposed view of its rows."""
    base = rng.standard_normal((3, 6, 8, 10)).astype("float32")
    for eng in conv_engines(fused_engine):
        b = eng.asarray(base)
        view, want = {"strided": (b[:, ::2, :, ::2], base[:, ::2, :, ::2]),
                      "transposed": (eng.xp.permute_dims(b, (0, 3, 1, 2)),
                                     base.transpose(0, 3, 1, 2))}[layout]
        out, arg = eng.max_pool_forward(view, (2, 2), (2, 2))
        ref_out, ref_arg = CPU.max_pool_forward(want, (2, 2), (2, 2))
        np.testing.assert_array_equal(host(eng, out), ref_out)
        np.testing.assert_array_equal(host(eng, arg), ref_arg)
        close(host(eng, eng.avg_pool_forward(view, (3, 2), (1, 2))),
              CPU.avg_pool_forward(want, (3, 2), (1, 2)), "float32")
        np.testing.assert_array_equal(host(eng, eng.im2col(view, (3, 3), (1, 1), (1, 1, 1, 1))),
                                      CPU.im2col(want, (3, 3), (1, 1), (1, 1, 1, 1)))
        # Backward from the arg-max of a view (it may keep the view's layout), both window
        # kinds: the written-out 2x2 and the general one, overlapping.
        for size, stride in (((2, 2), (2, 2)), ((3, 3), (1, 1))):
            out, arg = eng.max_pool_forward(view, size, stride)
            ref_out, ref_arg = CPU.max_pool_forward(want, size, stride)
            np.testing.assert_array_equal(host(eng, out), ref_out)
            np.testing.assert_array_equal(host(eng, arg), ref_arg)
            grad = rng.standard_normal(ref_out.shape).astype("float32")
            dx = host(eng, eng.max_pool_backward(eng.asarray(grad), arg, want.shape, size, stride))
            close(dx, CPU.max_pool_backward(grad, ref_arg, want.shape, size, stride), "float32",
                  scale=size[0] * size[1])


def test_conv_shape_errors_match_the_reference(fused_engine):
    x = fused_engine.asarray(np.zeros((2, 3, 4, 4), dtype=np.float32))
    for call, message in [
        (lambda e, a: e.im2col(a, (5, 5), (1, 1), (0, 0, 0, 0)), r"5x5 window does not fit"),
        (lambda e, a: e.im2col(a[0], (3, 3), (1, 1), (0, 0, 0, 0)), r"needs images of shape"),
        (lambda e, a: e.col2im(e.asarray(np.zeros((3, 27), np.float32)), (2, 3, 4, 4), (3, 3),
                               (1, 1), (0, 0, 0, 0)), r"needs cols of shape \(8, 27\)"),
        (lambda e, a: e.max_pool_forward(a, (5, 1), (1, 1)), r"5x1 window does not fit"),
        (lambda e, a: e.avg_pool_backward(e.asarray(np.zeros((2, 3, 3, 3), np.float32)),
                                          (2, 3, 4, 4), (2, 2), (2, 2)),
         r"gradient of shape \(2, 3, 2, 2\)"),
    ]:
        for eng, arr in ((fused_engine, x), (CPU, np.zeros((2, 3, 4, 4), np.float32))):
            with pytest.raises(HandpropError, match=message):
                call(eng, arr)


# ------------------------------------------------------ the primitive table
def _case_ids(cases):
    return [case.name for case in cases]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", all_cases(), ids=_case_ids(all_cases()))
def test_every_case_of_the_primitive_table(fused_engine, case, dtype):
    """The table ``handprop doctor`` and ``warmup`` read, in every input layout: each case's
    outputs agree with the reference's to the doctor's tolerance."""
    from handprop.engines.selfcheck import Check, compare

    check = Check(case.name, dtype)
    for label, inputs in trials(case, dtype, layouts=LAYOUTS):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            mine = case.call(fused_engine, lambda a: fused_engine.asarray(np.array(a)), inputs)
            ref = case.call(CPU, lambda a: np.array(a), inputs)
        scales = case.scale(inputs) if case.scale else [None] * len(mine)
        for (name, a), (_, r), scale in zip(mine, ref, scales):
            a, r = host(fused_engine, a), np.asarray(r)
            compare(check, f"{label}{name}", a if scale is None else a / scale,
                    r if scale is None else r / scale)
    assert check.ok, check.errors[:3]


NOT_PRIMITIVES = {"asarray", "to_numpy", "to_float", "synchronize", "describe", "warmup",
                  "unavailable_reason", "compiled_epoch", "compiled_epoch_unavailable",
                  "threads_for", "window_implementation", "window_implementations", "matmul"}


def test_the_table_covers_every_primitive_an_engine_fuses():
    """A primitive that an engine overrides is one the doctor checks and warmup compiles."""
    from handprop.engines.base import Engine

    covered = {case.name.split("[")[0] for case in all_cases()}
    for name in ("numba", "cuda"):
        from handprop.engines.registry import _engine_class

        try:
            cls = _engine_class(name)
        except ImportError:
            continue
        overridden = {m for m in vars(Engine) if not m.startswith("_") and callable(getattr(
            Engine, m)) and getattr(cls, m) is not getattr(Engine, m)} - NOT_PRIMITIVES
        assert overridden <= covered, (name, sorted(overridden - covered))
