"""Find and read the CUDA C sources in ``kernels/``.

The ``.cu`` files live at the top level of the repository. The wheel ships
them as ``handprop/kernels/`` (``setup.py`` copies them in at build time), so
the loader looks inside the installed package first and falls back to the
checkout's ``kernels/`` (an editable install or ``PYTHONPATH=src``).

``#include "common.cuh"`` is inlined here, so the string handed to NVRTC is
self-contained and CuPy's on-disk cache (keyed by the source text) notices a
change to a header as well.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from ..errors import EngineUnavailableError

#: One fused kernel family per file.
KERNEL_FILES = ("activations.cu", "softmax_xent.cu", "optimizers.cu", "reductions.cu",
                "batch_norm.cu", "conv.cu")

_PACKAGE_DIR = Path(__file__).resolve().parent.parent / "kernels"
# src/handprop/engines/cuda_source.py -> the repository root is three levels up.
_CHECKOUT_DIR = Path(__file__).resolve().parents[3] / "kernels"

_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$', re.MULTILINE)
_ENTRY_POINT = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(')


def kernel_dir_candidates() -> tuple[Path, ...]:
    """Where the loader looks, in order: installed package, then checkout."""
    return (_PACKAGE_DIR, _CHECKOUT_DIR)


def kernel_dir() -> Path:
    """The first directory that holds every kernel file."""
    for candidate in kernel_dir_candidates():
        if all((candidate / name).is_file() for name in KERNEL_FILES):
            return candidate
    looked = ", ".join(str(p) for p in kernel_dir_candidates())
    raise EngineUnavailableError(
        f"the CUDA kernel sources ({', '.join(KERNEL_FILES)}) were not found; looked in {looked}. "
        "Reinstall handprop (the wheel ships them) or run from a full checkout."
    )


@lru_cache(maxsize=None)
def kernel_source(file_name: str) -> str:
    """The source of one kernel file with its local ``#include``s inlined."""
    directory = kernel_dir()
    return _inline(directory / file_name, directory, seen=set())


def _inline(path: Path, directory: Path, seen: set) -> str:
    if path.name in seen:  # headers use #pragma once; inline each only once
        return ""
    seen.add(path.name)
    text = path.read_text(encoding="utf-8")

    def replace(match: re.Match) -> str:
        header = directory / match.group(1)
        if not header.is_file():
            raise EngineUnavailableError(f"{path.name} includes {match.group(1)}, not found in {directory}")
        return f"// ---- inlined {match.group(1)} ----\n{_inline(header, directory, seen)}"

    return _INCLUDE.sub(replace, text)


def entry_points(source: str) -> list[str]:
    """Names of the ``extern "C" __global__`` kernels defined in ``source``."""
    return _ENTRY_POINT.findall(source)


@lru_cache(maxsize=None)
def kernel_file_of(kernel_name: str) -> str:
    """Which kernel file defines ``kernel_name`` (e.g. ``bias_act_f32``)."""
    for file_name in KERNEL_FILES:
        if kernel_name in entry_points(kernel_source(file_name)):
            return file_name
    raise KeyError(f"no kernel named {kernel_name!r} in {', '.join(KERNEL_FILES)}")
