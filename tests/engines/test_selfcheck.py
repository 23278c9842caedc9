"""The engine self-check behind `handprop doctor`: what it compares and what it catches."""

from __future__ import annotations

import numpy as np
import pytest

from handprop.engines import get_engine, selfcheck
from handprop.engines.cpu import NumpyEngine


def test_emulated_cuda_kernels_pass_the_doctor():
    cuda_emulation = pytest.importorskip("cuda_emulation")
    if cuda_emulation.compiler() is None:
        pytest.skip("no C++ compiler for the host emulation of the CUDA kernels")
    engine = cuda_emulation.emulated_engine(grid=None, block=64)
    checks = selfcheck.run_checks(engine, get_engine("cpu"))
    bad = [(c.primitive, c.dtype, c.errors) for c in checks if not c.ok]
    assert not bad
    assert len(checks) == 80 and all(c.cases >= 6 for c in checks)
    assert {name.rsplit("_", 1)[0] for name, _, _ in engine.launches} >= {
        "bias_act", "act_backward", "softmax_xent", "bias_grad", "sum_squares",
        "sgd_update", "momentum_update", "adam_update", "batch_norm_forward",
        "batch_norm_backward", "im2col", "col2im", "max_pool_forward", "max_pool_backward",
        "avg_pool_forward", "avg_pool_backward"}


class _BrokenCol2im(NumpyEngine):
    name = "broken-col2im"

    def col2im(self, cols, x_shape, kernel, stride, padding):
        dx = super().col2im(cols, x_shape, kernel, stride, padding)
        dx[..., -1] = 0.0  # drops the last column's gradient
        return dx


def test_a_wrong_conv_primitive_is_caught(monkeypatch, capsys):
    checks = selfcheck.run_checks(_BrokenCol2im(), get_engine("cpu"), dtypes=("float64",))
    # matmul_col2im is col2im around a GEMM in the reference this engine inherits
    assert [c.primitive for c in checks if not c.ok] == ["col2im", "matmul_col2im"]


def test_compare_treats_one_sided_nan_as_a_mismatch():
    check = selfcheck.Check("x", "float64")
    selfcheck.compare(check, "nan", np.array([np.nan, 1.0]), np.array([np.nan, 1.0]))
    assert check.ok
    selfcheck.compare(check, "nan", np.array([np.nan]), np.array([1.0]))
    assert not check.ok
