"""CPU profiles: each one's environment, applied to child processes only, and the report of
which kernels ran. No speed is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from handprop.bench import profiles
from handprop.errors import ConfigError

BASE = {"PATH": "/bin", "OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576",
        "HOME": "/root"}


def test_each_profile_sets_or_unsets_its_variables():
    assert profiles.PROFILE_NAMES == ("as-is", "avx512", "avx2")
    assert profiles.profile_environment("as-is", BASE) == BASE
    avx512 = profiles.profile_environment("avx512", dict(BASE, NUMBA_CPU_NAME="haswell"))
    assert avx512 == {"PATH": "/bin", "HOME": "/root"}
    avx2 = profiles.profile_environment("avx2", {"PATH": "/bin"})
    assert avx2 == {"PATH": "/bin", "OPENBLAS_CORETYPE": "Haswell",
                    "NUMBA_CPU_NAME": "haswell", "XLA_FLAGS": "--xla_cpu_max_isa=AVX2",
                    "ATEN_CPU_CAPABILITY": "avx2"}
    assert profiles.profile_changes("avx512", BASE) == ("OPENBLAS_CORETYPE unset, "
                                                        "OPENBLAS_L2_SIZE unset")
    assert profiles.profile_changes("as-is", BASE) == "the environment unchanged"
    with pytest.raises(ConfigError, match="unknown CPU profile 'sse2'; choose one of: as-is"):
        profiles.profile_environment("sse2")


def child_kernels(profile: str) -> dict:
    code = ("import json; from handprop.bench.profiles import kernels_in_use; "
            "print(json.dumps(kernels_in_use()))")
    out = subprocess.run([sys.executable, "-m", "handprop.bench.profiles", profile, "--",
                          sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_profile_reaches_the_child_and_never_this_process():
    before = dict(os.environ)
    kernels = child_kernels("avx2")
    assert dict(os.environ) == before
    assert kernels["numba_cpu"] == "haswell"
    assert kernels["vectors"] == "avx2"  # the kernels' AVX2 forms
    assert kernels["direct_convolutions"] is True
    assert "Haswell kernel" in kernels["blas"]
    assert kernels["variables"]["ATEN_CPU_CAPABILITY"] == "avx2"
    unset = child_kernels("avx512")
    assert not {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "NUMBA_CPU_NAME"} & set(unset["variables"])
    assert unset["numba_cpu"].startswith("host (")


def test_the_runner_refuses_a_bad_command_line(capsys):
    assert profiles.main(["avx2"]) == 2
    assert profiles.main(["sse2", "--", "true"]) == 2
    assert "usage: python -m handprop.bench.profiles {as-is,avx512,avx2}" in capsys.readouterr().err
    assert profiles.main(["as-is", "--", sys.executable, "-c", "raise SystemExit(3)"]) == 3


def test_describe_kernels_says_what_ran():
    line = profiles.describe_kernels({"blas": "openblas 0.3 Haswell kernel, 2 threads",
                                      "numba_cpu": "haswell", "direct_convolutions": False})
    assert line == ("BLAS openblas 0.3 Haswell kernel, 2 threads; numba target haswell; "
                    "direct convolutions off (tiled GEMMs)")
