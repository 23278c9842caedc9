"""Numba kernels for convolution and pooling behind the ``numba`` engine.

Same rules as ``numba_kernels.py`` (serial, ``cache=True``, no ``fastmath``);
a big call (``PARALLEL_MIN_ELEMENTS``) is split over the batch, one chunk per
thread (``kernel_threads``), and the chunks run at once on Python threads (the
kernels release the GIL). No Numba threading layer is started, so nothing here
fights PyTorch's OpenMP threads in the same process;
shapes and layouts as in ``base.py``: images NCHW, ``cols`` rows in
(n, oh, ow) order and columns in (c, i, j) order. Each kernel writes straight
into the output the wrapper allocated; ``col2im`` and the pooling backward
passes add into a zeroed ``dx`` in one sweep over their input. Kernels take
images of any memory layout (a convolution's output is a transposed view),
so nothing is copied before them.

Max-pooling compares with a plain ``>`` (branch-free selects; the window
loops of the common 2x2 case are written out) and reports whether it saw a
NaN; only then does the wrapper rerun the NaN-aware kernel, whose extra
tests cost several times more. A convolution's output is channels-last in
memory (its (N*OH*OW, F) rows seen as NCHW); the ``_nhwc`` kernels pool it
with the channel loop innermost and keep that layout for their outputs, so
the gradient reaches the convolution's backward pass already in its rows'
layout (no transposing copy).
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import Future

import numba
import numpy as np
from numba import njit

_jit = njit(cache=True, nogil=True, error_model="numpy")

#: Below this many elements a call stays on one thread (a hand-off costs tens of microseconds).
PARALLEL_MIN_ELEMENTS = 1 << 18


def channels_last(a) -> bool:
    """An NCHW array whose memory is (N, H, W, C) C-contiguous, as a convolution's output is."""
    return (a.ndim == 4 and not a.flags.c_contiguous
            and a.transpose(0, 2, 3, 1).flags.c_contiguous)


def reusable(out, shape, dtype) -> bool:
    """``out`` can take a kernel's result of ``shape`` and ``dtype`` in place."""
    return (type(out) is np.ndarray and out.shape == shape and out.dtype == dtype
            and out.flags.c_contiguous and out.flags.writeable)


def kernel_threads() -> int:
    """Threads for one big conv/pool call: ``NUMBA_NUM_THREADS`` as set now (so pinning a
    process to one thread reaches these kernels too), at most the usable cores."""
    value = os.environ.get("NUMBA_NUM_THREADS", "")
    threads = int(value) if value.isdigit() else int(numba.config.NUMBA_NUM_THREADS)
    return max(1, min(threads, len(os.sched_getaffinity(0))))


