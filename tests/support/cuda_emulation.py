"""Run the exact ``kernels/*.cu`` source on the CPU.

Each kernel file is compiled as C++ (``g++ -x c++``) together with
``cuda_host/cuda_host_emulation.h``, which turns the CUDA qualifiers into
nothing and runs every thread of every block one after another. The shared
library is loaded with ctypes. ``emulated_engine()`` returns an engine named
``cuda-emulated`` that uses the *same* Python wrappers as the ``cuda`` engine
(``CudaKernelEngine``) on NumPy arrays, with a launch configuration you choose:
small grids make the grid-stride loops run many rounds, large ones leave
threads with nothing to do.

Compiled libraries are cached by a hash of everything that goes into them, in
``$HANDPROP_EMU_CACHE`` or a per-user directory under the system temp dir.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import array_api_compat.numpy as np_xp
import numpy as np

from handprop.engines.cuda.source import KERNEL_FILES, entry_points, kernel_dir
from handprop.engines.cuda.engine import CudaKernelEngine

HOST_DIR = Path(__file__).resolve().parent / "cuda_host"
HEADER = HOST_DIR / "cuda_host_emulation.h"
# Warnings are errors here too: the host compile must be as clean as NVRTC's.
CXXFLAGS = ("-x", "c++", "-std=c++17", "-O1", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror")
ASAN_FLAGS = ("-fsanitize=address", "-fno-omit-frame-pointer", "-g")

_CTYPE = {"f": ctypes.c_float, "d": ctypes.c_double, "i": ctypes.c_int32, "q": ctypes.c_int64}
_DTYPE_CODE = {np.dtype(np.float32): "f", np.dtype(np.float64): "d",
               np.dtype(np.int32): "i", np.dtype(np.int64): "q"}


def compiler() -> str | None:
    """The C++ compiler to use ($CXX, else g++), or None when there is none."""
    return shutil.which(os.environ.get("CXX", "g++"))


def cache_dir() -> Path:
    env = os.environ.get("HANDPROP_EMU_CACHE")
    path = Path(env) if env else Path(tempfile.gettempdir()) / f"handprop-cuda-emu-{os.getuid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _compiler_version(cxx: str) -> str:
    return subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout


def translation_unit(cu_path: Path) -> str:
    """C++ that includes the .cu file verbatim, then exports a launcher per kernel."""
    names = entry_points(cu_path.read_text(encoding="utf-8"))
    exports = "\n".join(f"HP_EMU_EXPORT({name})" for name in names)
    return f'#include "{cu_path.name}"\n\n{exports}\n'


def build_library(cu_path: Path, *, sanitize: bool = False, tu: str | None = None) -> Path:
    """Compile one .cu file for the host; returns the cached shared library path."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX or install g++)")
    cu_path = Path(cu_path)
    tu = translation_unit(cu_path) if tu is None else tu
    flags = CXXFLAGS + (ASAN_FLAGS if sanitize else ())
    key = hashlib.sha256()
    for part in (tu, HEADER.read_text(), _compiler_version(cxx), " ".join(flags)):
        key.update(part.encode())
    for dep in sorted(cu_path.parent.glob("*.cu*")):  # the .cu and the headers it may include
        key.update(dep.name.encode() + dep.read_bytes())
    target = cache_dir() / f"{cu_path.stem}-{key.hexdigest()[:16]}{'-asan' if sanitize else ''}.so"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        src = Path(tmp) / f"{cu_path.stem}_host.cpp"
        src.write_text(tu)
        out = Path(tmp) / target.name
        cmd = [cxx, *flags, "-include", str(HEADER), "-I", str(cu_path.parent),
               "-o", str(out), str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"host compile of {cu_path.name} failed:\n{' '.join(cmd)}\n{proc.stderr}")
        os.replace(out, target)  # atomic, so concurrent test processes never see half a file
    return target


