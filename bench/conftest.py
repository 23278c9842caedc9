"""Shared set-up of the benchmark suites (``pytest bench/ --benchmark-only``).

* The suites parametrise over ``benchlib.ENGINES``: every engine, ``cuda``
  skipped without a usable GPU; ``HANDPROP_BENCH_ENGINES=cpu,numba`` narrows it.
* Thread counts and the BLAS kernel that ran are written into every
  benchmark's ``extra_info`` (and so into ``--benchmark-save`` files).
  Nothing here changes OPENBLAS_* or thread variables: they are reported as
  found.
"""

from __future__ import annotations

import pytest
from benchlib import OUT, USABLE_ENGINES

from handprop import bench as hb


@pytest.fixture(scope="session")
def bench_env():
    kinds = list(USABLE_ENGINES)
    if hb.torch_available():
        kinds.append("torch")
    return hb.environment(kinds)


@pytest.fixture
def record(benchmark, bench_env):
    """Call ``record(**info)`` to add to this benchmark's extra_info (threads included)."""
    benchmark.extra_info.update(
        blas_kernel=bench_env["blas_kernel"], blas_threads=bench_env["blas_threads"],
        numba_threads=bench_env.get("numba_threads"), torch_threads=bench_env.get("torch_threads"),
        openblas_env={k: v for k, v in bench_env["env"].items() if k.startswith("OPENBLAS")})

    def add(**info):
        benchmark.extra_info.update(info)
    return add


@pytest.fixture(scope="session")
def out_dir():
    OUT.mkdir(parents=True, exist_ok=True)
    return OUT


def pytest_report_header(config):
    env = hb.environment()
    return [f"handprop bench: {env['machine']}, BLAS {env['blas_kernel']}, "
            f"OPENBLAS env {env['env'] or 'unset'}"]