def batch_chunks(n: int, elements: int) -> list[tuple[int, int]]:
    """``(start, stop)`` ranges of a batch of ``n``: one per thread for a big call, else one."""
    parts = min(n, kernel_threads()) if elements >= PARALLEL_MIN_ELEMENTS else 1
    parts = max(parts, 1)
    return [(n * i // parts, n * (i + 1) // parts) for i in range(parts)]


class _Workers:
    """Threads that each run what is put on their own queue: chunk i goes to thread i, so the
    chunks of one call always run at the same time."""

    def __init__(self, count: int):
        self.pid, self.queues = os.getpid(), [queue.SimpleQueue() for _ in range(count)]
        for q in self.queues:
            threading.Thread(target=self._serve, args=(q,), name="handprop-conv",
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


def over_batch(kernel, chunks, args_of) -> list:
    """``kernel(*args_of(start, stop))`` for every chunk: the first on this thread, the others
    on worker threads at the same time (the kernels release the GIL). Images are independent,
    so the results are the same bits as one call over the whole batch."""
    if len(chunks) == 1:
        return [kernel(*args_of(*chunks[0]))]
    workers = _worker_threads(len(chunks) - 1)
    futures = [workers.submit(i, kernel, args_of(start, stop))
               for i, (start, stop) in enumerate(chunks[1:])]
    try:
        first = kernel(*args_of(*chunks[0]))
    finally:
        results = [future.result() for future in futures]  # never leave one writing
    return [first, *results]


@_jit
def im2col(x, kh, kw, sh, sw, top, left, oh, ow, cols):
    """x (N, C, H, W) -> cols (N*OH*OW, C*kh*kw); padding reads as zero.

    Each image is first copied into a zero-bordered scratch image, so the copy loops need no
    bounds checks. The ``ow`` rows of one output row are built transposed in a small block
    (one contiguous run of the scratch per column, which vectorises) and then written to
    ``cols`` row after row, so the big buffer is written sequentially, once.
    """
    n, c, h, w = x.shape
    padded = np.zeros((c, max(h + top, (oh - 1) * sh + kh), max(w + left, (ow - 1) * sw + kw)),
                      dtype=x.dtype)
    columns = c * kh * kw
    block = np.empty((columns, ow), dtype=x.dtype)
    for b in range(n):
        padded[:, top:top + h, left:left + w] = x[b]
        for p in range(oh):
            for ch in range(c):
                for i in range(kh):
                    source = padded[ch, p * sh + i]
                    for j in range(kw):
                        run = block[(ch * kh + i) * kw + j]
                        if sw == 1:  # the common case: a unit-stride copy
                            for q in range(ow):
                                run[q] = source[q + j]
                        else:
                            for q in range(ow):
                                run[q] = source[q * sw + j]
            row0 = (b * oh + p) * ow
            for q in range(ow):
                row = cols[row0 + q]
                for col in range(columns):
                    row[col] = block[col, q]


@_jit
def col2im(cols, kh, kw, sh, sw, top, left, oh, ow, dx):
    """Add every row of cols (N*OH*OW, C*kh*kw) back into dx (N, C, H, W).

    ``im2col`` backwards: the ``ow`` rows of one output row are read sequentially into a
    transposed block, whose rows are added as unit-stride runs into a zero-bordered scratch
    image; its interior becomes ``dx[b]``. Output rows run from the last to the first, so
    every element sums its terms in the reference's order (window offset i, then j): the
    result is bit for bit the reference's.
    """
    n, c, h, w = dx.shape
    padded = np.empty((c, max(h + top, (oh - 1) * sh + kh), max(w + left, (ow - 1) * sw + kw)),
                      dtype=dx.dtype)
    columns = c * kh * kw
    block = np.empty((columns, ow), dtype=dx.dtype)
    for b in range(n):
        padded[:] = 0
        for p in range(oh - 1, -1, -1):
            row0 = (b * oh + p) * ow
            for q in range(ow):
                row = cols[row0 + q]
                for col in range(columns):
                    block[col, q] = row[col]
            for ch in range(c):
                for i in range(kh):
                    target = padded[ch, p * sh + i]
                    for j in range(kw):
                        run = block[(ch * kh + i) * kw + j]
                        if sw == 1:
                            for q in range(ow):
                                target[q + j] += run[q]
                        else:
                            for q in range(ow):
                                target[q * sw + j] += run[q]
        dx[b] = padded[:, top:top + h, left:left + w]


@_jit
def max_pool_forward(x, ph, pw, sh, sw, out, argmax):
    """out, argmax (N, C, OH, OW): each window's maximum and its row-major position inside the
    window, the first one on ties. Returns True if any input is NaN (the result is then not
    NumPy's: rerun ``max_pool_forward_nan``)."""
    n, c, oh, ow = out.shape
    nan = False
    for b in range(n):
        for ch in range(c):
            for p in range(oh):
                for q in range(ow):
                    h0, w0 = p * sh, q * sw
                    best = x[b, ch, h0, w0]
                    where = 0
                    for i in range(ph):
                        for j in range(pw):
                            v = x[b, ch, h0 + i, w0 + j]
                            nan |= v != v
                            if v > best:
                                best = v
                                where = i * pw + j
                    out[b, ch, p, q] = best
                    argmax[b, ch, p, q] = where
    return nan


@_jit
def max_pool_forward_2x2(x, sh, sw, out, argmax):
    """``max_pool_forward`` for 2x2 windows, the comparisons written out."""
    n, c, oh, ow = out.shape
    nan = False
    for b in range(n):
        for ch in range(c):
            for p in range(oh):
                for q in range(ow):
                    h0, w0 = p * sh, q * sw
                    v0, v1 = x[b, ch, h0, w0], x[b, ch, h0, w0 + 1]
                    v2, v3 = x[b, ch, h0 + 1, w0], x[b, ch, h0 + 1, w0 + 1]
                    nan |= (v0 != v0) | (v1 != v1) | (v2 != v2) | (v3 != v3)
                    best, where = v0, 0
                    if v1 > best:
                        best, where = v1, 1
                    if v2 > best:
                        best, where = v2, 2
                    if v3 > best:
                        best, where = v3, 3
                    out[b, ch, p, q] = best
                    argmax[b, ch, p, q] = where
    return nan


@_jit
def max_pool_forward_2x2_nhwc(x, sh, sw, out, argmax):
    """``max_pool_forward_2x2`` on channels-last arrays: x (N, H, W, C), out and argmax
    (N, OH, OW, C); the channel loop is innermost and unit-stride."""
    n, oh, ow, c = out.shape
    nan = False
    for b in range(n):
        for p in range(oh):
            for q in range(ow):
                h0, w0 = p * sh, q * sw
                r0, r1 = x[b, h0, w0], x[b, h0, w0 + 1]
                r2, r3 = x[b, h0 + 1, w0], x[b, h0 + 1, w0 + 1]
                best_row, where_row = out[b, p, q], argmax[b, p, q]
                for ch in range(c):
                    v0, v1, v2, v3 = r0[ch], r1[ch], r2[ch], r3[ch]
                    nan |= (v0 != v0) | (v1 != v1) | (v2 != v2) | (v3 != v3)
                    best, where = v0, 0
                    if v1 > best:
                        best, where = v1, 1
                    if v2 > best:
                        best, where = v2, 2
                    if v3 > best:
                        best, where = v3, 3
                    best_row[ch] = best
                    where_row[ch] = where
    return nan


@_jit
def max_pool_forward_nan(x, ph, pw, sh, sw, out, argmax):
    """``max_pool_forward`` where NaN wins over numbers and the first NaN stays, as in
    NumPy's max/argmax."""
    n, c, oh, ow = out.shape
    for b in range(n):
        for ch in range(c):
            for p in range(oh):
                for q in range(ow):
                    h0, w0 = p * sh, q * sw
                    best = x[b, ch, h0, w0]
                    where = 0
                    for i in range(ph):
                        for j in range(pw):
                            v = x[b, ch, h0 + i, w0 + j]
                            if v > best or (v != v and best == best):
                                best = v
                                where = i * pw + j
                    out[b, ch, p, q] = best
                    argmax[b, ch, p, q] = where


@_jit
def max_pool_backward(grad, argmax, ph, pw, sh, sw, dx):
    """dx (N, C, H, W), zeroed first, gets each gradient at its window's arg-max."""
    n, c, oh, ow = grad.shape
    dx[:] = 0
    for b in range(n):
        for ch in range(c):
            for p in range(oh):
                for q in range(ow):
                    k = argmax[b, ch, p, q]
                    dx[b, ch, p * sh + k // pw, q * sw + k % pw] += grad[b, ch, p, q]


@_jit
def max_pool_backward_nhwc(grad, argmax, row_of, col_of, sh, sw, dx):
    """``max_pool_backward`` on channels-last arrays: grad and argmax (N, OH, OW, C), dx
    (N, H, W, C); window position k is at row ``row_of[k]``, column ``col_of[k]``."""
    n, oh, ow, c = argmax.shape
    dx[:] = 0
    for b in range(n):
        for p in range(oh):
            for q in range(ow):
                where_row, grad_row = argmax[b, p, q], grad[b, p, q]
                for ch in range(c):
                    k = where_row[ch]
                    dx[b, p * sh + row_of[k], q * sw + col_of[k], ch] += grad_row[ch]


@_jit
def avg_pool_forward(x, ph, pw, sh, sw, out):
    """out (N, C, OH, OW): each window's sum in row-major order (as the reference adds its
    slices), divided by the window size."""
    n, c, oh, ow = out.shape
    count = x.dtype.type(ph * pw)
    for b in range(n):
        for ch in range(c):
            for p in range(oh):
                for q in range(ow):
                    h0, w0 = p * sh, q * sw
                    total = x[b, ch, h0, w0]
                    for k in range(1, ph * pw):
                        total += x[b, ch, h0 + k // pw, w0 + k % pw]
                    out[b, ch, p, q] = total / count


@_jit
def avg_pool_backward(grad, ph, pw, sh, sw, dx):
    """dx (N, C, H, W), zeroed first, gets each gradient divided by the window size over its window."""
    n, c, oh, ow = grad.shape
    count = grad.dtype.type(ph * pw)
    dx[:] = 0
    for b in range(n):
        for ch in range(c):
            for p in range(oh):
                for q in range(ow):
                    share = grad[b, ch, p, q] / count
                    for i in range(ph):
                        for j in range(pw):
                            dx[b, ch, p * sh + i, q * sw + j] += share
