"""Numba-engine specifics: availability, which inputs take the kernels and
which fall back to the reference, label checks, warm-up, kernel flags, the
on-disk cache, and lazy importing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

from handprop.engines import base, engine_status, get_engine
from handprop.errors import ConfigError, ShapeError

if not engine_status("numba").available:
    pytest.skip(f"numba engine unavailable: {engine_status('numba').reason}",
                allow_module_level=True)

from handprop.engines.numba import engine as numba_engine, kernels as numba_kernels  # noqa: E402
from handprop.engines.numba.engine import NumbaEngine  # noqa: E402

CPU = get_engine("cpu")
PRIMITIVE_KERNELS = {
    "bias_act_direct", "bias_scale", "bias_neg_abs", "sigmoid_finish", "act_backward",
    "bias_grad", "bias_grad_blocks", "sum_squares", "xent_shift", "xent_finish", "sgd_update",
    "momentum_update", "adam_update", "batch_norm_forward", "batch_norm_backward",
}
#: called for big arrays only (tested in test_numba_conv.py)
BIG_CALL_KERNELS = {"bias_grad_blocks"}


@pytest.fixture
def nb():
    return get_engine("numba")


class Spy:
    """Stands in for the kernel module: records which kernels are called and
    forwards to the real ones."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        kernel = getattr(numba_kernels, name)

        def call(*args):
            self.calls.append(name)
            return kernel(*args)

        return call


@pytest.fixture
def spy(nb, monkeypatch):
    s = Spy()
    monkeypatch.setattr(nb, "kernels", s)
    return s


def _src_env():
    env = dict(os.environ)
    src = str(Path(base.__file__).resolve().parents[2])  # .../src of this checkout
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


# ----------------------------------------------------------- availability
def test_available_here_and_flags(nb):
    assert NumbaEngine.unavailable_reason() == ""
    assert nb.name == "numba" and nb.fused_kernels and not nb.is_gpu
    assert isinstance(nb, get_engine("cpu").__class__)  # NumPy arrays, reference fallback
    assert nb.describe()["numba_version"]


def test_unavailable_reason_when_numba_missing(monkeypatch):
    def fail(name):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(NumbaEngine, "_reason", None)
    monkeypatch.setattr(numba_engine.importlib, "import_module", fail)
    reason = NumbaEngine.unavailable_reason()
    assert "numba cannot be imported" in reason and "pip install" in reason


def test_unavailable_reason_when_numba_too_old(monkeypatch):
    monkeypatch.setattr(NumbaEngine, "_reason", None)
    monkeypatch.setattr(numba_engine.importlib, "import_module",
                        lambda name: types.SimpleNamespace(__version__="0.50.1"))
    reason = NumbaEngine.unavailable_reason()
    assert "0.50.1" in reason and "too old" in reason


def test_kernel_activation_codes_match_base():
    for kind, code in base.ACTIVATION_CODES.items():
        assert getattr(numba_kernels, kind.upper()) == code


# ------------------------------------------------------- kernel vs fallback
def test_contiguous_float_inputs_use_kernels(nb, spy, rng):
    z = rng.standard_normal((5, 4)).astype(np.float32)
    b = np.zeros(4, np.float32)
    for kind in base.ACTIVATIONS:
        nb.bias_act(z, b, kind)
    nb.act_backward(z, z, "sigmoid")
    nb.bias_grad(z)
    nb.sum_squares(z)
    nb.softmax_xent(z, np.array([0, 1, 2, 3, 0]))
    p, s1, s2 = z.copy(), np.zeros_like(z), np.zeros_like(z)
    nb.sgd_update(p, z, 0.1)
    nb.momentum_update(p, z, s1, 0.1, 0.9)
    nb.adam_update(p, z, s1, s2, 0.1, 0.9, 0.999, 1e-8, 1)
    _, x_hat, inv_std, _, _ = nb.batch_norm_forward(z, b + 1, b, 1e-5)
    nb.batch_norm_backward(z, x_hat, inv_std, b + 1)
    assert PRIMITIVE_KERNELS - BIG_CALL_KERNELS <= set(spy.calls)


@pytest.mark.parametrize(
    "case",
    ["float16", "int", "mixed_dtypes", "labels_float", "list_input"],
)
def test_unhandled_inputs_fall_back_to_reference(nb, spy, rng, case):
    z = rng.standard_normal((6, 3))
    b = rng.standard_normal(3)
    if case == "float16":
        z, b = z.astype(np.float16), b.astype(np.float16)
    elif case == "int":
        z, b = (z * 10).astype(np.int64), (b * 10).astype(np.int64)
    elif case == "mixed_dtypes":
        z = z.astype(np.float32)
    if case == "labels_float":
        loss, grad = nb.softmax_xent(z, np.array([0.0, 1, 2, 0, 1, 2]))
        want_loss, want_grad = CPU.softmax_xent(z, np.array([0.0, 1, 2, 0, 1, 2]))
        assert loss == want_loss
        np.testing.assert_array_equal(grad, want_grad)
    elif case == "list_input":
        np.testing.assert_array_equal(nb.bias_grad(z.tolist()), CPU.bias_grad(z.tolist()))
    else:
        got = nb.bias_act(z, b, "relu")
        want = CPU.bias_act(z, b, "relu")
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        if case in ("float16", "int"):
            got, want = nb.act_backward(z, z, "tanh"), CPU.act_backward(z, z, "tanh")
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
    assert spy.calls == []


def test_a_bias_of_the_wrong_rank_is_refused_by_both_engines(nb, rng):
    from handprop.errors import ShapeError

    z, b = rng.standard_normal((6, 3)), rng.standard_normal((1, 3))
    for engine in (nb, CPU):
        with pytest.raises(ShapeError, match=r"b of shape \(units,\)"):
            engine.bias_act(z, b, "relu")


