"""Fashion-MNIST (Zalando Research, MIT licence): 28x28 clothing images in MNIST's IDX format.

The four files are read from the first place that has them:

1. ``data_dir`` (``--data-dir``); when given it is the only place searched;
2. ``$HANDPROP_DATA``;
3. the user cache (``$XDG_CACHE_HOME/handprop``, else ``~/.cache/handprop``);
4. Debian's ``/usr/share/datasets/fashion-mnist/`` (package ``dataset-fashion-mnist``).

In each of the first three the files may sit in a ``fashion-mnist/``
subfolder (looked at first, as CIFAR-10 looks for ``cifar-10-batches-py/``)
or in the folder itself, compressed or not. Each file's decompressed contents
must have the official sha256 (Debian recompressed the ``.gz`` files, so the
compressed bytes are not compared). ``download=True`` fetches the official
``.gz`` files, checking each one's md5, into ``fashion-mnist/`` under the data
directory (``data_dir``, else ``$HANDPROP_DATA``, else the user cache) when no
place has them; nothing touches the network otherwise.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import DataError
from .cache import DATA_DIR_ENV, default_cache_dir, download_verified, file_md5, resolve_data_dir
from .dataset import Dataset
from .idx import read_idx_bytes
from .idx_dataset import FASHION_MNIST, IDX_FILES, find_idx_folder, idx_file, load_idx_folder

FASHION_MNIST_URLS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
# md5 of the official .gz downloads (the compressed files).
FASHION_MNIST_MD5 = {
    "train_images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train_labels": "25c81989df183df01b3e8a0aad5dffbe",
    "test_images": "bef4ecab320f06d8554ea6380940ec79",
    "test_labels": "bb300cfdad3c16e7a12a480ee83cd310",
}
FASHION_MNIST_SHA256 = FASHION_MNIST.sha256
# Where Debian's dataset-fashion-mnist installs the files; tests point it elsewhere.
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def lookup_places(data_dir: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """(description, folder) of each place searched, in order."""
    if data_dir is not None and str(data_dir) != "":
        return [("--data-dir", Path(data_dir).expanduser())]
    places = []
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        places.append((f"${DATA_DIR_ENV}", Path(env).expanduser()))
    places.append(("the user cache", default_cache_dir()))
    places.append(("Debian's dataset-fashion-mnist", Path(DEBIAN_DIR)))
    return places


def find_fashion_mnist(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first folder that holds the four files, or None; a half-filled ``fashion-mnist/`` is refused."""
    for _, root in lookup_places(data_dir):
        folder = find_idx_folder(root, FASHION_MNIST)
        if folder is not None:
            return folder
    return None


def decompressed_cache_dir() -> Path:
    """Where verified files are kept decompressed, so repeated loads skip inflating them."""
    return default_cache_dir() / FASHION_MNIST.folder / "decompressed"


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, download: bool = False) -> Dataset:
    """Fashion-MNIST: 60,000 training and 10,000 test images, uint8 ``(n, 28, 28)``, labels 0..9.

    See the module docstring for where it is looked for. Without the files
    anywhere, the ``DataError`` names the places and the files, unless
    ``download`` is true: then the official files are fetched first.
    """
    try:
        folder = find_fashion_mnist(data_dir)
    except DataError:
        if not download:
            raise
        folder = None
    if folder is None:
        if not download:
            raise DataError(_not_found_message(data_dir))
        folder = download_fashion_mnist(data_dir)
    return load_idx_folder(folder, FASHION_MNIST, cache_dir=decompressed_cache_dir())


def _not_found_message(data_dir) -> str:
    files = f"{FASHION_MNIST.file_list} (or the same names without .gz)"
    target = resolve_data_dir(data_dir) / FASHION_MNIST.folder
    fetch = f"Run again with --download (download=True) to fetch the official files (30 MB) into {target}"
    others = (f"${DATA_DIR_ENV}, the user cache {default_cache_dir()} and Debian's {DEBIAN_DIR} "
              f"(package dataset-fashion-mnist)")
    if data_dir is not None and str(data_dir) != "":
        root = Path(data_dir).expanduser()
        return (f"Fashion-MNIST is not in --data-dir {root}: neither {root / FASHION_MNIST.folder} "
                f"nor {root} holds {files}. A folder given with --data-dir is the only one "
                f"searched; without it handprop looks in {others}. {fetch}")
    env = os.environ.get(DATA_DIR_ENV)
    return (f"Fashion-MNIST was not found. It needs {files}, looked for in (1) --data-dir "
            f"(not given), (2) ${DATA_DIR_ENV} ({env if env else 'not set'}), (3) the user cache "
            f"{default_cache_dir()} and (4) Debian's {DEBIAN_DIR} (package "
            f"dataset-fashion-mnist); in 1-3 directly or in a {FASHION_MNIST.folder}/ subfolder. "
            f"{fetch}, install dataset-fashion-mnist, or pass --data-dir DIR with the four files "
            f"in DIR")


def _already_there(folder: Path, key: str, md5: str) -> bool:
    """A verified copy of ``key`` is in ``folder``: the official .gz, or any file with the right contents."""
    path = idx_file(folder, key)
    if path is None:
        return False
    if path.suffix == ".gz" and file_md5(path) == md5:
        return True
    try:
        return hashlib.sha256(read_idx_bytes(path)).hexdigest() == FASHION_MNIST_SHA256[key]
    except DataError:
        return False


def download_fashion_mnist(data_dir: str | os.PathLike | None = None, *, urls=None,
                           md5: dict | None = None) -> Path:
    """Fetch the four official ``.gz`` files into ``<data dir>/fashion-mnist/``; return that folder.

    Files already there with the right contents are kept. Each download goes
    through a ``.part`` file, is checked against its md5 and only then renamed
    into place; a mismatch is deleted and the next mirror tried. ``urls``
    (base URLs, each followed by the file name) and ``md5`` default to the
    official ones; tests pass ``file://`` or local ``http://`` URLs.
    """
    target = resolve_data_dir(data_dir) / FASHION_MNIST.folder
    urls = tuple(urls or FASHION_MNIST_URLS)
    md5 = md5 or FASHION_MNIST_MD5
    created = not target.exists()
    try:
        for key, name in IDX_FILES.items():
            if not _already_there(target, key, md5[key]):
                _fetch_file(f"{name}.gz", target, md5[key], urls)
    except DataError:
        if created and target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        raise
    return target


def _fetch_file(name: str, target: Path, md5: str, urls: tuple[str, ...]) -> None:
    hint = f"Place the official {name} (md5 {md5}) in {target} by hand, or install dataset-fashion-mnist"
    failures = []
    for base in urls:
        try:
            download_verified(f"{base.rstrip('/')}/{name}", target / name, md5,
                              f"Fashion-MNIST file {name}", hint)
            return
        except DataError as exc:
            # Keep each mirror's reason; what to do instead is said once, at the end.
            lowered = str(exc).lower()
            cut = min(i for i in (lowered.find(" retry the download"), lowered.find(hint.lower()),
                                  len(lowered)) if i >= 0)
            failures.append(str(exc)[:cut].rstrip(" .") + ".")
    raise DataError(" ".join(failures) + f" {hint}")
