"""Facts about the machine handprop runs on, gathered in one place.

``handprop info``, the benchmark and the sweep executors all read them here.
Importing this module loads nothing heavy: NumPy is imported only by
``thread_pools`` (so that threadpoolctl sees NumPy's BLAS), Numba only by
``numba_threads`` and torch only by ``torch_threads``; versions come from
the installed distributions' metadata, without importing the libraries.
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

#: Environment variables that change what handprop, BLAS, Numba, CuPy or JAX do.
ENV_VARS = ("HANDPROP_BACKEND", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
            "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "NUMBA_CPU_NAME",
            "NUMBA_CPU_FEATURES", "NUMBA_CACHE_DIR", "CUPY_CACHE_DIR", "XLA_FLAGS",
            "ATEN_CPU_CAPABILITY")
#: The subset that changes speed: recorded with every benchmark run.
SPEED_ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS",
                  "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "NUMBA_CPU_NAME",
                  "NUMBA_CPU_FEATURES", "XLA_FLAGS", "ATEN_CPU_CAPABILITY")

#: shown name -> distribution names to try (CuPy ships as cupy-cudaNNx wheels).
LIBRARIES = {
    "numpy": ("numpy",),
    "numba": ("numba",),
    "cupy": ("cupy-cuda12x", "cupy-cuda11x", "cupy-cuda13x", "cupy"),
    "matplotlib": ("matplotlib",),
    "array_api_compat": ("array-api-compat",),
    "threadpoolctl": ("threadpoolctl",),
    "torch": ("torch",),
    "jax": ("jax",),
    "jaxlib": ("jaxlib",),
}


def timestamp() -> str:
    """Now, local time with its offset, to the second."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_count() -> int | None:
    """The machine's logical CPUs."""
    return os.cpu_count()


def usable_cpus() -> int | None:
    """CPUs this process may run on (its affinity mask); None where the OS does not say."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def available_cores() -> int:
    """Cores this process may use: the affinity mask, else the machine's total."""
    return usable_cpus() or cpu_count() or 1


def thread_pools() -> list[dict]:
    """The BLAS/OpenMP thread pools loaded in this process (NumPy's BLAS, and
    torch's or Numba's once imported), as threadpoolctl reports them."""
    try:
        import numpy  # noqa: F401  (loads its BLAS, so that threadpoolctl sees it)
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keep = ("user_api", "internal_api", "num_threads", "version", "threading_layer",
            "architecture", "prefix")
    return [{k: p.get(k) for k in keep if p.get(k) is not None} for p in threadpool_info()]


def _blas_pool(pools=None) -> dict | None:
    return next((p for p in (thread_pools() if pools is None else pools)
                 if p.get("user_api") == "blas"), None)


def blas_kernel(pools=None) -> str:
    """One line: which BLAS kernel NumPy's matmul runs, with its thread count."""
    pool = _blas_pool(pools)
    if pool is None:
        return "unknown (threadpoolctl found no BLAS)"
    return (f"{pool.get('internal_api')} {pool.get('version', '?')} "
            f"{pool.get('architecture', '?')} kernel, {pool.get('num_threads')} threads")


def blas_threads(pools=None) -> int:
    pool = _blas_pool(pools)
    return int(pool["num_threads"]) if pool else (os.cpu_count() or 1)


def numba_threads() -> int | str | None:
    """Numba's thread-pool size; None without Numba, a message if it does not import.

    ``numba.config``, not ``numba.get_num_threads()``: the latter launches Numba's
    threading layer (an OpenMP runtime), whose threads then fight PyTorch's
    libgomp in the same process (it slowed ``torch.optim.Adam`` several times over)."""
    import importlib.util

    if importlib.util.find_spec("numba") is None:
        return None
    try:
        import numba
    except Exception as exc:  # a broken install should be reported, not crash the caller
        return f"numba does not import: {type(exc).__name__}: {exc}"
    return int(numba.config.NUMBA_NUM_THREADS)


def torch_threads() -> int | None:
    """PyTorch's intra-op threads (imports torch); None without it."""
    try:
        import torch
    except ImportError:
        return None
    return int(torch.get_num_threads())


def library_version(distributions) -> str | None:
    """The installed version of the first of ``distributions`` found, else None."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in distributions:
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return None


def library_versions(libraries=LIBRARIES) -> dict[str, str | None]:
    """Python's version, then each library's (None where not installed)."""
    return {"python": platform.python_version(),
            **{name: library_version(dists) for name, dists in libraries.items()}}


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages; None where the OS has none."""
    try:
        return list(os.getloadavg())
    except (OSError, AttributeError):
        return None


def environment_variables(names=ENV_VARS) -> dict[str, str]:
    """Those of ``names`` that are set, with their values."""
    return {k: os.environ[k] for k in names if k in os.environ}


def platform_facts() -> dict:
    return {"system": platform.system(), "release": platform.release(),
            "machine": platform.machine(), "platform": platform.platform(),
            "python_implementation": platform.python_implementation()}
