"""One sweep trial: a plain function of its configuration, so it can run anywhere.

``run_trial(config)`` trains in a private temporary folder and returns the
summary, the per-epoch history and the bytes of the small output files. The
client writes them into the sweep folder, so workers need no shared file
system (a Dask cluster on other machines works the same as local processes),
and an interrupted trial never leaves a half-written trial folder behind.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path


THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                   "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS",
                   "NUMBA_NUM_THREADS")


def pin_threads(threads: int) -> None:
    """Limit BLAS/OpenMP and Numba threads of this process to ``threads``.

    The environment variables take effect for libraries not loaded yet (Numba
    is imported lazily, after this); threadpoolctl limits the ones already
    loaded (NumPy's BLAS) and Numba's runtime count covers an imported Numba.
    """
    threads = max(1, int(threads))
    for name in THREAD_ENV_VARS:
        os.environ[name] = str(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=threads)
    if "numba" in sys.modules:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def thread_report() -> dict:
    """What this process runs with: the pinning variables and the loaded thread pools."""
    import numpy  # noqa: F401  -- load BLAS so threadpoolctl can see it
    from threadpoolctl import threadpool_info

    return {"pid": os.getpid(),
            "env": {name: os.environ.get(name) for name in THREAD_ENV_VARS},
            "pools": [{"api": p.get("internal_api"), "num_threads": p.get("num_threads")}
                      for p in threadpool_info()]}


def run_trial(config: dict, threads: int | None = None, plot: bool = True) -> dict:
    """Train ``config``; never raises for a failing run, returns its error instead.

    ``plot=False`` skips the trial's curves.png (about half the time of a tiny run).
    """
    from ..train.run import run_training
    from ..train.run_folder import FINISHED_FILES, METRICS, read_metrics

    if threads:
        pin_threads(threads)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="handprop-trial-") as tmp:
        out = Path(tmp) / "run"
        try:
            summary = run_training(config, out, progress=False, plot=plot,
                                   log=lambda *a, **k: None)
            result = {"status": "ok", "summary": summary, "error": None}
        except Exception as exc:  # the sweep goes on; the error is reported with the trial
            result = {"status": "failed", "summary": None,
                      "error": f"{type(exc).__name__}: {exc}",
                      "traceback": traceback.format_exc()}
        # A failed run still returns what it wrote (its epochs so far), to help find why.
        result["history"] = read_metrics(out / METRICS)
        # The checkpoint is left out: it only serves to resume an unfinished run.
        result["files"] = {name: (out / name).read_bytes() for name in FINISHED_FILES
                           if (out / name).exists()}
    result["seconds"] = time.time() - started
    # Recorded with the trial, so a slow one can be checked for its thread pinning.
    result["threads"] = thread_report()
    return result
