"""Numba kernels for convolution and pooling behind the ``numba`` engine.

Same rules as ``numba_kernels.py`` (serial, ``cache=True``, no ``fastmath``);
shapes and layouts as in ``base.py``: images NCHW, ``cols`` rows in
(n, oh, ow) order and columns in (c, i, j) order. Each kernel makes one pass
and writes straight into the output the wrapper allocated: ``im2col`` copies
each window's in-bounds run of a row and zero-fills the padding, with no
padded copy of the input; ``col2im`` and the pooling backward passes add
into a zeroed ``dx`` in one sweep over their input. Pooling kernels take
images of any memory layout (a convolution's output is a transposed view),
so nothing is copied before them.
"""

from __future__ import annotations

from numba import njit

_jit = njit(cache=True, nogil=True, error_model="numpy")


@_jit
def im2col(x, kh, kw, sh, sw, top, left, oh, ow, cols):
    """x (N, C, H, W) -> cols (N*OH*OW, C*kh*kw); padding reads as zero."""
    n, c, h, w = x.shape
    zero = x.dtype.type(0)
    for b in range(n):
        for p in range(oh):
            for q in range(ow):
                row = (b * oh + p) * ow + q
                w0 = q * sw - left
                j_lo = max(0, -w0)  # window columns inside the image: j_lo .. j_hi - 1
                j_hi = min(kw, w - w0)
                for ch in range(c):
                    for i in range(kh):
                        base = (ch * kh + i) * kw
                        hi = p * sh - top + i
                        if hi < 0 or hi >= h or j_lo >= j_hi:
                            for j in range(kw):
                                cols[row, base + j] = zero
                            continue
                        for j in range(j_lo):
                            cols[row, base + j] = zero
                        for j in range(j_lo, j_hi):
                            cols[row, base + j] = x[b, ch, hi, w0 + j]
                        for j in range(j_hi, kw):
                            cols[row, base + j] = zero


@_jit
def col2im(cols, kh, kw, sh, sw, top, left, oh, ow, dx):
    """Add every row of cols (N*OH*OW, C*kh*kw) back into dx (N, C, H, W), which is zeroed first."""
    n, c, h, w = dx.shape
    dx[:] = 0
    for b in range(n):
        for p in range(oh):
            for q in range(ow):
                row = (b * oh + p) * ow + q
                w0 = q * sw - left
                j_lo = max(0, -w0)
                j_hi = min(kw, w - w0)
                for ch in range(c):
                    for i in range(kh):
                        hi = p * sh - top + i
                        if hi < 0 or hi >= h:
                            continue
                        base = (ch * kh + i) * kw
                        for j in range(j_lo, j_hi):
                            dx[b, ch, hi, w0 + j] += cols[row, base + j]


@_jit
def max_pool_forward(x, ph, pw, sh, sw, out, argmax):
    """out, argmax (N, C, OH, OW): each window's maximum and its row-major position inside the
    window; the first one on ties, and the first NaN if there is one (as NumPy's max/argmax)."""
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
                            # v != v: NaN wins over numbers, and the first NaN stays.
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
