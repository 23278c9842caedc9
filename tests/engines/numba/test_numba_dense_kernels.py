"""The compiled epoch's dense products against NumPy's, at ragged sizes: not a multiple of
the block or of the vector, one row, one column, and a K of 1; float32 and float64 (the
avx2 profile of CI runs them for the AVX2 target too). No speed is asserted."""

from __future__ import annotations

import numpy as np
import pytest

from handprop.engines import engine_status

pytestmark = pytest.mark.skipif(not engine_status("numba").available,
                                reason="numba is not installed")

SHAPES = [(1, 1, 1), (1, 784, 100), (7, 1, 33), (13, 17, 1), (64, 784, 100), (37, 100, 10),
          (128, 256, 256), (5, 9, 16), (3, 31, 17), (29, 8, 40)]
TOL = {"float32": 1e-5, "float64": 1e-13}


def _operands(rng, shape, dtype, pad=5):
    """Matrices inside bigger flat buffers, at offsets, so offsets and in-place writes
    are exercised; values in [-1, 1]."""
    m, k, n = shape
    a = rng.uniform(-1, 1, m * k + 2 * pad).astype(dtype)
    b = rng.uniform(-1, 1, k * n + 2 * pad).astype(dtype)
    g = rng.uniform(-1, 1, m * n + 2 * pad).astype(dtype)
    return a, b, g, pad


def _close(got, want, terms, dtype):
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL[dtype] * terms)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_the_forward_product(rng, shape, dtype):
    from handprop.engines.numba import dense_kernels

    m, k, n = shape
    a, b, _, pad = _operands(rng, shape, dtype)
    out = np.full(m * n + 2 * pad, 7.0, dtype)
    dense_kernels.matmul_rows(a, pad, k, b, pad, n, out, pad, 0, m)
    want = a[pad:pad + m * k].reshape(m, k) @ b[pad:pad + k * n].reshape(k, n)
    _close(out[pad:pad + m * n].reshape(m, n), want, k, dtype)
    assert (out[:pad] == 7).all() and (out[pad + m * n:] == 7).all()  # nothing beyond


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_rows_in_parts_give_the_same_bits_as_at_once(rng, shape, dtype):
    from handprop.engines.numba import dense_kernels

    m, k, n = shape
    a, b, _, pad = _operands(rng, shape, dtype)
    whole, parts = np.zeros(m * n + 2 * pad, dtype), np.zeros(m * n + 2 * pad, dtype)
    dense_kernels.matmul_rows(a, pad, k, b, pad, n, whole, pad, 0, m)
    cut = m // 3
    dense_kernels.matmul_rows(a, pad, k, b, pad, n, parts, pad, cut, m)
    dense_kernels.matmul_rows(a, pad, k, b, pad, n, parts, pad, 0, cut)
    np.testing.assert_array_equal(whole, parts)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_the_weight_gradient(rng, shape, dtype, accumulate):
    from handprop.engines.numba import dense_kernels

    m, k, n = shape
    a, _, g, pad = _operands(rng, shape, dtype)
    start = rng.uniform(-1, 1, k * n + 2 * pad).astype(dtype)
    out = start.copy()
    cut = k // 2  # two parts of the weight rows, as two threads take them
    dense_kernels.matmul_t_rows(a, pad, k, m, g, pad, n, out, pad, accumulate, 0, cut)
    dense_kernels.matmul_t_rows(a, pad, k, m, g, pad, n, out, pad, accumulate, cut, k)
    want = a[pad:pad + m * k].reshape(m, k).T @ g[pad:pad + m * n].reshape(m, n)
    if accumulate:
        want = want + start[pad:pad + k * n].reshape(k, n)
    _close(out[pad:pad + k * n].reshape(k, n), want, m + 1, dtype)
    np.testing.assert_array_equal(out[:pad], start[:pad])
    np.testing.assert_array_equal(out[pad + k * n:], start[pad + k * n:])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_the_input_gradient_through_the_transposed_weights(rng, shape, dtype):
    from handprop.engines.numba import dense_kernels

    m, k, n = shape
    _, w, g, pad = _operands(rng, shape, dtype)
    wt = np.zeros(k * n, dtype)
    dense_kernels.transpose_rows(w, pad, k, n, wt, 0, k)
    np.testing.assert_array_equal(wt.reshape(n, k), w[pad:pad + k * n].reshape(k, n).T)
    out = np.zeros(m * k + 2 * pad, dtype)
    dense_kernels.matmul_rows(g, pad, n, wt, 0, k, out, pad, 0, m)
    want = g[pad:pad + m * n].reshape(m, n) @ w[pad:pad + k * n].reshape(k, n).T
    _close(out[pad:pad + m * k].reshape(m, k), want, n, dtype)
