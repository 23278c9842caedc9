"""`handprop doctor`: verdicts and exit codes, on engines every machine has."""

from __future__ import annotations

import numpy as np
import pytest

from handprop.cli import doctor, main
from handprop.engines import engine_status, get_engine, registry
from handprop.engines.cupy_engine import CupyEngine
from handprop.engines.numpy_engine import NumpyEngine


def test_cpu_against_itself_passes(capsys):
    assert main(["doctor", "--backend", "cpu", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    for name in ("bias_act[lecun_tanh]", "act_backward[leaky_relu]", "softmax_xent", "bias_grad",
                 "sum_squares", "sgd_update", "momentum_update[nesterov]", "adam_update",
                 "im2col", "col2im", "max_pool_forward", "max_pool_backward", "avg_pool_forward",
                 "avg_pool_backward"):
        assert name in out
    assert "MISMATCH" not in out
    assert out.strip().splitlines()[-1].startswith("PASS: all 27 checks match the cpu reference on cpu (host CPU")


class _BrokenSigmoid(NumpyEngine):
    name = "broken"

    def bias_act(self, z, b, kind, alpha=0.01):
        out = super().bias_act(z, b, kind, alpha)
        return out * 1.001 if kind == "sigmoid" else out


def test_a_wrong_primitive_fails_with_exit_1(monkeypatch, capsys):
    real = get_engine
    monkeypatch.setattr("handprop.engines.get_engine",
                        lambda name=None: _BrokenSigmoid() if name == "broken" else real(name))
    assert main(["doctor", "--backend", "broken"]) == 1
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "MISMATCH" in line]
    assert [r.split()[0] for r in rows] == ["bias_act[sigmoid]", "bias_act[sigmoid]"]
    assert out.strip().splitlines()[-1].startswith("FAIL: 2 of 54 checks differ")


def test_unusable_engine_exits_2_with_the_reason(monkeypatch, capsys):
    monkeypatch.setattr(CupyEngine, "_reason", "no CUDA device")
    monkeypatch.setattr(registry, "_instances", {})
    assert main(["doctor", "--backend", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "Traceback" not in err


def test_numba_engine(capsys):
    status = engine_status("numba")
    if not status.available:
        pytest.skip(f"numba engine unavailable: {status.reason}")
    assert main(["doctor", "--backend", "numba"]) == 0
    assert "PASS" in capsys.readouterr().out


def test_emulated_cuda_kernels_pass_the_doctor():
    cuda_emulation = pytest.importorskip("cuda_emulation")
    if cuda_emulation.compiler() is None:
        pytest.skip("no C++ compiler for the host emulation of the CUDA kernels")
    engine = cuda_emulation.emulated_engine(grid=None, block=64)
    checks = doctor.run_checks(engine, get_engine("cpu"))
    bad = [(c.primitive, c.dtype, c.errors) for c in checks if not c.ok]
    assert not bad
    assert len(checks) == 54 and all(c.cases >= 6 for c in checks)
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
    checks = doctor.run_checks(_BrokenCol2im(), get_engine("cpu"), dtypes=("float64",))
    assert [c.primitive for c in checks if not c.ok] == ["col2im"]


def test_compare_treats_one_sided_nan_as_a_mismatch():
    check = doctor.Check("x", "float64")
    doctor._compare(check, "nan", np.array([np.nan, 1.0]), np.array([np.nan, 1.0]))
    assert check.ok
    doctor._compare(check, "nan", np.array([np.nan]), np.array([1.0]))
    assert not check.ok