class EmulatedKernel:
    """One kernel of a host-compiled library; called like a CuPy RawKernel."""

    def __init__(self, lib: ctypes.CDLL, name: str):
        self.name = name
        self._launch = getattr(lib, f"launch_{name}")
        self._launch.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p)]
        self._launch.restype = None
        sig = getattr(lib, f"signature_{name}")
        sig.restype = ctypes.c_char_p
        text = sig().decode()
        self.signature = [(text[i], text[i + 1]) for i in range(0, len(text), 2)]

    def __call__(self, grid: int, block: int, args: tuple) -> None:
        if grid < 1 or block < 1:
            raise ValueError(f"{self.name}: invalid launch ({grid} blocks of {block} threads)")
        if len(args) != len(self.signature):
            raise TypeError(f"{self.name} takes {len(self.signature)} arguments, got {len(args)}")
        keep = []  # the ctypes values must outlive the call
        for pos, (arg, (kind, code)) in enumerate(zip(args, self.signature)):
            if kind == "p":
                if not isinstance(arg, np.ndarray) or not arg.flags.c_contiguous:
                    raise TypeError(f"{self.name} argument {pos}: needs a C-contiguous NumPy array")
                if _DTYPE_CODE.get(arg.dtype) != code:
                    raise TypeError(f"{self.name} argument {pos}: array of {arg.dtype} "
                                    f"where the kernel reads {_CTYPE[code].__name__}")
                keep.append(ctypes.c_void_p(arg.ctypes.data))
            else:
                # Exactly the NumPy scalar type of the parameter: this is what
                # makes a Python float (a double on CuPy) fail here as well.
                if not isinstance(arg, np.generic) or _DTYPE_CODE.get(arg.dtype) != code:
                    raise TypeError(f"{self.name} argument {pos}: {type(arg).__name__} "
                                    f"where the kernel takes {_CTYPE[code].__name__}")
                keep.append(_CTYPE[code](arg.item()))
        pointers = (ctypes.c_void_p * len(keep))(*[ctypes.addressof(v) for v in keep])
        self._launch(grid, block, pointers)


class EmulatedModule:
    """The kernels of one .cu file, like ``cupy.RawModule``."""

    def __init__(self, library: Path):
        self._lib = ctypes.CDLL(str(library))
        self._kernels: dict[str, EmulatedKernel] = {}

    def get_function(self, name: str) -> EmulatedKernel:
        if name not in self._kernels:
            self._kernels[name] = EmulatedKernel(self._lib, name)
        return self._kernels[name]


_modules: dict[str, EmulatedModule] = {}
_modules_lock = threading.Lock()


def load_module(file_name: str) -> EmulatedModule:
    """The host build of ``kernels/<file_name>``, compiled once per process."""
    with _modules_lock:
        if file_name not in _modules:
            _modules[file_name] = EmulatedModule(build_library(kernel_dir() / file_name))
        return _modules[file_name]


class EmulatedCudaEngine(CudaKernelEngine):
    """The ``cuda`` engine's wrappers and kernels, on NumPy arrays and the host."""

    name = "cuda-emulated"
    is_gpu = False
    _array_type = np.ndarray
    _raw = np

    def __init__(self, grid: int | None = 2, block: int = 3):
        super().__init__(np_xp)
        self.grid = grid
        self.block = block
        self.launches: list[tuple[str, int, int]] = []  # so tests can see what ran

    def _launch_config(self, n: int) -> tuple[int, int]:
        if self.grid is None:  # size the grid to the data, as the GPU engine does
            return max(1, -(-n // self.block)), self.block
        return self.grid, self.block

    def _launch(self, kernel: str, grid: int, block: int, args: tuple) -> None:
        from handprop.engines.cuda.source import kernel_file_of

        self.launches.append((kernel, grid, block))
        load_module(kernel_file_of(kernel)).get_function(kernel)(grid, block, args)


def emulated_engine(grid: int | None = 2, block: int = 3) -> EmulatedCudaEngine:
    """An engine running the CUDA kernels on the host.

    The default, 2 blocks of 3 threads, is smaller than nearly every test
    array, so each thread strides through several elements and the tails are
    uneven; pass a large ``grid`` for more threads than elements, or
    ``grid=None`` to size the grid to the data.
    """
    return EmulatedCudaEngine(grid=grid, block=block)


def build_all() -> list[Path]:
    """Host builds of every kernel file (used by tests to fail early and clearly)."""
    return [build_library(kernel_dir() / name) for name in KERNEL_FILES]
