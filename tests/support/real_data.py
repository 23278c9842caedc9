"""Where the tests find the real Fashion-MNIST files, and what happens when nowhere has them.

The places are the library's (``handprop.data.fashion_mnist``), in its order,
plus this project's own copy beside the repository:

1. ``pytest --data-dir DIR``; when given it is the only place searched;
2. ``$HANDPROP_DATA``;
3. the user cache (``$XDG_CACHE_HOME/handprop``, else ``~/.cache/handprop``);
4. Debian's ``/usr/share/datasets/fashion-mnist/`` (package ``dataset-fashion-mnist``);
5. ``../shared/data/fashion-mnist/`` beside the repository.

In each, the files may sit in a ``fashion-mnist/`` subfolder (looked at first)
or in the folder itself. The tests need the four ``.gz`` files, since they
link, serve and hash the compressed files; only their presence is checked here.
``tests/conftest.py`` resolves this once, in ``pytest_configure``, before any
test's autouse fixture points ``$HANDPROP_DATA``, the cache and ``DEBIAN_DIR``
elsewhere. Without the files the tests that need them are skipped, saying
where to put them; with ``CI=true`` they fail instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from handprop.data import fashion_mnist
from handprop.data.cache import DATA_DIR_ENV, default_cache_dir
from handprop.data.idx_dataset import FASHION_MNIST, IDX_FILES

GZ_NAMES = tuple(f"{name}.gz" for name in IDX_FILES.values())
# tests/support/real_data.py -> the repository root is two folders up.
REPO_ROOT = Path(__file__).resolve().parents[2]
SIBLING = REPO_ROOT.parent / "shared" / "data" / "fashion-mnist"
SIBLING_LABEL = "this project's ../shared/data/fashion-mnist"


def missing_is_failure(environ: Mapping[str, str] | None = None) -> bool:
    """``CI=true``: a CI run must not pass by skipping the tests that need real data."""
    environ = os.environ if environ is None else environ
    return environ.get("CI", "").strip().lower() == "true"


def search_places(data_dir: str | os.PathLike | None = None, *, environ: Mapping[str, str] | None = None,
                  cache_dir: Path | None = None, debian_dir: Path | None = None,
                  sibling: Path | None = None) -> list[tuple[str, Path]]:
    """(description, folder) of each place searched, in order; ``None`` arguments are the real ones."""
    if data_dir is not None and str(data_dir) != "":
        return [("--data-dir", Path(data_dir).expanduser())]
    environ = os.environ if environ is None else environ
    places = []
    env = environ.get(DATA_DIR_ENV)
    if env:
        places.append((f"${DATA_DIR_ENV}", Path(env).expanduser()))
    places.append(("the user cache", default_cache_dir() if cache_dir is None else Path(cache_dir)))
    places.append(("Debian's dataset-fashion-mnist",
                   Path(fashion_mnist.DEBIAN_DIR if debian_dir is None else debian_dir)))
    places.append((SIBLING_LABEL, SIBLING if sibling is None else Path(sibling)))
    return places


def holds_files(folder: Path) -> bool:
    try:
        return all((folder / name).is_file() for name in GZ_NAMES)
    except OSError:  # an unreadable folder holds nothing the tests could read
        return False


def folder_in(place: Path) -> Path | None:
    """``place/fashion-mnist`` or ``place`` itself, whichever holds the four files first."""
    for folder in (place / FASHION_MNIST.folder, place):
        if holds_files(folder):
            return folder
    return None


def find_fashion_mnist(data_dir: str | os.PathLike | None = None, **places) -> Path | None:
    """The first folder holding the four ``.gz`` files, resolved, or None (``places``: see ``search_places``)."""
    for _, place in search_places(data_dir, **places):
        folder = folder_in(place)
        if folder is not None:
            return folder.resolve()
    return None


def not_found_message(data_dir: str | os.PathLike | None = None, **places) -> str:
    """Why the real Fashion-MNIST is missing: the places searched and how to point the tests at the files."""
    files = ", ".join(GZ_NAMES)
    fix = (f"Put the four files in one of those places, or anywhere and run the tests as "
           f"`pytest --data-dir DIR` or `{DATA_DIR_ENV}=DIR pytest` "
           f"(`handprop data info fashion-mnist --download` fetches them into the user cache)")
    searched = search_places(data_dir, **places)
    if searched[0][0] == "--data-dir":
        root = searched[0][1]
        return (f"real Fashion-MNIST not found: neither {root / FASHION_MNIST.folder} nor {root} "
                f"(--data-dir) holds {files}; a folder given with --data-dir is the only one searched. "
                f"Put the four files there, or run without --data-dir to search ${DATA_DIR_ENV}, "
                f"the user cache, Debian's {fashion_mnist.DEBIAN_DIR} and {SIBLING_LABEL}")
    environ = os.environ if places.get("environ") is None else places["environ"]
    listed = ["--data-dir (not given)"]
    if not environ.get(DATA_DIR_ENV):
        listed.append(f"${DATA_DIR_ENV} (not set)")
    listed += [f"{what} {where}" for what, where in searched]
    return (f"real Fashion-MNIST not found: the tests need {files}, looked for in "
            f"{'; '.join(listed)} (each directly or in a {FASHION_MNIST.folder}/ subfolder). {fix}")


def skip_or_fail(message: str, strict: bool | None = None):
    """Skip with ``message``, or fail with it when ``strict`` (default: ``CI=true`` now)."""
    if missing_is_failure() if strict is None else strict:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require(folder: Path | None, message: str, strict: bool | None = None) -> Path:
    """``folder`` when found; else the test is skipped (failed when ``strict``) with ``message``."""
    if folder is None:
        skip_or_fail(message, strict)
    return folder
