"""Pooling kernels of the numba engine: max (with its arg-max) and average, forward and back.

Every kernel takes the images of a batch ``per_unit`` at a time from a shared counter
(``threads.share_units``); each image's outputs are written by the thread that took it, so
the results are the same on any number of threads. Max-pooling compares with a plain ``>``
(branch-free selects; the common 2x2 window written out) and reports whether it saw a NaN;
only then does the engine rerun the NaN-aware kernel, whose extra tests cost several times
more. A convolution's output is channels-last in memory (its (N*OH*OW, F) rows seen as
NCHW); the ``_nhwc`` kernels pool it with the channel loop innermost and keep that layout for
their outputs, so the gradient reaches the convolution's backward pass in its rows' layout.
"""

from __future__ import annotations

from numba import njit

from .threads import unit

_jit = njit(cache=True, nogil=True, error_model="numpy")


@_jit
def max_pool_forward(x, ph, pw, sh, sw, nan_aware, per_unit, out, argmax, counter):
    """out, argmax (N, C, OH, OW): each window's maximum and its row-major position inside the
    window, the first one on ties. Returns True if any input is NaN (the result is then not
    NumPy's: run again ``nan_aware``, where NaN wins over numbers and the first NaN stays, as
    in NumPy's max/argmax)."""
    n, c, oh, ow = out.shape
    nan = False
    while True:
        b0, stop = unit(counter, per_unit, n)
        if b0 >= n:
            break
        for b in range(b0, stop):
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
                                if v > best or (nan_aware and v != v and best == best):
                                    best = v
                                    where = i * pw + j
                        out[b, ch, p, q] = best
                        argmax[b, ch, p, q] = where
    return nan


@_jit
def max_pool_forward_2x2(x, sh, sw, per_unit, out, argmax, counter):
    """``max_pool_forward`` for 2x2 windows, the comparisons written out."""
    n, c, oh, ow = out.shape
    nan = False
    while True:
        b0, stop = unit(counter, per_unit, n)
        if b0 >= n:
            break
        for b in range(b0, stop):
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
        b0, stop = unit(counter, per_unit, n)
        if b0 >= n:
            break
        for b in range(b0, stop):
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
    n, oh, ow, c = argmax.shape
    zero = dx.dtype.type(0)
    while True:
        b0, stop = unit(counter, per_unit, n)
        if b0 >= n:
            break
        for b in range(b0, stop):
            for p in range(oh):
                for q in range(ow):
                    where_row, grad_row = argmax[b, p, q], grad[b, p, q]
                    for i in range(ph):
                        for j in range(pw):
                            k, target = i * pw + j, dx[b, p * ph + i, q * pw + j]
                            for ch in range(c):
                                target[ch] = grad_row[ch] if where_row[ch] == k else zero


@_jit
def max_pool_backward(grad, argmax, ph, pw, sh, sw, per_unit, dx, counter):
    """dx (N, C, H, W), zeroed first, gets each gradient at its window's arg-max."""
    n, c, oh, ow = grad.shape
    while True:
        b0, stop = unit(counter, per_unit, n)
        if b0 >= n:
            break
        for b in range(b0, stop):
            dx[b] = 0
            for ch in range(c):
                for p in range(oh):
                    for q in range(ow):
                        k = argmax[b, ch, p, q]
                        dx[b, ch, p * sh + k // pw, q * sw + k % pw] += grad[b, ch, p, q]


@_jit
def max_pool_backward_nhwc(grad, argmax, row_of, col_of, sh, sw, per_unit, dx, counter):
    """``max_pool_backward`` on channels-last arrays: grad and argmax (N, OH, OW, C), dx
    (N, H, W, C); window position k is at row ``row_of[k]``, column ``col_of[k]``."""
    n, oh, ow, c = argmax.shape
    while True:
        b0, stop = unit(counter, per_unit, n)
        if b0 >= n:
            break
        for b in range(b0, stop):
            dx[b] = 0
            for p in range(oh):
                for q in range(ow):
                    where_row, grad_row = argmax[b, p, q], grad[b, p, q]
                    for ch in range(c):
                        k = where_row[ch]
                        dx[b, p * sh + row_of[k], q * sw + col_of[k], ch] += grad_row[ch]


@_jit
def avg_pool_forward(x, ph, pw, sh, sw, per_unit, out, counter):
    """out (N, C, OH, OW): each window's sum in row-major order (as the reference adds its
    slices), divided by the window size."""
    n, c, oh, ow = out.shape
    count = x.dtype.type(ph * pw)
    while True:
        b0, stop = unit(counter, per_unit, n)
        if b0 >= n:
            break
        for b in range(b0, stop):
            for ch in range(c):
                for p in range(oh):
                    for q in range(ow):
                        h0, w0 = p * sh, q * sw
                        total = x[b, ch, h0, w0]
                        for k in range(1, ph * pw):
                            total += x[b, ch, h0 + k // pw, w0 + k % pw]
                        out[b, ch, p, q] = total / count


@_jit
def avg_pool_backward(grad, ph, pw, sh, sw, per_unit, dx, counter):
    """dx (N, C, H, W), zeroed first, gets each gradient divided by the window size over its
    window."""
    n, c, oh, ow = grad.shape
    count = grad.dtype.type(ph * pw)
    while True:
        b0, stop = unit(counter, per_unit, n)
        if b0 >= n:
            break
        for b in range(b0, stop):
            dx[b] = 0
            for ch in range(c):
                for p in range(oh):
                    for q in range(ow):
                        share = grad[b, ch, p, q] / count
                        for i in range(ph):
                            for j in range(pw):
                                dx[b, ch, p * sh + i, q * sw + j] += share
