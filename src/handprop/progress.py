"""The one progress-bar helper: a tqdm bar on an interactive terminal, nothing elsewhere.

Callers print one plain line per unit of work when they get no bar (logs, CI,
a pipe), so output stays readable wherever it goes.
"""

from __future__ import annotations

import sys


def is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(total: int, desc: str, unit: str, *, enabled: bool = True, stream=None,
                 **options):
    """A tqdm bar writing to ``stream`` (default stderr), or None when disabled or when
    ``stream`` is not a terminal. ``options`` go to tqdm (``position``, ``leave``, ...)."""
    stream = stream or sys.stderr
    if not (enabled and is_terminal(stream)):
        return None
    from tqdm.auto import tqdm

    options.setdefault("mininterval", 0.2)
    return tqdm(total=total, desc=desc, unit=unit, file=stream, dynamic_ncols=True, **options)
