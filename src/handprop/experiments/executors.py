"""Where trials run: this process, local worker processes, or a Dask cluster.

Every executor is a context manager with ``run(tasks, plot)``: ``tasks`` is a
list of ``(key, config)`` (``plot`` is passed on to ``run_trial``) and it
yields ``(key, result, error)`` as trials finish, in completion order.
``result`` is what ``trial.run_trial`` returned; ``error`` is an exception
that escaped it (a worker process that died, a lost Dask worker), in which
case ``result`` is None. Results always come back to the
caller, which writes them: workers need no shared file system.

Nothing here imports NumPy or Numba at module level: a local worker must set
its thread limits before those libraries load.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..host import available_cores
from .trial import pin_threads, run_trial


def plan_threads(workers: int, threads: int | None = None, cores: int | None = None) -> int:
    """Threads per worker so that workers x threads <= cores; refuse oversubscription."""
    cores = cores or available_cores()
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1; got {workers}")
    if threads is None:
        threads = max(1, cores // workers)
    if threads < 1:
        raise ConfigError(f"--threads must be at least 1; got {threads}")
    if workers * threads > cores:
        raise ConfigError(f"{workers} workers x {threads} threads would oversubscribe the "
                          f"{cores} cores here; use at most {cores} workers x threads in all")
    return threads


class _Reentrant:
    """Start on the first ``with``, stop when the outermost one ends: a caller may hold
    the workers (or cluster) open around a sweep that enters them again."""

    _depth = 0

    def __enter__(self):
        if self._depth == 0:
            self._start()
        self._depth += 1
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0:
            self._stop()
        return False

    def _start(self):
        pass

    def _stop(self):
        pass


class InlineExecutor(_Reentrant):
    """Trials one after another in this process (``--workers 1``): no start-up cost,
    and the simplest to debug."""

    def __init__(self, threads: int | None = None):
        self.threads = threads
        self.description = "this process"

    def run(self, tasks, plot: bool = True):
        for key, config in tasks:
            try:
                yield key, run_trial(config, self.threads, plot), None
            except Exception as exc:  # run_trial catches training errors; this is a bug guard
                yield key, None, exc


class LocalExecutor(_Reentrant):
    """``workers`` local processes, each pinned to ``threads`` BLAS/Numba threads.

    Processes are *spawned*, not forked: a fresh interpreter reads the thread
    variables before NumPy loads its BLAS, and nothing inherits Numba's or
    Dask's threads from the parent.
    """

    def __init__(self, workers: int, threads: int | None = None):
        self.workers = workers
        self.threads = plan_threads(workers, threads)
        self.description = (f"{workers} local processes x {self.threads} "
                            f"thread{'s' if self.threads > 1 else ''} each")
        self.pool = None

    def _start(self):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.pool = ProcessPoolExecutor(max_workers=self.workers,
                                        mp_context=multiprocessing.get_context("spawn"),
                                        initializer=pin_threads, initargs=(self.threads,))

    def _stop(self):
        # On an interrupt, drop the queued trials instead of waiting for them all.
        self.pool.shutdown(wait=True, cancel_futures=True)

    def submit(self, fn, *args):
        return self.pool.submit(fn, *args)

    def run(self, tasks, plot: bool = True):
        from concurrent.futures import as_completed

        futures = {self.pool.submit(run_trial, config, self.threads, plot): key
                   for key, config in tasks}
        for future in as_completed(futures):
            try:
                yield futures[future], future.result(), None
            except Exception as exc:  # e.g. BrokenProcessPool when a worker is killed
                yield futures[future], None, exc


class DaskExecutor(_Reentrant):
    """Trials on a Dask cluster: ``address`` is ``tcp://HOST:PORT`` of a running
    scheduler, or ``"local"`` to start a ``LocalCluster`` of ``workers`` processes.

    The cluster's workers need handprop installed (and CuPy with a GPU for
    ``--backend cuda`` trials); the engine name travels inside each config.
    """

    def __init__(self, address: str, workers: int | None = None, threads: int | None = None):
        self.address = address
        self.cluster = self.client = None
        if address == "local":
            self.workers = workers or available_cores()
            self.threads = plan_threads(self.workers, threads)
            self.description = (f"Dask LocalCluster of {self.workers} processes x "
                                f"{self.threads} thread{'s' if self.threads > 1 else ''} each")
        else:
            if not address.startswith(("tcp://", "tls://", "inproc://", "ucx://", "ws://",
                                       "wss://")):
                raise ConfigError(f"--scheduler takes tcp://HOST:PORT or 'local'; got {address!r}")
            self.workers = None
            # A remote cluster sizes its own workers; pin only when asked.
            self.threads = threads
            self.description = f"Dask scheduler {address}"

    def _start(self):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ConfigError("--scheduler needs Dask: pip install 'handprop[dask]' "
                              "(dask[distributed])") from None
        try:
            if self.address == "local":
                from .trial import THREAD_ENV_VARS

                # Pinning variables reach the worker processes before they import NumPy.
                env = {name: str(self.threads) for name in THREAD_ENV_VARS}
                self.cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1,
                                            processes=True, dashboard_address=None, env=env)
                self.client = Client(self.cluster)
            else:
                self.client = Client(self.address, timeout="20s")
        except OSError as exc:
            self._stop()
            raise ConfigError(f"cannot reach the Dask scheduler at {self.address}: {exc}") from None

    def _stop(self):
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def submit(self, fn, *args):
        return self.client.submit(fn, *args, pure=False)

    def run(self, tasks, plot: bool = True):
        from distributed import as_completed

        futures = {}
        for key, config in tasks:
            futures[self.client.submit(run_trial, config, self.threads, plot,
                                        pure=False)] = key
        try:
            for future in as_completed(list(futures)):
                try:
                    yield futures[future], future.result(), None
                except Exception as exc:  # e.g. KilledWorker, or a worker without handprop
                    yield futures[future], None, exc
        finally:
            # Stopped early (interrupt, error on the client): release what is left.
            pending = [f for f in futures if not f.done()]
            if pending:
                self.client.cancel(pending)


def make_executor(workers: int | None = None, scheduler: str | None = None,
                  threads: int | None = None):
    """Dask when a scheduler is named (a LocalCluster of ``workers``, default one per
    core); else ``workers`` local processes, or this process for one worker (default)."""
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1; got {workers}")
    if scheduler:
        return DaskExecutor(scheduler, workers=workers, threads=threads)
    if (workers or 1) == 1:
        if threads is not None:
            plan_threads(1, threads)
        return InlineExecutor(threads)
    return LocalExecutor(workers, threads)
