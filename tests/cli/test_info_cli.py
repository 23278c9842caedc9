"""`handprop info`: engines, threads, versions, settings."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

from handprop import host
from handprop.cli import main
from handprop.engines import ENGINE_NAMES, available_engines

SETTINGS = host.ENV_VARS


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)


def info(capsys, *args):
    rc = main(["info", *args])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    return captured.out


def info_json(capsys):
    return json.loads(info(capsys, "--json"))


def test_json_keys_and_basic_facts(capsys):
    r = info_json(capsys)
    for key in ("engines", "auto", "backend", "default_dtype", "threads", "versions",
                "platform", "environment"):
        assert key in r
    assert [e["name"] for e in r["engines"]] == list(ENGINE_NAMES)
    cpu = next(e for e in r["engines"] if e["name"] == "cpu")
    assert cpu["available"] is True and cpu["reason"] == ""
    assert r["auto"] in ENGINE_NAMES
    assert r["default_dtype"] == "float32"
    assert r["threads"]["cpu_count"] == os.cpu_count()
    assert r["versions"]["python"] == platform.python_version()
    assert r["versions"]["numpy"] == np.__version__
    assert r["platform"]["machine"] == platform.machine()
    assert r["environment"] == {}  # the fixture cleared every setting
    assert r["backend"]["value"] is None and r["backend"]["resolves_to"] == r["auto"]


def test_every_unavailable_engine_has_a_reason(capsys):
    r = info_json(capsys)
    text = info(capsys)
    for status in available_engines():
        shown = next(e for e in r["engines"] if e["name"] == status.name)
        assert shown["available"] == status.available
        if not status.available:
            assert shown["reason"] and shown["reason"] in text


def test_blas_and_numba_threads(capsys):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    r = info_json(capsys)
    blas = [p for p in threadpoolctl.threadpool_info() if p.get("user_api") == "blas"]
    shown = [p for p in r["threads"]["blas"] if p.get("user_api") == "blas"]
    assert len(shown) == len(blas)
    for pool, expected in zip(shown, blas):
        assert pool["internal_api"] == expected["internal_api"]
        assert pool["num_threads"] == expected["num_threads"]
        if "architecture" in expected:  # OpenBLAS's core type, e.g. Haswell
            assert pool["architecture"] == expected["architecture"]
    try:
        import numba
    except ImportError:
        assert r["threads"]["numba"] is None
    else:
        assert r["threads"]["numba"] == numba.config.NUMBA_NUM_THREADS


def test_settings_shown_only_when_set(capsys, monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("NUMBA_CACHE_DIR", "/tmp/handprop-numba-cache")
    r = info_json(capsys)
    assert r["environment"] == {"OPENBLAS_CORETYPE": "Haswell",
                                "NUMBA_CACHE_DIR": "/tmp/handprop-numba-cache"}
    assert "OPENBLAS_CORETYPE  Haswell" in info(capsys)


def test_env_backend_choice_is_shown(capsys, monkeypatch):
    monkeypatch.setenv("HANDPROP_BACKEND", "cpu")
    r = info_json(capsys)
    assert r["backend"] == {"variable": "HANDPROP_BACKEND", "value": "cpu", "resolves_to": "cpu",
                            "error": None}
    assert "'cpu' -> cpu" in info(capsys)


def test_unknown_env_backend_is_reported_not_fatal(capsys, monkeypatch):
    monkeypatch.setenv("HANDPROP_BACKEND", "gpu")
    r = info_json(capsys)
    assert r["backend"]["value"] == "gpu" and r["backend"]["resolves_to"] is None
    assert "cpu, numba, cuda, auto" in r["backend"]["error"]
    text = info(capsys)
    assert "'gpu' is not usable" in text and "valid names are: cpu, numba, cuda, auto" in text


def test_human_table_sections(capsys):
    text = info(capsys)
    for section in ("engines", "selection", "threads", "versions", "platform", "environment"):
        assert f"\n{section}\n" in f"\n{text}"
    assert "default dtype     float32" in text
    assert f"numpy             {np.__version__}" in text


def test_no_heavy_imports_for_versions():
    """Versions come from package metadata: torch and matplotlib are never imported
    (cupy may be: checking whether the cuda engine can run needs it)."""
    code = ("import sys; from handprop.cli import main; rc = main(['info', '--json']); "
            "assert rc == 0; bad = {'torch', 'matplotlib'} & set(sys.modules); "
            "assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["versions"]["python"] == platform.python_version()


def test_what_info_shows_comes_from_host(capsys, monkeypatch):
    """``info`` gathers nothing itself: each fact is ``handprop.host``'s."""
    pools = [{"user_api": "blas", "internal_api": "openblas", "num_threads": 3,
              "version": "9.9", "architecture": "TestCore"}]
    monkeypatch.setattr(host, "cpu_count", lambda: 96)
    monkeypatch.setattr(host, "usable_cpus", lambda: 5)
    monkeypatch.setattr(host, "thread_pools", lambda: pools)
    monkeypatch.setattr(host, "numba_threads", lambda: 7)
    monkeypatch.setattr(host, "library_versions", lambda: {"python": "3.99", "numpy": "0.0.1"})
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    r = info_json(capsys)
    assert r["threads"] == {"cpu_count": 96, "usable_cpus": 5, "blas": pools, "numba": 7}
    assert r["versions"] == {"python": "3.99", "numpy": "0.0.1"}
    assert r["environment"] == {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
    text = info(capsys)
    assert "blas (openblas)  3 threads, version 9.9, architecture TestCore" in text
    assert "usable cpus" in text and "96" in text


def test_info_names_the_kernels_that_run_under_a_profile():
    """What runs here: the BLAS kernel, Numba's target CPU, its vector kernels and whether the
    direct convolutions are on, under the avx2 profile in a child process."""
    import json as json_module
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "handprop.bench.profiles", "avx2", "--",
                          sys.executable, "-m", "handprop", "info", "--json"],
                         capture_output=True, text=True, check=True, timeout=120)
    kernels = json_module.loads(out.stdout)["kernels"]
    assert kernels["numba_cpu"] == "haswell" and kernels["vectors"] == "avx2"
    assert "Haswell kernel" in kernels["blas"] and kernels["direct_convolutions"] is True
