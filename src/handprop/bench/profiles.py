"""CPU profiles: which vector kernels every contender may run, defined once.

The benchmark, the tests and CI share these. A profile is a change to the
environment of the child processes it starts (BLAS, Numba, XLA and ATen read
their settings once, at start-up), never to the running process:

* ``as-is``: the environment unchanged;
* ``avx512``: ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` unset (and the AVX2 caps
  below, where set), so every library picks its kernels for this CPU;
* ``avx2``: what an AVX2-only CPU runs, for every contender alike: OpenBLAS's Haswell
  kernel, Numba compiling for Haswell, XLA and ATen capped at AVX2.

``python -m handprop.bench.profiles avx2 -- COMMAND ...`` runs a command under one.
"""

from __future__ import annotations

import os
import subprocess
import sys

#: The AVX2 caps, one per library: OpenBLAS, Numba (LLVM), JAX (XLA), PyTorch (ATen).
AVX2_CAPS = {"OPENBLAS_CORETYPE": "Haswell", "NUMBA_CPU_NAME": "haswell",
             "XLA_FLAGS": "--xla_cpu_max_isa=AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
#: What each profile sets (a value) or unsets (None).
PROFILES: dict[str, dict[str, str | None]] = {
    "as-is": {},
    "avx512": {"OPENBLAS_CORETYPE": None, "OPENBLAS_L2_SIZE": None, "NUMBA_CPU_NAME": None,
               "XLA_FLAGS": None, "ATEN_CPU_CAPABILITY": None},
    "avx2": dict(AVX2_CAPS),
}
PROFILE_NAMES = tuple(PROFILES)


def check_profile(name: str) -> str:
    from ..errors import ConfigError

    if name not in PROFILES:
        raise ConfigError(f"unknown CPU profile {name!r}; choose one of: "
                          f"{', '.join(PROFILE_NAMES)} (or all, where a command takes it)")
    return name


def profile_environment(name: str, base=None) -> dict[str, str]:
    """The environment a child process runs under ``name``: ``base`` (default: this
    process's) with the profile's variables set or removed."""
    env = dict(os.environ if base is None else base)
    for key, value in PROFILES[check_profile(name)].items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def profile_changes(name: str, base=None) -> str:
    """The profile's change to ``base``, in words (for a table's heading)."""
    env = os.environ if base is None else base
    changes = []
    for key, value in PROFILES[check_profile(name)].items():
        if value is None and key in env:
            changes.append(f"{key} unset")
        elif value is not None and env.get(key) != value:
            changes.append(f"{key}={value}")
    return ", ".join(changes) or "the environment unchanged"


def numba_target() -> str | None:
    """The CPU Numba compiles for (``NUMBA_CPU_NAME``, else the host's, by LLVM's name)."""
    try:
        import numba
        from llvmlite import binding
    except ImportError:
        return None
    name = numba.config.CPU_NAME
    return f"host ({binding.get_host_cpu_name()})" if name in (None, "host") else name


def vector_isa() -> str | None:
    """The vector extension the numba kernels are compiled for (avx512, avx2), or None."""
    from ..engines import engine_status

    if not engine_status("numba").available:
        return None
    from ..engines.numba.simd import target_isa

    return target_isa() or None


def direct_convolutions() -> bool | None:
    """Whether the numba engine runs its direct convolutions here (None: no numba)."""
    from ..engines import engine_status, get_engine

    if not engine_status("numba").available:
        return None
    return bool(get_engine("numba").direct_convolution)


def kernels_in_use() -> dict:
    """What runs in this process: the OpenBLAS kernel (threadpoolctl), Numba's target CPU,
    whether the numba engine's direct convolutions are on, and the profile variables set."""
    from .. import host

    return {"blas": host.blas_kernel(), "numba_cpu": numba_target(),
            "vectors": vector_isa(), "direct_convolutions": direct_convolutions(),
            "variables": {k: os.environ[k] for k in sorted({*AVX2_CAPS, "OPENBLAS_L2_SIZE"})
                          if k in os.environ}}


def describe_kernels(kernels: dict) -> str:
    """One line of ``kernels_in_use()``."""
    direct = "on" if kernels.get("direct_convolutions") else "off (tiled GEMMs)"
    isa = f" ({kernels['vectors']} vectors)" if kernels.get("vectors") else ""
    return (f"BLAS {kernels.get('blas')}; numba target {kernels.get('numba_cpu')}{isa}; "
            f"direct convolutions {direct}")


def run_under(name: str, command: list[str]) -> int:
    """Run ``command`` under profile ``name``; its exit status."""
    return subprocess.call(command, env=profile_environment(name))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) < 3 or argv[1] != "--" or argv[0] not in PROFILES:
        print(f"usage: python -m handprop.bench.profiles {{{','.join(PROFILE_NAMES)}}} -- "
              "COMMAND [ARGS...]", file=sys.stderr)
        return 2
    return run_under(argv[0], argv[2:])


if __name__ == "__main__":
    sys.exit(main())
