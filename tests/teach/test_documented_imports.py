"""``handprop.trace`` and ``handprop.gradcheck``, the imports the README and docs/teaching.md
show, hand out the very objects of the ``handprop.teach`` modules; the package itself names
its modules, so ``handprop.teach.trace`` is the module, not the function."""

from __future__ import annotations

import importlib
import types

import pytest

from handprop.teach import gradcheck, net_file, trace, trace_format

HOMES = (net_file, trace, trace_format, gradcheck)


@pytest.mark.parametrize("module", ["handprop.trace", "handprop.gradcheck"])
def test_documented_module_re_exports_teach(module):
    mod = importlib.import_module(module)
    assert mod.__all__, module
    for name in mod.__all__:
        homes = [home for home in HOMES if getattr(home, name, None) is getattr(mod, name)]
        assert homes, f"{module}.{name} is not the object of a handprop.teach module"


def test_the_package_names_its_modules():
    import handprop.teach as teach

    for name in ("trace", "gradcheck", "net_file", "trace_format"):
        assert isinstance(getattr(teach, name), types.ModuleType), name
    assert callable(trace.trace) and callable(gradcheck.gradcheck)
