"""Where datasets live on disk, checksum-verified downloads and safe extraction.

The data directory is, in order: an explicit ``data_dir`` (``--data-dir``),
the ``HANDPROP_DATA`` environment variable, then a user cache directory
(``$XDG_CACHE_HOME/handprop``, else ``~/.cache/handprop``). Nothing is
downloaded unless the caller asks for it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

from ..errors import DataError

DATA_DIR_ENV = "HANDPROP_DATA"


def default_cache_dir() -> Path:
    """The per-user cache folder: ``$XDG_CACHE_HOME/handprop`` or ``~/.cache/handprop``."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says relative values are invalid and must be ignored.
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "handprop"
    return Path.home() / ".cache" / "handprop"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory: ``data_dir``, else ``$HANDPROP_DATA``, else the user cache."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return default_cache_dir()


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False) if _md5_takes_flag() else hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _md5_takes_flag() -> bool:
    try:
        hashlib.md5(usedforsecurity=False)
        return True
    except TypeError:  # pragma: no cover - very old OpenSSL builds
        return False


def fetch(url: str, dest: Path) -> None:
    """Copy ``url`` (http(s):// or file://) to ``dest``. Tests replace this function."""
    with urllib.request.urlopen(url, timeout=60) as response, dest.open("wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)


def download_verified(url: str, dest: Path, md5: str, what: str, manual_hint: str) -> Path:
    """Download ``url`` to ``dest`` through a ``.part`` file and check its md5.

    A mismatching file is deleted and reported; ``dest`` only ever holds a
    verified archive.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        fetch(url, part)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        # An HTTP error says its status code; others (URLError, OSError) their reason.
        reason = exc if isinstance(exc, urllib.error.HTTPError) else getattr(exc, "reason", exc)
        raise DataError(f"could not download {what} from {url} ({reason}). {manual_hint}") from None
    actual = file_md5(part)
    if actual != md5:
        part.unlink(missing_ok=True)
        raise DataError(
            f"the {what} download from {url} has md5 {actual}, expected {md5}: "
            f"the file is corrupt or not the official one and was deleted. "
            f"Retry the download, or {manual_hint[0].lower() + manual_hint[1:]}"
        )
    os.replace(part, dest)
    return dest


def _check_member(member: tarfile.TarInfo, archive: Path) -> PurePosixPath:
    name = PurePosixPath(member.name)
    if not (member.isfile() or member.isdir()):
        kind = "link" if (member.issym() or member.islnk()) else "special file"
        raise DataError(f"refusing to extract {archive}: member {member.name!r} is a {kind}")
    if name.is_absolute() or member.name.startswith(("/", "\\")) or ".." in name.parts \
            or any(":" in part or "\\" in part for part in name.parts):
        raise DataError(
            f"refusing to extract {archive}: member {member.name!r} would land outside the target folder"
        )
    return name


def safe_extract_tar(archive: Path, target: Path) -> None:
    """Extract a tar(.gz) into ``target``, refusing any member that could escape it.

    Every member is checked before anything is written: only regular files and
    folders with relative paths and no ``..`` component are admitted (no
    symlinks, hard links, devices or absolute names). Files are written by
    copying their bytes, so no ownership, mode or timestamp from the archive
    is applied. Extraction goes to a temporary folder first so a failure
    leaves ``target`` untouched.
    """
    target.mkdir(parents=True, exist_ok=True)
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{archive} is not a readable tar archive ({exc}); delete it and download again") from None
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{archive} is corrupt or truncated ({exc}); delete it and download again") from None
        names = [_check_member(m, archive) for m in members]
        staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=target))
        try:
            root = staging.resolve()
            for member, name in zip(members, names):
                out = staging.joinpath(*name.parts) if name.parts else staging
                if root not in (out.resolve(), *out.resolve().parents):
                    raise DataError(f"refusing to extract {archive}: member {member.name!r} escapes the target folder")
                if member.isdir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                with source, out.open("xb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
            for top in staging.iterdir():
                final = target / top.name
                if final.exists():
                    shutil.rmtree(final) if final.is_dir() else final.unlink()
                os.replace(top, final)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DataError(f"{archive} is corrupt or truncated ({exc}); delete it and download again") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
