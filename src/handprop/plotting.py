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


def save_figure(fig, path, dpi: int = 100) -> Path:
    """Lay out, write atomically (creating the folder; the format follows the
    suffix, PNG by default) and free the figure."""
    from .io import atomic_write_bytes

    plt = pyplot()
    fig.tight_layout()
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".").lower() or "png", dpi=dpi)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path
