"""A CPU stand-in for the part of CuPy that ``CupyEngine`` uses.

This is not a GPU check and nothing run on it is reported as one. Arrays are
NumPy arrays; ``RawModule(code=...)`` compiles the very string the engine
hands it for the host, through ``cuda_emulation``, and its kernels are called
the way CuPy calls a ``RawKernel``: ``kernel((blocks,), (threads,), args)``.

What it lets the CPU suite check is ``CupyEngine``'s own code, which only a
GPU would otherwise run: the probe's success path, building the engine, the
compile-once cache of modules and kernels, the launch calling convention and
its exactly typed scalars, loss values that stay on the device, and the
trainer's and the doctor's GPU paths. ``Recorder`` counts what happened.
"""

from __future__ import annotations

import hashlib
import types
from dataclasses import dataclass, field

import numpy as np

from cuda_emulation import EmulatedModule, build_library, cache_dir

DEVICE_NAME = "CPU stand-in for CuPy"
#: CUDA's limit on threads per block, which a real launch would fail past.
MAX_THREADS_PER_BLOCK = 1024


@dataclass
class Recorder:
    compiled: list[tuple[str, tuple]] = field(default_factory=list)  # (source, options)
    functions: list[str] = field(default_factory=list)  # get_function names
    launches: list[tuple[str, tuple, tuple]] = field(default_factory=list)
    synchronizes: int = 0
    host_copies: int = 0  # asnumpy calls


class CUDARuntimeError(RuntimeError):
    def __init__(self, status: int, text: str = ""):
        super().__init__(text)
        self.status = status


class _RawKernel:
    def __init__(self, kernel, recorder: Recorder):
        self._kernel = kernel
        self._recorder = recorder

    def __call__(self, grid, block, args, **_launch_options):
        name = self._kernel.name
        # CuPy takes grid and block as tuples; a bare int is a different call.
        for what, dims in (("grid", grid), ("block", block)):
            if not (isinstance(dims, tuple) and 1 <= len(dims) <= 3
                    and all(isinstance(d, (int, np.integer)) and d >= 1 for d in dims)):
                raise TypeError(f"{name}: {what} must be a tuple of 1-3 positive ints, got {dims!r}")
        if int(np.prod(block)) > MAX_THREADS_PER_BLOCK:
            raise ValueError(f"{name}: {np.prod(block)} threads per block is over CUDA's "
                             f"{MAX_THREADS_PER_BLOCK}")
        if not isinstance(args, tuple):
            raise TypeError(f"{name}: args must be a tuple, got {type(args).__name__}")
        self._recorder.launches.append((name, grid, block))
        # Kernels use only x dimensions, as the engine's launches do.
        self._kernel(int(grid[0]), int(block[0]), args)


class _RawModule:
    recorder: Recorder  # set per stand-in

    def __init__(self, code: str, options: tuple = (), **_kwargs):
        self.recorder.compiled.append((code, tuple(options)))
        digest = hashlib.sha256(code.encode()).hexdigest()[:16]
        path = cache_dir() / f"standin-{digest}.cu"
        if not path.exists():
            path.write_text(code, encoding="utf-8")
        self._module = EmulatedModule(build_library(path))

    def get_function(self, name: str):
        self.recorder.functions.append(name)
        return _RawKernel(self._module.get_function(name), self.recorder)


def make_standin(sm_count: int = 2) -> types.ModuleType:
    """A fresh module object to put in ``sys.modules["cupy"]``; see ``.recorder``."""
    recorder = Recorder()
    cupy = types.ModuleType("cupy")
    cupy.__version__ = "0+cpu-standin"
    cupy.recorder = recorder
    cupy.ndarray = np.ndarray
    for name in ("float32", "float64", "int32", "int64", "empty", "zeros", "empty_like",
                 "ascontiguousarray"):
        setattr(cupy, name, getattr(np, name))

    def asnumpy(array):
        recorder.host_copies += 1
        return np.array(array, copy=True)

    cupy.asnumpy = asnumpy
    cupy.RawModule = type("RawModule", (_RawModule,), {"recorder": recorder})

    def synchronize():
        recorder.synchronizes += 1

    stream = types.SimpleNamespace(synchronize=synchronize)
    runtime = types.SimpleNamespace(
        CUDARuntimeError=CUDARuntimeError,
        getDeviceCount=lambda: 1,
        runtimeGetVersion=lambda: 12080,
        driverGetVersion=lambda: 12080,
        getDeviceProperties=lambda _id: {"name": DEVICE_NAME.encode(), "major": 9, "minor": 0},
    )
    device = types.SimpleNamespace(id=0, attributes={"MultiProcessorCount": sm_count})
    cupy.cuda = types.SimpleNamespace(runtime=runtime, Device=lambda *_a: device,
                                      get_current_stream=lambda: stream)
    return cupy
