"""The wheel ships the CUDA kernel sources as package data, and the loader finds them.

Builds a wheel from a copy of the project (so the checkout gets no build/ or
egg-info litter), looks inside it, then imports handprop from the unpacked
wheel in a subprocess to prove the installed package reads its own copy.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import handprop
from handprop.engines.cuda import source as cuda_source

ROOT = Path(__file__).resolve().parents[2]
KERNEL_DIR = ROOT / "src" / "handprop" / "engines" / "cuda" / "kernels"
KERNEL_NAMES = sorted(p.name for p in KERNEL_DIR.iterdir() if p.suffix in (".cu", ".cuh"))
MEMBER_DIR = "handprop/engines/cuda/kernels"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("pkg")
    project = work / "project"
    project.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, project / name)
    if not (project / "README.md").exists():  # pyproject names it; the build refuses without it
        (project / "README.md").write_text("handprop\n")
    shutil.copytree(ROOT / "src", project / "src", ignore=ignore)
    dist = work / "dist"
    if importlib.util.find_spec("build") is not None:
        # -x: the build requirements (setuptools, wheel) are checked by setuptools itself.
        cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "-x", "--outdir", str(dist), str(project)]
    else:
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(project)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    wheels = list(dist.glob("handprop-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_checkout_has_the_kernel_files():
    assert set(cuda_source.KERNEL_FILES) <= set(KERNEL_NAMES)
    assert "common.cuh" in KERNEL_NAMES


def test_wheel_contains_every_kernel_source_unchanged(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for name in KERNEL_NAMES:
            member = f"{MEMBER_DIR}/{name}"
            assert member in names, f"{member} missing from {wheel.name}"
            assert zf.read(member) == (KERNEL_DIR / name).read_bytes()
        # One copy, beside its launcher: no top-level kernels/ entry.
        assert not any(n.startswith("kernels/") for n in names)


def test_installed_wheel_loads_kernels_from_the_package(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    code = (
        "import handprop.engines.cuda.source as s; "
        "print(s.kernel_dir()); print(len(s.kernel_source('activations.cu')))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    found, length = proc.stdout.split()
    assert Path(found) == site / MEMBER_DIR
    assert int(length) > 0


def test_checkout_loads_kernels_beside_the_launcher():
    if not Path(handprop.__file__).resolve().is_relative_to(ROOT / "src"):
        pytest.skip(f"handprop is imported from {handprop.__file__}, not this checkout's src/")
    assert not (ROOT / "kernels").exists() and not (ROOT / "setup.py").exists()  # no copy hook
    assert cuda_source.kernel_dir() == KERNEL_DIR
