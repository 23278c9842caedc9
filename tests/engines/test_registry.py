"""Engine registry: names, availability with reasons, ``auto``, precedence, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

from handprop.engines import Engine, available_engines, engine_status, get_engine, resolve_name
from handprop.engines import registry
from handprop.engines.registry import ENV_VAR, EngineStatus
from handprop.errors import ConfigError, EngineUnavailableError


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def fake_statuses(monkeypatch, available: set[str]):
    def status(name):
        name = registry._check_name(name)
        return EngineStatus(name, name in available, "" if name in available else "faked away")

    monkeypatch.setattr(registry, "engine_status", status)


def test_get_cpu_engine_by_name(no_env):
    eng = get_engine("cpu")
    assert isinstance(eng, Engine) and eng.name == "cpu"
    assert get_engine("cpu") is eng           # one instance per engine
    assert get_engine(" CPU ") is eng         # names are forgiving about case and spaces
    assert get_engine(eng) is eng             # an Engine passes straight through
    assert eng.describe() == {"name": "cpu", "is_gpu": False, "fused_kernels": False}


def test_available_engines_lists_every_engine_with_reasons():
    statuses = available_engines()
    assert [s.name for s in statuses] == ["cpu", "numba", "cuda"]
    by_name = {s.name: s for s in statuses}
    assert by_name["cpu"].available and by_name["cpu"].reason == ""
    for s in statuses:
        # Available engines have no reason; unavailable ones say why, in words.
        assert s.available == (s.reason == "")
        if not s.available:
            assert len(s.reason) > 10


def test_unknown_engine_name_lists_valid_names():
    for call in (get_engine, engine_status, resolve_name):
        with pytest.raises(ConfigError, match="unknown engine 'tpu'") as info:
            call("tpu")
        for name in ("cpu", "numba", "cuda", "auto"):
            assert name in str(info.value)


def test_precedence_argument_then_env_then_auto(monkeypatch):
    fake_statuses(monkeypatch, {"cpu", "numba"})
    monkeypatch.setenv(ENV_VAR, "cpu")
    assert resolve_name("numba") == "numba"      # explicit argument wins over the environment
    assert resolve_name(None) == "cpu"           # then the environment
    monkeypatch.setenv(ENV_VAR, "auto")
    assert resolve_name(None) == "numba"
    monkeypatch.delenv(ENV_VAR)
    assert resolve_name(None) == "numba"         # then auto
    monkeypatch.setenv(ENV_VAR, "bogus")
    assert resolve_name("cpu") == "cpu"          # a bad env var does not matter when an argument is given
    with pytest.raises(ConfigError, match="unknown engine 'bogus'"):
        resolve_name(None)


def test_env_var_selects_engine_in_get_engine(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "cpu")
    assert get_engine().name == "cpu"
    assert get_engine(None).name == "cpu"


@pytest.mark.parametrize("available, expected", [
    ({"cpu"}, "cpu"),
    ({"cpu", "numba"}, "numba"),
    ({"cpu", "cuda"}, "cuda"),
    ({"cpu", "numba", "cuda"}, "cuda"),
    (set(), "cpu"),  # cpu is the last resort even if a check misreports it
])
def test_auto_order_is_cuda_then_numba_then_cpu(monkeypatch, no_env, available, expected):
    fake_statuses(monkeypatch, available)
    assert resolve_name("auto") == expected
    assert resolve_name(None) == expected


def test_auto_resolves_to_an_available_engine_here(no_env):
    name = resolve_name("auto")
    assert engine_status(name).available
    order = ["cuda", "numba", "cpu"]
    for better in order[:order.index(name)]:
        assert not engine_status(better).available


def test_explicit_unavailable_engine_is_an_error_naming_the_reason(monkeypatch):
    module = types.ModuleType("handprop_fake_gpu_engine")

    class FakeGpu(Engine):
        name = "cuda"

        @staticmethod
        def unavailable_reason():
            return "no CUDA device found (simulated)"

    module.FakeGpu = FakeGpu
    monkeypatch.setitem(sys.modules, "handprop_fake_gpu_engine", module)
    monkeypatch.setitem(registry.ENGINE_CLASSES, "cuda", "handprop_fake_gpu_engine:FakeGpu")
    monkeypatch.setattr(registry, "_instances", {})
    status = engine_status("cuda")
    assert not status.available and status.reason == "no CUDA device found (simulated)"
    with pytest.raises(EngineUnavailableError, match=r"engine 'cuda' is not usable.*no CUDA device found") as info:
        get_engine("cuda")
    assert "--backend auto" in str(info.value)


def test_engine_whose_library_is_missing(monkeypatch):
    monkeypatch.setitem(registry.ENGINE_CLASSES, "numba", "no_such_library_xyz.engine:Engine")
    monkeypatch.setattr(registry, "_instances", {})
    status = engine_status("numba")
    assert not status.available
    assert "no_such_library_xyz is not installed" in status.reason
    with pytest.raises(EngineUnavailableError, match="no_such_library_xyz"):
        get_engine("numba")


def test_engine_whose_own_module_is_missing_says_so(monkeypatch):
    monkeypatch.setitem(registry.ENGINE_CLASSES, "numba", "handprop.engines.no_such_engine:Engine")
    monkeypatch.setattr(registry, "_instances", {})
    status = engine_status("numba")
    assert not status.available
    assert "handprop.engines.no_such_engine is missing from this install" in status.reason
    assert resolve_name("auto") != "numba"  # auto silently skips it


LAZY_SCRIPT = r"""
import json, sys
import numpy as np
import handprop
after_import = sorted(m for m in ("numba", "cupy") if m in sys.modules)
from handprop.engines import get_engine
from handprop.nn import mlp
from handprop.optim import Adam
from handprop.gradcheck import gradcheck
engine = get_engine("cpu")
model = mlp(3, [4], 2, engine=engine, dtype="float64")
x = engine.asarray(np.ones((2, 3)), "float64")
loss, grad = engine.softmax_xent(model.forward(x, training=True), engine.asarray(np.array([0, 1])))
model.backward(grad)
Adam(0.01).step(model)
after_cpu = sorted(m for m in ("numba", "cupy") if m in sys.modules)
print(json.dumps({"after_import": after_import, "after_cpu": after_cpu}))
"""


def test_import_and_cpu_engine_do_not_import_numba_or_cupy(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    proc = subprocess.run([sys.executable, "-c", LAZY_SCRIPT], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"after_import": [], "after_cpu": []}


def test_cli_help_does_not_import_numba_or_cupy():
    script = ("import sys, contextlib, io\n"
              "from handprop.cli import build_parser\n"
              "with contextlib.redirect_stdout(io.StringIO()):\n"
              "    try: build_parser().parse_args(['--help'])\n"
              "    except SystemExit: pass\n"
              "print(sorted(m for m in ('numba', 'cupy', 'torch') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
