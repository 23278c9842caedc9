"""Every CUDA kernel compiles, on every machine, with warnings treated as errors.

NVRTC comes from the pip package ``nvidia-cuda-nvrtc-cu12`` (test extra) and
is driven through ctypes, so no GPU and no CUDA toolkit are needed. The source
compiled is exactly what ``CupyEngine`` hands to ``cupy.RawModule``. nvcc is
used too where it is installed.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from handprop.engines.base import ACTIVATION_CODES
from handprop.engines.cuda.source import KERNEL_FILES, entry_points, kernel_dir, kernel_source

# (option, what to fetch): PTX for the virtual arch, cubins for the real ones.
TARGETS = [
    ("--gpu-architecture=compute_80", "PTX"),
    ("--gpu-architecture=sm_80", "CUBIN"),
    ("--gpu-architecture=sm_90", "CUBIN"),
]
# Every kernel family, both precisions.
EXPECTED_KERNELS = {
    f"{base}_{suffix}"
    for base in ("bias_act", "act_backward", "softmax_xent", "sgd_update", "momentum_update",
                 "adam_update", "bias_grad", "sum_squares", "batch_norm_forward",
                 "batch_norm_backward", "im2col", "col2im", "max_pool_forward",
                 "max_pool_backward", "avg_pool_forward", "avg_pool_backward")
    for suffix in ("f32", "f64")
}


def _load_nvrtc():
    try:
        import nvidia.cuda_nvrtc as pkg
    except ImportError:
        return None
    for root in pkg.__path__:
        lib = Path(root) / "lib" / "libnvrtc.so.12"
        if lib.exists():
            return ctypes.CDLL(str(lib))
    return None


NVRTC = _load_nvrtc()
needs_nvrtc = pytest.mark.skipif(
    NVRTC is None, reason="nvidia-cuda-nvrtc-cu12 is not installed (pip install -e '.[test]')"
)


def nvrtc_compile(source: str, options: list[str], fetch: str = "PTX") -> tuple[int, str, bytes]:
    """(status, log, output) of one NVRTC compile."""
    lib = NVRTC
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"kernel.cu", 0, None, None) == 0
    try:
        opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
        status = lib.nvrtcCompileProgram(prog, len(options), opts)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        output = b""
        if status == 0:
            lib[f"nvrtcGet{fetch}Size"](prog, ctypes.byref(size))
            buf = ctypes.create_string_buffer(size.value)
            lib[f"nvrtcGet{fetch}"](prog, buf)
            output = buf.raw
        return status, log.value.decode(errors="replace"), output
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def strict_compile(source: str, arch_option: str, fetch: str) -> bytes:
    """Compile and fail on any error *or warning*.

    NVRTC has no -Werror=all-warnings (it rejects the option), so a non-empty
    warning in the log is turned into a failure here.
    """
    status, log, output = nvrtc_compile(source, [arch_option, "--std=c++17", "--display-error-number"], fetch)
    if status != 0 or re.search(r"\bwarning\b", log):
        raise AssertionError(f"NVRTC ({arch_option}) status {status}:\n{log}")
    return output


@needs_nvrtc
@pytest.mark.parametrize("arch_option,fetch", TARGETS, ids=[t[0].split("=")[1] for t in TARGETS])
@pytest.mark.parametrize("file_name", KERNEL_FILES)
def test_kernel_file_compiles_with_nvrtc(file_name, arch_option, fetch):
    source = kernel_source(file_name)
    output = strict_compile(source, arch_option, fetch)
    assert output, "NVRTC produced no code"
    if fetch == "PTX":
        # extern "C" keeps plain names, which CuPy's get_function and ctypes both use.
        for name in entry_points(source):
            assert f".entry {name}(" in output.decode(), f"{name} missing from the PTX"


@needs_nvrtc
def test_strict_compile_rejects_warnings():
    # The checker must fail on a warning, or the test above proves nothing.
    noisy = 'extern "C" __global__ void k(float* x) { int unused; x[0] = 1.0f; }'
    with pytest.raises(AssertionError, match="never referenced"):
        strict_compile(noisy, "--gpu-architecture=sm_80", "CUBIN")
    with pytest.raises(AssertionError, match="error"):
        strict_compile('extern "C" __global__ void k(float* x) { x[0] = y; }',
                       "--gpu-architecture=sm_80", "CUBIN")


def test_every_kernel_has_float32_and_float64_entry_points():
    found = set()
    for file_name in KERNEL_FILES:
        found.update(entry_points(kernel_source(file_name)))
    assert found == EXPECTED_KERNELS


@pytest.mark.parametrize("file_name", KERNEL_FILES)
def test_kernels_avoid_what_the_host_emulator_cannot_run(file_name):
    text = (kernel_dir() / file_name).read_text()
    code = re.sub(r"//[^\n]*", "", text)  # comments may mention them
    for banned in ("__shared__", "__syncthreads", "__shfl", "atomic", "__syncwarp"):
        assert banned not in code, f"{file_name} uses {banned}"
    assert "HP_GRID_STRIDE_LOOP" in code, f"{file_name} has no grid-stride loop"


def test_activation_codes_match_the_engine():
    header = (kernel_dir() / "common.cuh").read_text()
    defined = {m.group(1).lower(): int(m.group(2))
               for m in re.finditer(r"#define HP_ACT_(\w+) (\d+)", header)}
    assert defined == ACTIVATION_CODES


NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed (NVRTC checks above still run)")
def test_kernels_compile_with_nvcc(tmp_path):
    # One translation unit with every family, so nvcc starts once.
    unit = tmp_path / "all_kernels.cu"
    unit.write_text("".join(f'#include "{name}"\n' for name in KERNEL_FILES))
    cmd = [NVCC, "--fatbin", "--std=c++17", "-Werror", "all-warnings",
           "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90",
           "-I", str(kernel_dir()), "-o", str(tmp_path / "all.fatbin"), str(unit)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    assert (tmp_path / "all.fatbin").stat().st_size > 0
