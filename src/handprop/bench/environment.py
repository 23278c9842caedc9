"""What the benchmark records about the machine it ran on."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import numpy as np


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_info() -> list[dict]:
    """The BLAS/OpenMP thread pools NumPy (and torch, once imported) loaded."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("user_api", "internal_api", "num_threads", "version", "threading_layer",
            "architecture", "prefix")
    return [{k: p.get(k) for k in keep if p.get(k) is not None} for p in threadpool_info()]


def blas_kernel() -> str:
    """One line: which BLAS kernel NumPy's matmul runs, with its thread count."""
    for pool in blas_info():
        if pool.get("user_api") == "blas":
            return (f"{pool.get('internal_api')} {pool.get('version', '?')} "
                    f"{pool.get('architecture', '?')} kernel, {pool.get('num_threads')} threads")
    return "unknown (threadpoolctl found no BLAS)"


def blas_threads() -> int:
    for pool in blas_info():
        if pool.get("user_api") == "blas":
            return int(pool["num_threads"])
    return os.cpu_count() or 1


def environment(engines=()) -> dict:
    """Machine, date, versions, BLAS kernel and every thread count used."""
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    def ver(dist):
        try:
            return version(dist)
        except PackageNotFoundError:
            return None

    env = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "versions": {"python": platform.python_version(), "handprop": __version__,
                     "numpy": np.__version__, "numba": ver("numba"), "torch": ver("torch"),
                     "threadpoolctl": ver("threadpoolctl")},
        "blas_kernel": blas_kernel(),
        "thread_pools": blas_info(),
        "blas_threads": blas_threads(),
        "env": {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                           "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                           "NUMBA_NUM_THREADS") if k in os.environ},
    }
    if "numba" in engines:
        import numba

        # numba.config, not numba.get_num_threads(): the latter launches Numba's
        # threading layer (an OpenMP runtime here), whose threads then fight
        # PyTorch's libgomp and made torch.optim.Adam 3-4x slower in the same
        # process. The engine's kernels are serial; this is the pool size only.
        env["numba_threads"] = int(numba.config.NUMBA_NUM_THREADS)
        env["numba_kernels"] = "serial (no parallel=True)"
    if "torch" in engines:
        import torch

        env["torch_threads"] = int(torch.get_num_threads())
    try:
        env["load_average"] = list(os.getloadavg())
    except OSError:
        pass
    return env
