"""Shared fixtures: the engines every parity test runs on (``support/engine_cases.py``).

``tests/`` mirrors the package: one folder per package of ``src/handprop``
(``teach/`` holds ``gradcheck`` and ``trace``, ``project/`` the README,
packaging and error-message checks), and ``support/`` the CUDA host emulator,
the CuPy stand-in that the CPU suite runs the cuda engine on and
``real_data.py``, which finds the real Fashion-MNIST files (``--data-dir``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

import real_data  # noqa: E402
from engine_cases import ENGINE_PARAMS, FUSED_ENGINE_PARAMS, make_engine  # noqa: E402

from handprop.engines import get_engine  # noqa: E402

# (folder or None, why it is missing, whether missing is a failure), set once per run.
FASHION_MNIST_KEY = pytest.StashKey[tuple]()


def pytest_addoption(parser):
    parser.addoption("--data-dir", default=None, metavar="DIR",
                     help="folder with the real Fashion-MNIST .gz files (else $HANDPROP_DATA, the "
                          "user cache, Debian's folder, ../shared/data/fashion-mnist)")


def pytest_configure(config):
    # Once, from the real environment: the data tests' autouse fixtures patch it away later.
    data_dir = config.getoption("--data-dir")
    config.stash[FASHION_MNIST_KEY] = (real_data.find_fashion_mnist(data_dir),
                                       real_data.not_found_message(data_dir),
                                       real_data.missing_is_failure())


@pytest.fixture(scope="session")
def fashion_mnist_dir(pytestconfig) -> Path:
    """The folder with the real Fashion-MNIST files; skipped without them (failed with ``CI=true``)."""
    folder, message, strict = pytestconfig.stash[FASHION_MNIST_KEY]
    return real_data.require(folder, message, strict=strict)


@pytest.fixture(params=ENGINE_PARAMS)
def engine(request):
    """Every engine that can run here, the reference included."""
    return make_engine(request.param)


@pytest.fixture(params=FUSED_ENGINE_PARAMS)
def fused_engine(request):
    """Every engine except the reference, to compare against ``cpu``."""
    return make_engine(request.param)


@pytest.fixture
def cpu():
    return get_engine("cpu")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