def test_host_scalars_are_python_floats(nb, rng):
    # base.py: on host engines the loss is a Python float, no device round trip.
    logits = rng.standard_normal((4, 3)).astype(np.float32)
    loss, _ = nb.softmax_xent(logits, np.array([0, 1, 2, 0]))
    assert type(loss) is float
    assert type(nb.sum_squares(logits)) is float


def test_identity_backward_returns_grad_itself(nb, spy):
    g = np.ones((2, 3), np.float32)
    assert nb.act_backward(g, g, "identity") is g
    assert spy.calls == []


def test_noncontiguous_read_only_inputs_are_copied_into_kernels(nb, spy, rng):
    z = rng.standard_normal((8, 10)).astype(np.float32)[:, ::2]
    b = rng.standard_normal(5).astype(np.float32)
    np.testing.assert_array_equal(nb.bias_act(z, b, "relu"), CPU.bias_act(z, b, "relu"))
    np.testing.assert_allclose(nb.bias_grad(z.T), CPU.bias_grad(z.T), rtol=1e-6)
    assert spy.calls == ["bias_act_direct", "bias_grad"]


def test_noncontiguous_or_readonly_params_fall_back(nb, spy, rng):
    base_arr = rng.standard_normal((4, 6))
    g = rng.standard_normal((4, 3))
    param = base_arr[:, ::2]
    want = base_arr.copy()
    nb.sgd_update(param, g, 0.1)
    CPU.sgd_update(want[:, ::2], g, 0.1)
    np.testing.assert_array_equal(base_arr, want)  # written through the view
    assert spy.calls == []
    frozen = np.ones((2, 2))
    frozen.flags.writeable = False
    with pytest.raises(ValueError):
        nb.sgd_update(frozen, np.ones((2, 2)), 0.1)
    assert spy.calls == []


def test_mismatched_bias_raises_shape_error(nb):
    with pytest.raises(ShapeError, match=r"\(5, 4\).*\(3,\)"):
        nb.bias_act(np.zeros((5, 4)), np.zeros(3), "relu")


def test_unknown_activation_is_config_error(nb):
    with pytest.raises(ConfigError, match="unknown activation"):
        nb.bias_act(np.zeros((2, 2)), np.zeros(2), "swish")
    with pytest.raises(ConfigError, match="unknown activation"):
        nb.act_backward(np.zeros((2, 2)), np.zeros((2, 2)), "swish")


@pytest.mark.parametrize("bad", [10, -1, 255])
def test_out_of_range_label_names_it(nb, rng, bad):
    logits = rng.standard_normal((6, 10)).astype(np.float32)
    labels = np.array([1, 2, 3, bad, 4, 5], dtype=np.int64 if bad != 255 else np.uint8)
    with pytest.raises(ConfigError, match=rf"label {bad} at batch row 3 is outside 0\.\.9"):
        nb.softmax_xent(logits, labels)


def test_adam_step_zero_raises_like_reference(nb):
    p = np.ones(3)
    with pytest.raises(ConfigError, match="step >= 1"):
        nb.adam_update(p, p.copy(), np.zeros(3), np.zeros(3), 0.1, 0.9, 0.999, 1e-8, 0)


def test_zero_division_follows_numpy_not_python(nb):
    # Kernels use numpy's error model: a zero denominator gives inf/nan like
    # the reference instead of raising ZeroDivisionError.
    p = np.ones(2, np.float32)
    nb.adam_update(p, np.zeros(2, np.float32), np.zeros(2, np.float32), np.zeros(2, np.float32),
                   0.1, 0.9, 0.999, 0.0, 1)
    assert np.isnan(p).all()


# ------------------------------------------------------- compile and cache
def test_warmup_compiles_every_kernel_for_each_dtype(nb):
    nb.warmup(dtypes=("float32", "float64"))
    from numba.core.registry import CPUDispatcher

    kernels = {name for name, obj in vars(numba_kernels).items() if isinstance(obj, CPUDispatcher)
               and obj.py_func.__module__ == numba_kernels.__name__}
    assert kernels == PRIMITIVE_KERNELS
    for name in kernels:
        sigs = " ".join(str(s) for s in getattr(numba_kernels, name).signatures)
        assert "float32" in sigs and "float64" in sigs, name


def test_kernels_are_serial_cached_and_not_fastmath():
    for name in PRIMITIVE_KERNELS:
        opts = getattr(numba_kernels, name).targetoptions
        assert not opts.get("parallel"), name
        assert not opts.get("fastmath"), name
        assert opts.get("error_model") == "numpy", name
        assert getattr(numba_kernels, name)._cache.__class__.__name__ == "FunctionCache", name


def test_cache_honours_numba_cache_dir(tmp_path):
    env = _src_env()
    env["NUMBA_CACHE_DIR"] = str(tmp_path)
    code = "from handprop.engines import get_engine; get_engine('numba').warmup()"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    cached = [p.name for p in tmp_path.rglob("*") if p.suffix in (".nbi", ".nbc")]
    assert any(n.startswith("kernels.xent_finish") for n in cached), cached


# ------------------------------------------------------------- lazy import
def test_handprop_and_cpu_engine_do_not_import_numba():
    code = textwrap.dedent(
        """
        import sys
        import handprop
        from handprop.engines import get_engine
        import handprop.engines.numba.engine  # the module itself is light too
        get_engine("cpu").bias_act(__import__("numpy").zeros((2, 2)), __import__("numpy").zeros(2), "relu")
        print("numba" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], env=_src_env(), check=True,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"
