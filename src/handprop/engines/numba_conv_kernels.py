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
from numba import njit, types
from numba.extending import intrinsic

from .numba_kernels import LEAKY_RELU, RELU
from .numba_simd import VECTOR_BYTES, fma_reduce, fma_rows, fma_slide, fma_slide_reduce
from .numba_training_kernels import N, T, gemm

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


@intrinsic
def _claim(typingctx, counter):
    """``counter[0] += 1`` atomically; the value before. Threads running one kernel take
    its units of work this way, so none waits on another's share."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.atomic_rmw("add", ary.data, context.get_constant(types.int64, 1),
                                  "monotonic")

    return types.int64(counter), codegen


def images_per_unit(n: int) -> int:
    """Images a thread takes at a time from a batch of ``n`` in the element-wise kernels:
    about 8 turns a thread, for the balance, with few enough for the counter's cost."""
    return max(1, n // 16)


_openblas_libs: list | None = None


def share_units(kernel, units: int, work: int, args) -> list:
    """``kernel(*args, counter)`` on as many threads as ``batch_chunks`` gives for ``units``
    units of ``work`` elements, all at once (this one and workers), each taking the next
    unit from ``counter`` until none is left: a thread that starts late or runs slower
    takes fewer units instead of making the others wait (splitting the batch in fixed
    halves left the calling thread waiting). Each unit writes only its own outputs.

    For the whole call, on one kernel thread as on several, every OpenBLAS in the process
    is held to one thread (already so inside ``NumbaEngine.threads_for``): each unit's
    products then run the same way however the call is split (OpenBLAS's Haswell kernel
    gives other bits when it shares one product between its threads), and each thread's
    products run on its own core instead of competing for the whole pool."""
    global _openblas_libs
    counter = np.zeros(1, dtype=np.int64)
    threads = len(batch_chunks(units, work))
    chunks, args_of = [(0, units)] * threads, lambda _a, _b: (*args, counter)
    if _openblas_libs is None:
        from threadpoolctl import ThreadpoolController

        _openblas_libs = ThreadpoolController().select(internal_api="openblas").lib_controllers
    held = [(lib, lib.get_num_threads()) for lib in _openblas_libs]
    held = [(lib, before) for lib, before in held if before != 1]
    for lib, _ in held:
        lib.set_num_threads(1)
    try:
        return over_batch(kernel, chunks, args_of)
    finally:
        for lib, before in held:
            lib.set_num_threads(before)


def images_per_tile(rows_per_image: int, columns: int) -> int:
    """Images whose window rows one tile holds: about 256 KB of them, at least one image."""
    return max(1, TILE_ELEMENTS // (rows_per_image * columns))


#: Elements of a window tile (float32: 256 KB, within a core's L2 cache).
TILE_ELEMENTS = 1 << 16
#: Windows with rows shorter than this (kw * C values) are gathered into a transposed tile.
SHORT_RUN = 16
#: Images per partial sum of a weight gradient: a fixed grouping, whatever the thread count
#: (small, as a group is the unit threads take: 4 images of the MNIST CNN are 0.3 ms).
IMAGES_PER_GROUP = 4


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
def max_pool_forward_2x2_nhwc(x, sh, sw, per_unit, out, argmax, counter):
    """``max_pool_forward_2x2`` on channels-last arrays: x (N, H, W, C), out and argmax
    (N, OH, OW, C); the channel loop is innermost and unit-stride. Images ``per_unit`` at a
    time, taken from ``counter`` (``share_units``)."""
    n, oh, ow, c = out.shape
    nan = False
    while True:
        b0 = _claim(counter) * per_unit
        if b0 >= n:
            break
        nan |= _max_pool_2x2_nhwc_images(x, sh, sw, b0, min(b0 + per_unit, n), out, argmax)
    return nan


@_jit
def _max_pool_2x2_nhwc_images(x, sh, sw, b0, b1, out, argmax):
    """Images ``b0 .. b1`` of ``max_pool_forward_2x2_nhwc``; True if any input is NaN."""
    _, oh, ow, c = out.shape
    nan = False
    for b in range(b0, b1):
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
def max_pool_backward_tiled_nhwc(grad, argmax, ph, pw, per_unit, dx, counter):
    """``max_pool_backward_nhwc`` for windows that tile the image exactly (stride = window,
    no rows or columns left over): every element of dx is written once, the gradient or
    zero, with no zeroing pass and no read-back. Images ``per_unit`` at a time, taken from
    ``counter``."""
    n = argmax.shape[0]
    while True:
        b0 = _claim(counter) * per_unit
        if b0 >= n:
            break
        for b in range(b0, min(b0 + per_unit, n)):
            _max_pool_backward_tiled_image(grad, argmax, ph, pw, b, dx)


@_jit
def _max_pool_backward_tiled_image(grad, argmax, ph, pw, b, dx):
    """Image ``b`` of ``max_pool_backward_tiled_nhwc``."""
    _, oh, ow, c = argmax.shape
    zero = dx.dtype.type(0)
    for p in range(oh):
        for q in range(ow):
            where_row, grad_row = argmax[b, p, q], grad[b, p, q]
            for i in range(ph):
                for j in range(pw):
                    k, target = i * pw + j, dx[b, p * ph + i, q * pw + j]
                    for ch in range(c):
                        target[ch] = grad_row[ch] if where_row[ch] == k else zero


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


# ------------------------------------------------- convolution as tiled GEMMs
# ``im2col_matmul`` and friends never build the whole (N*OH*OW, C*kh*kw) window matrix (40 MB
# for the MNIST CNN's second convolution at batch 128, written and read twice a step). They
# build it a tile of a few images at a time, in a buffer that stays in the core's cache, and
# multiply each tile at once with BLAS ``gemm`` called from compiled code (``gemm``: NumPy's
# own OpenBLAS, see ``numba_training_kernels``). A tile's columns are in (i, j, c) order, not
# the reference's (c, i, j): an image copied channels-last into a zero-bordered scratch makes
# each window row kh unit-stride runs of kw*C values. The weights are permuted to match once
# per call by the engine (a few thousand values).

@_jit
def _pad_channels_last(x, b, top, left, padded):
    """Image ``b`` of x (N, C, H, W), any memory layout, into the interior of ``padded``
    (Hp, Wp, C); the border is left as it is (zero)."""
    _, c, h, w = x.shape
    for i in range(h):
        for j in range(w):
            pixel = padded[top + i, left + j]
            for ch in range(c):
                pixel[ch] = x[b, ch, i, j]


@_jit
def _windows_into(padded, kh, kw, sh, sw, oh, ow, tile, row0):
    """Rows ``row0 .. row0 + oh*ow`` of ``tile`` get the windows of ``padded`` (Hp, Wp, C),
    in (p, q) order, each row's columns in (i, j, c) order."""
    hp, wp, c = padded.shape
    run = kw * c
    flat = padded.reshape(hp * wp * c)
    r = row0
    for p in range(oh):
        for q in range(ow):
            row = tile[r]
            for i in range(kh):
                start = ((p * sh + i) * wp + q * sw) * c
                # Copies between views indexed from 0 vectorize (10x faster here than
                # offsets added to the indices, which Numba's negative-index handling stops).
                source, target = flat[start:start + run], row[i * run:(i + 1) * run]
                for t in range(run):
                    target[t] = source[t]
            r += 1


@_jit
def _pad_channels_first(x, b, top, left, padded):
    """Image ``b`` of x (N, C, H, W), any memory layout, into the interior of ``padded``
    (C, Hp, Wp); the border is left as it is (zero)."""
    _, c, h, w = x.shape
    for ch in range(c):
        for i in range(h):
            source, target = x[b, ch, i], padded[ch, top + i, left:left + w]
            for j in range(w):
                target[j] = source[j]


@_jit
def _windows_into_columns(padded, kh, kw, sh, sw, oh, ow, tile_t, col0):
    """``_windows_into`` transposed, for windows of few values a row (kw*C < SHORT_RUN, as
    one channel gives): columns ``col0 .. col0 + oh*ow`` of ``tile_t`` (kh*kw*C, ...) get
    the windows of ``padded`` (C, Hp, Wp, channels first), each of its rows ``ow``-long
    runs of one image row (unit-stride copies at stride 1)."""
    c = padded.shape[0]
    for i in range(kh):
        for j in range(kw):
            for ch in range(c):
                target_row = tile_t[(i * kw + j) * c + ch]
                for p in range(oh):
                    source = padded[ch, p * sh + i, j:j + (ow - 1) * sw + 1]
                    target = target_row[col0 + p * ow:col0 + (p + 1) * ow]
                    if sw == 1:
                        for q in range(ow):
                            target[q] = source[q]
                    else:
                        for q in range(ow):
                            target[q] = source[q * sw]


@_jit
def _padded_shape(h, w, c, kh, kw, sh, sw, top, left, oh, ow):
    return (max(h + top, (oh - 1) * sh + kh), max(w + left, (ow - 1) * sw + kw), c)


@_jit
def _bias_act_rows(z, r0, r1, bias_rows, has_bias, code, alpha):
    """Rows ``r0 .. r1`` of z get ``f(z + bias)`` in place for the activations without a
    transcendental (identity, relu, leaky_relu), as ``bias_act_direct`` computes them.
    ``bias_rows`` is the bias repeated for a whole number of rows: the rows are then one
    long run, which vectorises (a loop per row of 16 values costs 3x as much)."""
    n, f = z.shape
    zero, alpha = z.dtype.type(0), z.dtype.type(alpha)
    flat, run = z.reshape(n * f), bias_rows.shape[0]
    for start in range(r0 * f, r1 * f, run):
        part = flat[start:min(start + run, r1 * f)]
        if has_bias:
            for t in range(part.shape[0]):
                part[t] = part[t] + bias_rows[t]
        if code == RELU:
            for t in range(part.shape[0]):
                part[t] = part[t] if part[t] > zero else zero
        elif code == LEAKY_RELU:
            for t in range(part.shape[0]):
                part[t] = part[t] if part[t] > zero else part[t] * alpha


@_jit
def _window_buffers(x, kh, kw, sh, sw, top, left, oh, ow, per_tile):
    """``(short, padded, tile)``: a zero-bordered scratch image and a window tile of
    ``per_tile`` images, transposed for short rows (``_windows_into_columns``)."""
    _, c, h, width = x.shape
    short = kw * c < SHORT_RUN
    hp, wp, _ = _padded_shape(h, width, c, kh, kw, sh, sw, top, left, oh, ow)
    padded = np.zeros((c, hp, wp) if short else (hp, wp, c), x.dtype)
    k, rows = kh * kw * c, oh * ow
    tile = np.empty((k, per_tile * rows) if short else (per_tile * rows, k), dtype=x.dtype)
    return short, padded, tile


@_jit
def _fill_tile(x, t0, t1, kh, kw, sh, sw, top, left, oh, ow, short, padded, tile):
    """The windows of images ``t0 .. t1`` of x into ``tile``, image ``t0`` first."""
    for b in range(t0, t1):
        if short:
            _pad_channels_first(x, b, top, left, padded)
            _windows_into_columns(padded, kh, kw, sh, sw, oh, ow, tile, (b - t0) * oh * ow)
        else:
            _pad_channels_last(x, b, top, left, padded)
            _windows_into(padded, kh, kw, sh, sw, oh, ow, tile, (b - t0) * oh * ow)


@_jit
def im2col_matmul(x, w, kh, kw, sh, sw, top, left, oh, ow, per_tile, bias, has_bias, code,
                  alpha, z, counter):
    """The rows of ``z`` (N*OH*OW, F) = the windows of x (N, C, H, W) @ ``w`` (kh*kw*C, F,
    rows in (i, j, c) order), ``per_tile`` images per product, tiles taken from ``counter``
    (``share_units``); then ``f(z + bias)`` on each tile's rows while they are in cache
    (``code``: identity, relu or leaky_relu)."""
    n, c = x.shape[:2]
    k, f, rows = kh * kw * c, w.shape[1], oh * ow
    dt = x.dtype.type
    short, padded, tile = _window_buffers(x, kh, kw, sh, sw, top, left, oh, ow, per_tile)
    while True:
        t0 = _claim(counter) * per_tile
        if t0 >= n:
            break
        t1 = min(t0 + per_tile, n)
        _fill_tile(x, t0, t1, kh, kw, sh, sw, top, left, oh, ow, short, padded, tile)
        m = (t1 - t0) * rows
        if short:
            gemm(T, N, m, f, k, dt(1), tile, per_tile * rows, w, f, dt(0), z[t0 * rows:], f)
        else:
            gemm(N, N, m, f, k, dt(1), tile, k, w, f, dt(0), z[t0 * rows:], f)
        _bias_act_rows(z, t0 * rows, t1 * rows, bias, has_bias, code, alpha)


@_jit
def im2col_t_matmul(x, g, kh, kw, sh, sw, top, left, oh, ow, per_tile, per_group, partial,
                    counter):
    """``partial[group]`` (kh*kw*C, F) = windows(x).T @ g over the images of each group
    (``per_group`` images, ``per_tile`` at a time), groups taken from ``counter``; g is
    (N*OH*OW, F). Groups of a fixed size, summed in order by the caller, make the result
    independent of how many threads share them."""
    n, c = x.shape[:2]
    k, f, rows = kh * kw * c, g.shape[1], oh * ow
    dt = x.dtype.type
    short, padded, tile = _window_buffers(x, kh, kw, sh, sw, top, left, oh, ow, per_tile)
    while True:
        group = _claim(counter)
        if group >= partial.shape[0]:
            break
        first, last = group * per_group, min((group + 1) * per_group, n)
        for t0 in range(first, last, per_tile):
            t1 = min(t0 + per_tile, last)
            _fill_tile(x, t0, t1, kh, kw, sh, sw, top, left, oh, ow, short, padded, tile)
            beta, m = dt(0) if t0 == first else dt(1), (t1 - t0) * rows
            if short:
                gemm(N, N, k, f, m, dt(1), tile, per_tile * rows, g[t0 * rows:], f, beta,
                     partial[group], f)
            else:
                gemm(T, N, k, f, m, dt(1), tile, k, g[t0 * rows:], f, beta, partial[group], f)


@_jit
def matmul_col2im(g, w, kh, kw, sh, sw, top, left, oh, ow, per_tile, dx, counter):
    """dx (N, H, W, C), channels-last and C-contiguous, = col2im(g @ w): g (N*OH*OW, F),
    w (F, kh*kw*C, columns in (i, j, c) order), ``per_tile`` images at a time, tiles taken
    from ``counter``. Each window's row is added back where it was read, in (p, q, i, j)
    order; padding dropped."""
    n, h, width, c = dx.shape
    k, f, rows = kh * kw * c, g.shape[1], oh * ow
    dt = g.dtype.type
    padded = np.empty(_padded_shape(h, width, c, kh, kw, sh, sw, top, left, oh, ow), g.dtype)
    hp, wp, _ = padded.shape
    flat = padded.reshape(hp * wp * c)
    run = kw * c
    tile = np.empty((per_tile * rows, k), dtype=g.dtype)
    while True:
        t0 = _claim(counter) * per_tile
        if t0 >= n:
            break
        t1 = min(t0 + per_tile, n)
        gemm(N, N, (t1 - t0) * rows, k, f, dt(1), g[t0 * rows:], f, w, k, dt(0), tile, k)
        for b in range(t0, t1):
            flat[:] = 0
            r = (b - t0) * rows
            for p in range(oh):
                for q in range(ow):
                    row = tile[r]
                    for i in range(kh):
                        start = ((p * sh + i) * wp + q * sw) * c
                        source, target = row[i * run:(i + 1) * run], flat[start:start + run]
                        for t in range(run):
                            target[t] += source[t]
                    r += 1
            for i in range(h):
                for j in range(width):
                    source, target = padded[top + i, left + j], dx[b, i, j]
                    for ch in range(c):
                        target[ch] = source[ch]


@_jit
def act_backward_bias_grad_blocks(grad, out, code, alpha, block_rows, run_rows, res, partial,
                                  counter):
    """For the blocks of ``block_rows`` rows taken from ``counter``: ``res = grad * f'``
    (relu or leaky_relu, from ``out = f(z)``, as ``act_backward``) and ``partial[blk]``
    (float64) = the column sums of those rows of ``res``, in one pass. The rows are taken
    ``run_rows`` at a time as one long run (which vectorises; a loop per row of 16 values
    costs 3x as much), summed into a run of partial sums, whose rows are then added into
    ``partial[blk]`` in order."""
    n, k = grad.shape
    zero, alpha = grad.dtype.type(0), grad.dtype.type(alpha)
    g, o, r = grad.reshape(n * k), out.reshape(n * k), res.reshape(n * k)
    run = run_rows * k
    sums = np.empty(run)
    while True:
        blk = _claim(counter)
        if blk >= partial.shape[0]:
            break
        sums[:] = 0.0
        stop = min((blk + 1) * block_rows, n) * k
        for start in range(blk * block_rows * k, stop, run):
            end = min(start + run, stop)
            g_part, o_part, r_part = g[start:end], o[start:end], r[start:end]
            if code == RELU:
                for t in range(end - start):
                    r_part[t] = g_part[t] if o_part[t] > zero else zero
            else:
                for t in range(end - start):
                    r_part[t] = g_part[t] if o_part[t] > zero else g_part[t] * alpha
            for t in range(end - start):
                sums[t] += r_part[t]
        acc = partial[blk]
        for j in range(k):
            acc[j] = 0.0
        for t in range(run):
            acc[t % k] += sums[t]


# ------------------------------------------------- direct convolution, no window tile
# ``direct_conv_*`` run the same sums without any window matrix: each output row's
# windows are read straight from a padded channels-last image by the register-blocked
# vector loops of ``numba_simd`` (a window row of kw*C values is contiguous there, and the
# next pixel's starts sw*C values later). They need the filters (forward, weight gradient)
# or the channels (input gradient) in whole vectors of 64 bytes; the engine picks them
# then and the tiled GEMMs above otherwise.

@_jit
def _zeros_aligned(shape, dtype):
    """Zeros of ``shape`` starting on a 64-byte boundary (Numba's own start on 32), so vector
    loads of whole rows never straddle two cache lines."""
    size = shape[0] * shape[1] * shape[2]
    raw = np.zeros(size + VECTOR_BYTES, dtype)
    start = (-raw.ctypes.data % VECTOR_BYTES) // raw.itemsize
    return raw[start:start + size].reshape(shape)


#: Block sizes the output rows are cut into: the largest first, any remainder in at most
#: four more blocks (13 = 8 + 4 + 1).
BLOCK_SIZES = (14, 8, 4, 2, 1)


@_jit
def _rows_block(size, two, a, a_off, a_step, i_count, i_step, t_count, b, b_off, b_step, out,
                out_off, out_step):
    """``fma_rows`` with a block size from ``BLOCK_SIZES`` and one or two vectors, as a
    literal (each pair is its own register-blocked loop)."""
    if two:
        if size == 14:
            fma_rows(14, 2, a, a_off, a_step, i_count, i_step, t_count, b, b_off, b_step, out, out_off, out_step)
        elif size == 8:
            fma_rows(8, 2, a, a_off, a_step, i_count, i_step, t_count, b, b_off, b_step, out, out_off, out_step)
        elif size == 4:
            fma_rows(4, 2, a, a_off, a_step, i_count, i_step, t_count, b, b_off, b_step, out, out_off, out_step)
        elif size == 2:
            fma_rows(2, 2, a, a_off, a_step, i_count, i_step, t_count, b, b_off, b_step, out, out_off, out_step)
        else:
            fma_rows(1, 2, a, a_off, a_step, i_count, i_step, t_count, b, b_off, b_step, out, out_off, out_step)
    elif size == 14:
        fma_rows(14, 1, a, a_off, a_step, i_count, i_step, t_count, b, b_off, b_step, out, out_off, out_step)
    elif size == 8:
        fma_rows(8, 1, a, a_off, a_step, i_count, i_step, t_count, b, b_off, b_step, out, out_off, out_step)
    elif size == 4:
        fma_rows(4, 1, a, a_off, a_step, i_count, i_step, t_count, b, b_off, b_step, out, out_off, out_step)
    elif size == 2:
        fma_rows(2, 1, a, a_off, a_step, i_count, i_step, t_count, b, b_off, b_step, out, out_off, out_step)
    else:
        fma_rows(1, 1, a, a_off, a_step, i_count, i_step, t_count, b, b_off, b_step, out, out_off, out_step)


@_jit
def _reduce_block(size, two, a, a_off, a_step, a_row_step, rows, cols, g, g_off, g_step,
                  g_row_step, out, out_off, out_step, accumulate):
    """``fma_reduce`` with a block size from ``BLOCK_SIZES`` and one or two vectors."""
    if two:
        if size == 14:
            fma_reduce(14, 2, a, a_off, a_step, a_row_step, rows, cols, g, g_off, g_step, g_row_step, out, out_off, out_step, accumulate)
        elif size == 8:
            fma_reduce(8, 2, a, a_off, a_step, a_row_step, rows, cols, g, g_off, g_step, g_row_step, out, out_off, out_step, accumulate)
        elif size == 4:
            fma_reduce(4, 2, a, a_off, a_step, a_row_step, rows, cols, g, g_off, g_step, g_row_step, out, out_off, out_step, accumulate)
        elif size == 2:
            fma_reduce(2, 2, a, a_off, a_step, a_row_step, rows, cols, g, g_off, g_step, g_row_step, out, out_off, out_step, accumulate)
        else:
            fma_reduce(1, 2, a, a_off, a_step, a_row_step, rows, cols, g, g_off, g_step, g_row_step, out, out_off, out_step, accumulate)
    elif size == 14:
        fma_reduce(14, 1, a, a_off, a_step, a_row_step, rows, cols, g, g_off, g_step, g_row_step, out, out_off, out_step, accumulate)
    elif size == 8:
        fma_reduce(8, 1, a, a_off, a_step, a_row_step, rows, cols, g, g_off, g_step, g_row_step, out, out_off, out_step, accumulate)
    elif size == 4:
        fma_reduce(4, 1, a, a_off, a_step, a_row_step, rows, cols, g, g_off, g_step, g_row_step, out, out_off, out_step, accumulate)
    elif size == 2:
        fma_reduce(2, 1, a, a_off, a_step, a_row_step, rows, cols, g, g_off, g_step, g_row_step, out, out_off, out_step, accumulate)
    else:
        fma_reduce(1, 1, a, a_off, a_step, a_row_step, rows, cols, g, g_off, g_step, g_row_step, out, out_off, out_step, accumulate)


@_jit
def _conv_row(a, a_off, a_step, i_count, i_step, t_count, b, f, out, out_off, pixels):
    """One output row of ``pixels`` pixels and ``f`` columns (rows of ``out`` ``f`` apart):
    ``fma_rows`` over blocks of pixels and pairs of vectors of columns."""
    width = VECTOR_BYTES // a.itemsize
    f0 = 0
    while f0 < f:
        two = f - f0 >= 2 * width
        q = 0
        for size in BLOCK_SIZES:
            while pixels - q >= size:
                _rows_block(size, two, a, a_off + q * a_step, a_step, i_count, i_step, t_count,
                            b, f0, f, out, out_off + q * f + f0, f)
                q += size
        f0 += 2 * width if two else width


@_jit
def _reduce_rows(a, a_off, a_step, a_row_step, oh, ow, g, g_off, f, values, out, out_off,
                 accumulate):
    """``values`` rows (``f`` columns each) of a weight gradient from one image:
    ``fma_reduce`` over blocks of rows and pairs of vectors of columns."""
    width = VECTOR_BYTES // a.itemsize
    f0 = 0
    while f0 < f:
        two = f - f0 >= 2 * width
        k = 0
        for size in BLOCK_SIZES:
            while values - k >= size:
                _reduce_block(size, two, a, a_off + k, a_step, a_row_step, oh, ow, g, g_off + f0,
                              f, ow * f, out, out_off + k * f + f0, f, accumulate)
                k += size
        f0 += 2 * width if two else width


@_jit
def direct_conv_forward(x, w, kh, kw, sh, sw, top, left, oh, ow, bias_rows, has_bias, code,
                        alpha, z, counter):
    """``im2col_matmul`` without a tile: z (N*OH*OW, F) from x (N, C, H, W) and w
    (kh*kw*C, F) in (i, j, c) rows, F in whole vectors; one image a unit from ``counter``,
    then ``f(z + bias)`` on its rows while they are in cache. Rows at stride 1 of a width in
    ``SLIDE_TAPS`` take ``fma_slide``, the others ``fma_rows``."""
    n, c, h, width = x.shape
    f, rows = w.shape[1], oh * ow
    hp, wp, _ = _padded_shape(h, width, c, kh, kw, sh, sw, top, left, oh, ow)
    padded = _zeros_aligned((hp, wp, c), x.dtype)
    flat, w_flat, z_flat = padded.reshape(hp * wp * c), w.reshape(w.size), z.reshape(z.size)
    slide = sw == 1 and (kw == SLIDE_TAPS[0] or kw == SLIDE_TAPS[1])
    while True:
        b = _claim(counter)
        if b >= n:
            break
        _pad_channels_last(x, b, top, left, padded)
        for p in range(oh):
            if slide:
                _slide_row(flat, p * sh * wp * c, kh, kw, wp * c, c, w_flat, f, z_flat,
                           (b * rows + p * ow) * f, ow)
            else:
                _conv_row(flat, p * sh * wp * c, sw * c, kh, wp * c, kw * c, w_flat, f, z_flat,
                          (b * rows + p * ow) * f, ow)
        _bias_act_rows(z, b * rows, (b + 1) * rows, bias_rows, has_bias, code, alpha)


@_jit
def _image_weight_grad(x, b, top, left, padded, kh, kw, sh, sw, oh, ow, g_flat, g_off, f, out,
                       first):
    """Image ``b``'s terms of a weight gradient into ``out`` (kh*kw*C*F, rows in (i, j, c)
    order), from its output-gradient rows at ``g_flat[g_off:]``; ``first``: the image that
    starts the sums. Short window rows (kw*C < SHORT_RUN) at stride 1 of a width in
    ``SLIDE_TAPS`` take ``fma_slide_reduce`` (with 16 channels ``fma_reduce`` ran 1.4x faster
    here), the others ``fma_reduce``."""
    hp, wp, c = padded.shape
    run = kw * c
    _pad_channels_last(x, b, top, left, padded)
    if sw == 1 and (kw == SLIDE_TAPS[0] or kw == SLIDE_TAPS[1]) and run < SHORT_RUN:
        _slide_weight_grad(padded, kh, kw, sh, oh, ow, g_flat, g_off, f, out, first)
        return
    flat = padded.reshape(hp * wp * c)
    for i in range(kh):
        _reduce_rows(flat, i * wp * c, sw * c, sh * wp * c, oh, ow, g_flat, g_off, f, run, out,
                     i * run * f, not first)


@_jit
def direct_conv_weight_grad(x, g, kh, kw, sh, sw, top, left, oh, ow, per_group, partial,
                            counter):
    """``im2col_t_matmul`` without a tile: ``partial[group]`` (kh*kw*C, F), rows in (i, j, c)
    order, = windows(x).T @ g over the ``per_group`` images of each group, image by image
    in order (``_image_weight_grad``); groups taken from ``counter``."""
    n, c, h, width = x.shape
    f, rows, run = g.shape[1], oh * ow, kw * c
    hp, wp, _ = _padded_shape(h, width, c, kh, kw, sh, sw, top, left, oh, ow)
    padded = _zeros_aligned((hp, wp, c), x.dtype)
    g_flat = g.reshape(g.size)
    while True:
        group = _claim(counter)
        if group >= partial.shape[0]:
            break
        out = partial[group].reshape(kh * run * f)
        first, last = group * per_group, min((group + 1) * per_group, n)
        for b in range(first, last):
            _image_weight_grad(x, b, top, left, padded, kh, kw, sh, sw, oh, ow, g_flat,
                               b * rows * f, f, out, b == first)


#: Window widths with a sliding-window kernel (``fma_slide``, one per width and block size).
SLIDE_TAPS = (5, 3)


@_jit
def _slide_block(size, taps, a, a_off, a_step, i_count, i_step, c_count, b, b_off, b_step, out,
                 out_off, out_step):
    """``fma_slide`` for one vector of columns, with a block size from ``BLOCK_SIZES`` and a
    width from ``SLIDE_TAPS`` as literals."""
    if taps == 5 and size == 14:
        fma_slide(14, 5, 1, a, a_off, a_step, i_count, i_step, c_count, b, b_off, b_step, out,
                  out_off, out_step)
    elif taps == 5 and size == 8:
        fma_slide(8, 5, 1, a, a_off, a_step, i_count, i_step, c_count, b, b_off, b_step, out,
                  out_off, out_step)
    elif taps == 5 and size == 4:
        fma_slide(4, 5, 1, a, a_off, a_step, i_count, i_step, c_count, b, b_off, b_step, out,
                  out_off, out_step)
    elif taps == 5 and size == 2:
        fma_slide(2, 5, 1, a, a_off, a_step, i_count, i_step, c_count, b, b_off, b_step, out,
                  out_off, out_step)
    elif taps == 5 and size == 1:
        fma_slide(1, 5, 1, a, a_off, a_step, i_count, i_step, c_count, b, b_off, b_step, out,
                  out_off, out_step)
    elif taps == 3 and size == 14:
        fma_slide(14, 3, 1, a, a_off, a_step, i_count, i_step, c_count, b, b_off, b_step, out,
                  out_off, out_step)
    elif taps == 3 and size == 8:
        fma_slide(8, 3, 1, a, a_off, a_step, i_count, i_step, c_count, b, b_off, b_step, out,
                  out_off, out_step)
    elif taps == 3 and size == 4:
        fma_slide(4, 3, 1, a, a_off, a_step, i_count, i_step, c_count, b, b_off, b_step, out,
                  out_off, out_step)
    elif taps == 3 and size == 2:
        fma_slide(2, 3, 1, a, a_off, a_step, i_count, i_step, c_count, b, b_off, b_step, out,
                  out_off, out_step)
    elif taps == 3 and size == 1:
        fma_slide(1, 3, 1, a, a_off, a_step, i_count, i_step, c_count, b, b_off, b_step, out,
                  out_off, out_step)


@_jit
def _slide_row(a, a_off, kh, kw, i_step, c, b, f, out, out_off, pixels):
    """One stride-1 output row of ``pixels`` pixels and ``f`` columns from a padded
    channels-last image (``c`` channels): ``fma_slide`` over blocks of pixels, a vector of
    columns at a time."""
    for f0 in range(0, f, VECTOR_BYTES // a.itemsize):
        q = 0
        for size in BLOCK_SIZES:
            while pixels - q >= size:
                _slide_block(size, kw, a, a_off + q * c, c, kh, i_step, c, b, f0, f, out,
                             out_off + q * f + f0, f)
                q += size


@_jit
def _slide_reduce_block(size, taps, a, a_off, a_step, a_row_step, rows, blocks, g, g_off,
                        g_step, g_row_step, out, out_off, out_step, accumulate):
    """``fma_slide_reduce`` with a block size from ``BLOCK_SIZES`` and a width from
    ``SLIDE_TAPS`` as literals."""
    if taps == 5 and size == 14:
        fma_slide_reduce(14, 5, a, a_off, a_step, a_row_step, rows, blocks, g, g_off, g_step,
                         g_row_step, out, out_off, out_step, accumulate)
    elif taps == 5 and size == 8:
        fma_slide_reduce(8, 5, a, a_off, a_step, a_row_step, rows, blocks, g, g_off, g_step,
                         g_row_step, out, out_off, out_step, accumulate)
    elif taps == 5 and size == 4:
        fma_slide_reduce(4, 5, a, a_off, a_step, a_row_step, rows, blocks, g, g_off, g_step,
                         g_row_step, out, out_off, out_step, accumulate)
    elif taps == 5 and size == 2:
        fma_slide_reduce(2, 5, a, a_off, a_step, a_row_step, rows, blocks, g, g_off, g_step,
                         g_row_step, out, out_off, out_step, accumulate)
    elif taps == 5 and size == 1:
        fma_slide_reduce(1, 5, a, a_off, a_step, a_row_step, rows, blocks, g, g_off, g_step,
                         g_row_step, out, out_off, out_step, accumulate)
    elif taps == 3 and size == 14:
        fma_slide_reduce(14, 3, a, a_off, a_step, a_row_step, rows, blocks, g, g_off, g_step,
                         g_row_step, out, out_off, out_step, accumulate)
    elif taps == 3 and size == 8:
        fma_slide_reduce(8, 3, a, a_off, a_step, a_row_step, rows, blocks, g, g_off, g_step,
                         g_row_step, out, out_off, out_step, accumulate)
    elif taps == 3 and size == 4:
        fma_slide_reduce(4, 3, a, a_off, a_step, a_row_step, rows, blocks, g, g_off, g_step,
                         g_row_step, out, out_off, out_step, accumulate)
    elif taps == 3 and size == 2:
        fma_slide_reduce(2, 3, a, a_off, a_step, a_row_step, rows, blocks, g, g_off, g_step,
                         g_row_step, out, out_off, out_step, accumulate)
    elif taps == 3 and size == 1:
        fma_slide_reduce(1, 3, a, a_off, a_step, a_row_step, rows, blocks, g, g_off, g_step,
                         g_row_step, out, out_off, out_step, accumulate)


@_jit
def _slide_weight_grad(padded, kh, kw, sh, oh, ow, g_flat, g_off, f, out, first):
    """One image's terms of a stride-1 weight gradient, for a window width in
    ``SLIDE_TAPS``: ``fma_slide_reduce`` per window row i, channel and vector of filters,
    over the output rows in blocks of pixels. ``first``: the image that starts the sums."""
    hp, wp, c = padded.shape
    flat = padded.reshape(hp * wp * c)
    for i in range(kh):
        for ch in range(c):
            for f0 in range(0, f, VECTOR_BYTES // padded.itemsize):
                q = 0
                for size in BLOCK_SIZES:
                    blocks = (ow - q) // size
                    if blocks > 0:
                        _slide_reduce_block(size, kw, flat, i * wp * c + q * c + ch, c,
                                            sh * wp * c, oh, blocks, g_flat, g_off + q * f + f0,
                                            f, ow * f, out, (i * kw * c + ch) * f + f0, c * f,
                                            not (first and q == 0))
                        q += blocks * size


@_jit
def direct_conv_act_weight_grad(x, grad, out, code, alpha, kh, kw, sh, sw, top, left, oh, ow,
                                per_group, partial, bias_partial, counter):
    """``direct_conv_weight_grad`` from ``dz = grad * f'(out)`` (relu or leaky_relu, as
    ``act_backward``), made an image at a time in a cache-sized buffer (the batch's ``dz``
    is never written to memory and read back); ``bias_partial[group]`` (float64) gets the
    column sums of the group's ``dz`` rows, in order."""
    n, c, h, width = x.shape
    f, rows, run = grad.shape[1], oh * ow, kw * c
    hp, wp, _ = _padded_shape(h, width, c, kh, kw, sh, sw, top, left, oh, ow)
    padded = _zeros_aligned((hp, wp, c), x.dtype)
    dz = _zeros_aligned((1, rows, f), grad.dtype)[0]
    dz_flat = dz.reshape(rows * f)
    zero, alpha = grad.dtype.type(0), grad.dtype.type(alpha)
    while True:
        group = _claim(counter)
        if group >= partial.shape[0]:
            break
        weights, sums = partial[group].reshape(kh * run * f), bias_partial[group]
        sums[:] = 0.0
        first, last = group * per_group, min((group + 1) * per_group, n)
        for b in range(first, last):
            g_image = grad[b * rows:(b + 1) * rows].reshape(rows * f)
            o_image = out[b * rows:(b + 1) * rows].reshape(rows * f)
            if code == RELU:
                for t in range(rows * f):
                    dz_flat[t] = g_image[t] if o_image[t] > zero else zero
            else:
                for t in range(rows * f):
                    dz_flat[t] = g_image[t] if o_image[t] > zero else g_image[t] * alpha
            for r in range(rows):
                row = dz[r]
                for j in range(f):
                    sums[j] += row[j]
            _image_weight_grad(x, b, top, left, padded, kh, kw, sh, sw, oh, ow, dz_flat, 0, f,
                               weights, b == first)


@_jit
def direct_conv_input_grad(g, w_flipped, kh, kw, top, left, oh, ow, dx, counter):
    """``matmul_col2im`` at stride 1 without a tile: the input gradient is the convolution of
    the output gradient, padded by kh-1-top rows above and kw-1-left columns on the left,
    with the flipped kernel ``w_flipped`` (kh*kw*F, C) in (i, j, f) rows (a width in
    ``SLIDE_TAPS``). dx (N, H, W, C) channels-last, C in whole vectors; one image a unit
    from ``counter``."""
    n, h, width, c = dx.shape
    f, rows = g.shape[1], oh * ow
    gh, gw = h + kh - 1, width + kw - 1
    padded = _zeros_aligned((gh, gw, f), g.dtype)
    flat, w_flat, dx_flat = padded.reshape(gh * gw * f), w_flipped.reshape(w_flipped.size), \
        dx.reshape(dx.size)
    r0, c0 = kh - 1 - top, kw - 1 - left
    while True:
        b = _claim(counter)
        if b >= n:
            break
        for p in range(oh):
            for q in range(ow):
                source, target = g[b * rows + p * ow + q], padded[r0 + p, c0 + q]
                for t in range(f):
                    target[t] = source[t]
        for y in range(h):
            _slide_row(flat, y * gw * f, kh, kw, gw * f, f, w_flat, c, dx_flat,
                       (b * h + y) * width * c, width)
