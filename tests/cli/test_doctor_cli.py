"""`handprop doctor`: verdicts and exit codes, on engines every machine has."""

from __future__ import annotations

import pytest

from handprop.cli import main
from handprop.engines import engine_status, get_engine, registry
from handprop.engines.cuda.engine import CupyEngine
from handprop.engines.cpu import NumpyEngine


def test_cpu_against_itself_passes(capsys):
    assert main(["doctor", "--backend", "cpu", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    for name in ("bias_act[lecun_tanh]", "act_backward[leaky_relu]", "softmax_xent", "bias_grad",
                 "sum_squares", "sgd_update", "momentum_update[nesterov]", "adam_update",
                 "im2col", "col2im", "max_pool_forward", "max_pool_backward", "avg_pool_forward",
                 "avg_pool_backward", "act_backward_weight_grad[relu]"):
        assert name in out
    assert "MISMATCH" not in out
    assert out.strip().splitlines()[-1].startswith("PASS: all 40 checks match the cpu reference on cpu (host CPU")


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
    assert out.strip().splitlines()[-1].startswith("FAIL: 2 of 80 checks differ")


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
