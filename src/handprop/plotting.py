"""The one way handprop draws: matplotlib without a display, figures saved atomically.

``pyplot()`` selects the non-interactive Agg backend before pyplot loads (so
plotting works on a machine without a display, and in worker processes), and
``save_figure`` writes a finished figure in one step: a crash never leaves half
a PNG behind.
"""

from __future__ import annotations

import io
from pathlib import Path


def pyplot():
    """``matplotlib.pyplot``, on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: Picture formats a figure may be written in (matplotlib's, without the raw ones).
FORMATS = ("png", "pdf", "svg", "jpg", "jpeg", "eps", "ps", "tif", "tiff", "webp")


def check_figure_path(path) -> Path:
    """``path`` as a Path if its suffix names a picture format (none means PNG), else a
    ``ConfigError`` that lists them; call it before long work that ends in a picture."""
    from .errors import ConfigError

    path = Path(path)
    suffix = path.suffix.lstrip(".").lower()
    if suffix and suffix not in FORMATS:
        raise ConfigError(f"cannot draw a picture as {path.name}: the name must end in one of "
                          f"{', '.join('.' + f for f in FORMATS)}")
    return path


def save_figure(fig, path, dpi: int = 100) -> Path:
    """Lay out, write atomically (creating the folder; the format follows the
    suffix, PNG by default) and free the figure."""
    from .io import atomic_write_bytes

    path = check_figure_path(path)
    plt = pyplot()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".").lower() or "png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path
