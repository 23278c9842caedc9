"""What the benchmark records about the machine it ran on (from ``handprop.host``)."""

from __future__ import annotations

import platform

from .. import host

#: versions recorded with every benchmark run
LIBRARIES = {name: host.LIBRARIES[name]
             for name in ("numpy", "numba", "torch", "threadpoolctl", "jax", "jaxlib")}


def environment(engines=()) -> dict:
    """Machine, date, versions, BLAS kernel and every thread count used.

    ``engines`` names what runs ("numba", "torch", ...): their thread counts are
    read only then (reading torch's imports torch)."""
    from .. import __version__

    pools = host.thread_pools()
    versions = host.library_versions(LIBRARIES)
    env = {
        "date": host.timestamp(),
        "machine": host.cpu_model(),
        "cpu_count": host.cpu_count(),
        "usable_cpus": host.usable_cpus(),
        "platform": platform.platform(),
        "versions": {"python": versions.pop("python"), "handprop": __version__, **versions},
        "blas_kernel": host.blas_kernel(pools),
        "thread_pools": pools,
        "blas_threads": host.blas_threads(pools),
        "env": host.environment_variables(host.SPEED_ENV_VARS),
    }
    if "numba" in engines:
        env["numba_threads"] = host.numba_threads()
        env["numba_kernels"] = "serial (no parallel=True)"
    if "torch" in engines:
        env["torch_threads"] = host.torch_threads()
    load = host.load_average()
    if load is not None:
        env["load_average"] = load
    return env
