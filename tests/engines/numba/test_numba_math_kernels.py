"""The vectorizing exp/tanh of the compiled training path against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from handprop.engines import engine_status

if not engine_status("numba").available:
    pytest.skip(f"numba engine unavailable: {engine_status('numba').reason}",
                allow_module_level=True)

from numba import njit  # noqa: E402

from handprop.engines.numba.math_kernels import exp_nonpositive, expm1_nonpositive, tanh  # noqa: E402


@njit
def _apply(kind, x, out):
    for i in range(x.shape[0]):
        if kind == 0:
            out[i] = exp_nonpositive(x[i])
        elif kind == 1:
            out[i] = expm1_nonpositive(x[i])
        else:
            out[i] = tanh(x[i])


def apply(kind, x):
    out = np.empty_like(x)
    _apply(kind, x, out)
    return out


def ulps(got, want, dtype):
    """Distance in units in the last place of ``want`` (in ``dtype``)."""
    tiny = np.finfo(dtype).smallest_subnormal
    return np.abs(got.astype(np.float64) - want) / np.spacing(np.abs(want).astype(dtype).clip(tiny))


EDGES = [0.0, -0.0, -1e-30, -1e-8, -0.5 * np.log(2), -1.0, -87.3, -103.9, -104.5, -700.0,
         -708.5, -745.0, -746.0, -1e300, -np.inf]


@pytest.mark.parametrize("dtype, most", [("float64", 1.0), ("float32", 2.0)])
def test_exp_of_non_positive_numbers(dtype, most):
    rng = np.random.default_rng(0)
    edges = np.array(EDGES).clip(np.finfo(dtype).min, None)  # -1e300 is -max in float32
    x = np.concatenate([edges, -np.abs(rng.normal(size=20000)) * 30,
                        -rng.random(20000) * 0.5]).astype(dtype)
    got = apply(0, x)
    want = np.exp(x.astype(np.float64))
    assert got.dtype == np.dtype(dtype)
    assert ulps(got, want, dtype).max() <= most
    assert got[0] == got[1] == 1.0 and got[len(EDGES) - 1] == 0.0
    assert np.isnan(apply(0, np.array([np.nan], dtype)))[0]


@pytest.mark.parametrize("dtype, most", [("float64", 2.0), ("float32", 2.0)])
def test_expm1_stays_accurate_near_zero(dtype, most):
    x = -np.logspace(-30, 2, 4000).astype(dtype)
    want = np.expm1(x.astype(np.float64))
    assert ulps(apply(1, x), want, dtype).max() <= most


@pytest.mark.parametrize("dtype, most", [("float64", 3.0), ("float32", 3.0)])
def test_tanh_everywhere(dtype, most):
    rng = np.random.default_rng(1)
    x = np.concatenate([[0.0, -0.0, 1e-30, -1e-8, 20.0, -40.0, 1e30, np.inf, -np.inf],
                        rng.normal(size=20000) * 4, rng.normal(size=2000) * 1e-4]).astype(dtype)
    got = apply(2, x)
    want = np.tanh(x.astype(np.float64))
    assert ulps(got, want, dtype).max() <= most
    assert np.signbit(got[1]) and got[7] == 1.0 and got[8] == -1.0
    assert np.isnan(apply(2, np.array([np.nan], dtype)))[0]
