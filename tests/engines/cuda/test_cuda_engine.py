"""The cuda engine's availability reasons and kernel loader, checked without a GPU."""

from __future__ import annotations

import sys
from pathlib import Path
import types

import pytest

from handprop.engines import engine_status, get_engine, registry
from handprop.engines.cuda import source as cuda_source
from handprop.engines.cuda.engine import CUPY_MISSING, CupyEngine, probe_gpu
from handprop.errors import EngineUnavailableError


class FakeCUDARuntimeError(RuntimeError):
    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status = status


def fake_cupy(*, count=1, count_error=None, alloc_error=None, driver=12020):
    """Just enough of CuPy's surface for probe_gpu: import succeeds, the GPU may not."""

    def get_device_count():
        if count_error:
            raise count_error
        return count

    def zeros(*_a, **_k):
        if alloc_error:
            raise alloc_error
        return 0

    runtime = types.SimpleNamespace(
        CUDARuntimeError=FakeCUDARuntimeError,
        getDeviceCount=get_device_count,
        runtimeGetVersion=lambda: 12080,
        driverGetVersion=lambda: driver,
    )
    stream = types.SimpleNamespace(synchronize=lambda: None)
    cuda = types.SimpleNamespace(runtime=runtime, get_current_stream=lambda: stream)
    return types.SimpleNamespace(cuda=cuda, zeros=zeros, float32="float32")


def test_probe_names_a_missing_device():
    err = FakeCUDARuntimeError(100, "cudaErrorNoDevice: no CUDA-capable device is detected")
    assert probe_gpu(fake_cupy(count_error=err)) == "no CUDA device"
    assert probe_gpu(fake_cupy(count=0)) == "no CUDA device"


def test_probe_names_an_old_driver_with_versions():
    err = FakeCUDARuntimeError(35, "cudaErrorInsufficientDriver")
    reason = probe_gpu(fake_cupy(count_error=err))
    assert reason.startswith("driver too old for the runtime")
    assert "CUDA runtime 12.8" in reason and "up to CUDA 12.2" in reason
    assert "cupy-cuda13x" in reason


def test_probe_tells_no_driver_from_an_old_driver():
    # Without any NVIDIA driver the runtime also says "insufficient driver";
    # a driver version of 0 tells the two apart.
    err = FakeCUDARuntimeError(35, "cudaErrorInsufficientDriver")
    reason = probe_gpu(fake_cupy(count_error=err, driver=0))
    assert reason.startswith("no CUDA device") and "no NVIDIA driver" in reason


def test_probe_catches_failures_at_first_allocation():
    # import cupy and getDeviceCount can both succeed and the first use still fail.
    err = FakeCUDARuntimeError(46, "cudaErrorDevicesUnavailable")
    assert "busy or unavailable" in probe_gpu(fake_cupy(alloc_error=err))
    nvrtc = RuntimeError("CuPy failed to load libnvrtc.so.12")
    assert "NVRTC" in probe_gpu(fake_cupy(alloc_error=nvrtc))
    assert probe_gpu(fake_cupy()) == ""


def test_without_cupy_the_reason_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    monkeypatch.setattr(CupyEngine, "_reason", None)
    assert CupyEngine.unavailable_reason() == CUPY_MISSING
    assert "pip install 'handprop[cuda]'" in CUPY_MISSING and "cupy-cuda13x" in CUPY_MISSING


def test_explicit_cuda_without_a_gpu_is_an_error_naming_the_reason(monkeypatch):
    monkeypatch.setattr(CupyEngine, "_reason", "no CUDA device")
    monkeypatch.setattr(registry, "_instances", {})
    assert engine_status("cuda").reason == "no CUDA device"
    with pytest.raises(EngineUnavailableError, match="no CUDA device"):
        get_engine("cuda")
    assert registry.resolve_name("auto") != "cuda"


def test_loader_finds_every_kernel_file_beside_its_launcher():
    directory = cuda_source.kernel_dir()
    assert directory == Path(cuda_source.__file__).parent / "kernels"
    for name in cuda_source.KERNEL_FILES:
        assert (directory / name).is_file()


def test_loader_inlines_the_common_header():
    text = cuda_source.kernel_source("activations.cu")
    assert '#include "common.cuh"' not in text
    assert "inlined common.cuh" in text and "HP_GRID_STRIDE_LOOP" in text
    assert cuda_source.kernel_file_of("adam_update_f64") == "optimizers.cu"
    with pytest.raises(KeyError):
        cuda_source.kernel_file_of("no_such_kernel_f32")


def test_loader_reports_missing_sources(monkeypatch, tmp_path):
    monkeypatch.setattr(cuda_source, "KERNEL_DIR", tmp_path / "kernels")
    with pytest.raises(EngineUnavailableError, match="activations.cu, .* are missing from .*"
                                                     "reinstall it"):
        cuda_source.kernel_dir()


def test_cuda_engine_module_does_not_import_cupy():
    import subprocess

    code = "import sys, handprop.engines.cuda.engine; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
