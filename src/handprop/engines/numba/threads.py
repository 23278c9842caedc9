"""How the numba engine's kernels share the cores: one helper, one BLAS hold.

A big call is cut into units of work (images, tiles, groups of images, blocks of rows);
``share_units`` runs the kernel on this thread and on worker threads at once (the kernels
release the GIL), each taking the next unit from an atomic counter (``claim``) until none
is left, so a thread that starts late or runs slower takes fewer units instead of making
the others wait. Each unit writes only its own outputs. No Numba threading layer is
started, so nothing here fights PyTorch's OpenMP threads in the same process.

``one_blas_thread`` holds every BLAS in the process to one thread: for the whole of a
shared call (each unit's products then run the same way however the call is split), and
for a whole epoch of a model whose kernels bring their own threads.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
from concurrent.futures import Future

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ... import host

#: Below this many elements a call stays on one thread (a hand-off costs tens of microseconds).
PARALLEL_MIN_ELEMENTS = 1 << 18


def kernel_threads() -> int:
    """Threads for one big call: ``NUMBA_NUM_THREADS`` as set now (so pinning a process to one
    thread reaches these kernels too), at most the cores this process may use."""
    value = os.environ.get("NUMBA_NUM_THREADS", "")
    threads = int(value) if value.isdigit() else int(numba.config.NUMBA_NUM_THREADS)
    return max(1, min(threads, host.available_cores()))


def threads_for_units(units: int, elements: int) -> int:
    """Threads for ``units`` units of ``elements`` elements in all: one below the threshold."""
    if elements < PARALLEL_MIN_ELEMENTS:
        return 1
    return max(1, min(units, kernel_threads()))


def images_per_unit(n: int) -> int:
    """Images a thread takes at a time from a batch of ``n`` in the element-wise kernels:
    about 8 turns a thread, for the balance, with few enough for the counter's cost."""
    return max(1, n // 16)


class _Workers:
    """Threads that each run what is put on their own queue, so the parts of one call always
    run at the same time."""

    def __init__(self, count: int):
        self.pid, self.queues = os.getpid(), [queue.SimpleQueue() for _ in range(count)]
        for q in self.queues:
            threading.Thread(target=self._serve, args=(q,), name="handprop-kernels",
                             daemon=True).start()

    @staticmethod
    def _serve(jobs) -> None:
        while True:
            kernel, args, future = jobs.get()
            try:
                future.set_result(kernel(*args))
            except BaseException as exc:  # handed to the caller by future.result()
                future.set_exception(exc)

    def submit(self, i: int, kernel, args) -> Future:
        future = Future()
        self.queues[i].put((kernel, args, future))
        return future


_workers_lock = threading.Lock()
_workers: _Workers | None = None


def _worker_threads(count: int) -> _Workers:
    """At least ``count`` worker threads, made anew in a forked child (threads do not survive
    a fork)."""
    global _workers
    with _workers_lock:
        if _workers is None or _workers.pid != os.getpid() or len(_workers.queues) < count:
            _workers = _Workers(count)
        return _workers


@intrinsic
def claim(typingctx, counter):
    """``counter[0] += 1`` atomically; the value before. Threads running one kernel take
    its units of work this way."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.atomic_rmw("add", ary.data, context.get_constant(types.int64, 1),
                                  "monotonic")

    return types.int64(counter), codegen


@intrinsic
def _arrive(typingctx, sync):
    """``sync[0] += 1`` atomically, releasing this thread's writes and acquiring the others'."""
    if not (isinstance(sync, types.Array) and sync.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.atomic_rmw("add", ary.data, context.get_constant(types.int64, 1),
                                  "acq_rel")

    return types.int64(sync), codegen


@intrinsic
def _arrived(typingctx, sync):
    """``sync[0]``, read atomically, acquiring the writes released before it; then a pause
    (x86's spin-wait hint), as it is read in a spin."""
    if not (isinstance(sync, types.Array) and sync.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        from llvmlite import ir

        ary = context.make_array(signature.args[0])(context, builder, args[0])
        value = builder.load_atomic(ary.data, "acquire", 8)
        pause = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
            ir.VoidType(), []), "llvm.x86.sse2.pause")
        builder.call(pause, [])
        return value

    return types.int64(sync), codegen


@numba.njit(inline="always")
def barrier(sync, threads, passed):
    """Wait until all ``threads`` threads have called this ``passed + 1`` times (``passed``:
    the barriers this thread has passed); returns the new count."""
    _arrive(sync)
    target = (passed + 1) * threads
    while _arrived(sync) < target:
        pass
    return passed + 1


@numba.njit(inline="always")
def unit(counter, per_unit, n):
    """``(start, stop)`` of the next unit of ``per_unit`` items (of ``n``) taken from
    ``counter``; ``start >= n`` when none is left."""
    start = claim(counter) * per_unit
    return start, min(start + per_unit, n)


_blas = {"modules": -1, "libraries": []}


def _blas_libraries() -> list:
    """threadpoolctl's controllers of every BLAS loaded in the process, found again whenever
    a module has been imported since (importing NumPy, SciPy or PyTorch loads a BLAS)."""
    if len(sys.modules) != _blas["modules"]:
        from threadpoolctl import ThreadpoolController

        _blas["libraries"] = ThreadpoolController().select(user_api="blas").lib_controllers
        _blas["modules"] = len(sys.modules)
    return _blas["libraries"]


@contextlib.contextmanager
def one_blas_thread():
    """Every BLAS in the process on one thread for the block, then as it was."""
    held = [(lib, lib.get_num_threads()) for lib in _blas_libraries()]
    held = [(lib, before) for lib, before in held if before != 1]
    for lib, _ in held:
        lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, before in held:
            lib.set_num_threads(before)


def share_units(kernel, units: int, work: int, args) -> list:
    """``kernel(*args, counter)`` on ``threads_for_units(units, work)`` threads at once (this
    one and workers), each taking units from ``counter`` until none is left; every
    BLAS held to one thread meanwhile (``one_blas_thread``). The kernels' results, this
    thread's first."""
    counter = np.zeros(1, dtype=np.int64)
    call = (*args, counter)
    threads = threads_for_units(units, work)
    with one_blas_thread():
        if threads == 1:
            return [kernel(*call)]
        workers = _worker_threads(threads - 1)
        futures = [workers.submit(i, kernel, call) for i in range(threads - 1)]
        try:
            first = kernel(*call)
        finally:
            results = [future.result() for future in futures]  # never leave one writing
    return [first, *results]


def run_together(kernel, threads: int, args) -> list:
    """``kernel(*args, tid)`` for ``tid`` in ``range(threads)``, all at once (this thread is
    0), for kernels whose threads meet at ``barrier``s; their results, in ``tid`` order."""
    if threads == 1:
        return [kernel(*args, 0)]
    workers = _worker_threads(threads - 1)
    futures = [workers.submit(i, kernel, (*args, i + 1)) for i in range(threads - 1)]
    try:
        first = kernel(*args, 0)
    finally:
        results = [future.result() for future in futures]
    return [first, *results]
