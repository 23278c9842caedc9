"""Build hook: ship the top-level ``kernels/`` CUDA sources inside the wheel.

All metadata lives in pyproject.toml. The kernels stay at the top of the
repository (one fused kernel family per .cu file); at build time they are
copied to ``handprop/kernels/`` in the build tree, where the loader
(``handprop.engines.cuda_source``) looks first. The sdist carries them too, so
a wheel built from the sdist has them.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent
KERNEL_PATTERNS = ("*.cu", "*.cuh")


def kernel_files():
    return sorted(p for pattern in KERNEL_PATTERNS for p in (ROOT / "kernels").glob(pattern))


class build_py_with_kernels(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's kernels/ directly
        target = Path(self.build_lib) / "handprop" / "kernels"
        target.mkdir(parents=True, exist_ok=True)
        for source in kernel_files():
            self.copy_file(str(source), str(target / source.name))

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        target = Path(self.build_lib) / "handprop" / "kernels"
        return outputs + [str(target / p.name) for p in kernel_files()]


class sdist_with_kernels(sdist):
    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        target = Path(base_dir) / "kernels"
        target.mkdir(exist_ok=True)
        for source in kernel_files():
            self.copy_file(str(source), str(target / source.name))


setup(cmdclass={"build_py": build_py_with_kernels, "sdist": sdist_with_kernels})
