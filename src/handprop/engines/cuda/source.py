"""Find and read the CUDA C sources, shipped as package data in ``kernels/`` beside this file.

``#include "common.cuh"`` is inlined here, so the string handed to NVRTC is
self-contained and CuPy's on-disk cache (keyed by the source text) notices a
change to a header as well.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from ...errors import EngineUnavailableError

#: One fused kernel family per file.
KERNEL_FILES = ("activations.cu", "softmax_xent.cu", "optimizers.cu", "reductions.cu",
                "batch_norm.cu", "conv.cu")

#: The sources, next to their launcher (package data).
KERNEL_DIR = Path(__file__).resolve().parent / "kernels"

_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$', re.MULTILINE)
_ENTRY_POINT = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(')


def kernel_dir() -> Path:
    """The directory of the kernel sources; an install without them is named as broken."""
    missing = [name for name in KERNEL_FILES if not (KERNEL_DIR / name).is_file()]
    if missing:
        raise EngineUnavailableError(
            f"the CUDA kernel sources {', '.join(missing)} are missing from {KERNEL_DIR}: this "
            "install of handprop is incomplete; reinstall it (the wheel ships them)")
    return KERNEL_DIR


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
