"""``handprop.host``: the machine's facts, gathered once and read by the benchmark
and the sweep executors (``handprop info`` is checked in tests/cli/test_info_cli.py)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from handprop import host

POOLS = [{"user_api": "openmp", "internal_api": "openmp", "num_threads": 4},
         {"user_api": "blas", "internal_api": "openblas", "num_threads": 2,
          "version": "0.3.31", "architecture": "Haswell"}]


def test_import_is_light():
    """The executors set thread variables before NumPy loads: neither they nor
    host may import it at module level."""
    code = ("import sys, handprop.host, handprop.experiments.executors; "
            "heavy = {'numpy', 'numba', 'torch', 'jax'} & set(sys.modules); "
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_cores():
    assert host.cpu_count() == os.cpu_count()
    if hasattr(os, "sched_getaffinity"):
        assert host.usable_cpus() == len(os.sched_getaffinity(0))
    assert 1 <= host.available_cores() <= (os.cpu_count() or 1)


def test_available_cores_falls_back_to_the_machine_total(monkeypatch):
    monkeypatch.setattr(host, "usable_cpus", lambda: None)
    monkeypatch.setattr(host, "cpu_count", lambda: 6)
    assert host.available_cores() == 6
    monkeypatch.setattr(host, "cpu_count", lambda: None)
    assert host.available_cores() == 1


def test_blas_kernel_and_threads_read_the_blas_pool():
    assert host.blas_kernel(POOLS) == "openblas 0.3.31 Haswell kernel, 2 threads"
    assert host.blas_threads(POOLS) == 2
    assert host.blas_kernel(POOLS[:1]).startswith("unknown")
    assert host.blas_threads([]) == (os.cpu_count() or 1)


def test_thread_pools_match_threadpoolctl():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import numpy  # noqa: F401

    expected = [(p["user_api"], p["internal_api"], p["num_threads"])
                for p in threadpoolctl.threadpool_info()]
    assert [(p["user_api"], p["internal_api"], p["num_threads"])
            for p in host.thread_pools()] == expected


def test_versions_come_from_the_installed_distributions():
    import numpy as np

    versions = host.library_versions()
    assert versions["python"] == platform.python_version()
    assert versions["numpy"] == np.__version__
    assert set(host.LIBRARIES) <= set(versions)
    assert host.library_version(["no-such-distribution-xyz"]) is None


def test_only_set_variables_are_reported(monkeypatch):
    for name in host.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    assert host.environment_variables() == {}
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("HANDPROP_BACKEND", "cpu")
    assert host.environment_variables() == {"OPENBLAS_CORETYPE": "Haswell",
                                            "HANDPROP_BACKEND": "cpu"}
    # The benchmark records only what changes speed.
    assert host.environment_variables(host.SPEED_ENV_VARS) == {"OPENBLAS_CORETYPE": "Haswell"}


def test_numba_threads_reads_the_config_without_starting_threads():
    numba = pytest.importorskip("numba")
    assert host.numba_threads() == numba.config.NUMBA_NUM_THREADS


def test_load_average():
    load = host.load_average()
    if hasattr(os, "getloadavg"):
        assert len(load) == 3 and all(x >= 0 for x in load)


def test_the_benchmark_records_host_facts(monkeypatch):
    from handprop import bench

    monkeypatch.setattr(host, "cpu_model", lambda: "Test CPU 9000")
    monkeypatch.setattr(host, "thread_pools", lambda: POOLS)
    monkeypatch.setattr(host, "load_average", lambda: [0.5, 0.25, 0.125])
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "1048576")
    env = bench.environment()
    assert env["machine"] == "Test CPU 9000"
    assert env["blas_kernel"] == "openblas 0.3.31 Haswell kernel, 2 threads"
    assert env["blas_threads"] == 2 and env["thread_pools"] == POOLS
    assert env["load_average"] == [0.5, 0.25, 0.125]
    assert env["env"]["OPENBLAS_L2_SIZE"] == "1048576"
    assert env["versions"]["python"] == platform.python_version()


def test_the_executors_plan_with_host_cores(monkeypatch):
    from handprop.errors import ConfigError
    from handprop.experiments import executors

    monkeypatch.setattr(host, "usable_cpus", lambda: 3)
    assert executors.available_cores() == 3
    assert executors.plan_threads(1) == 3
    with pytest.raises(ConfigError, match="oversubscribe the 3 cores"):
        executors.plan_threads(2, 2)
