"""Window kernels of the numba engine: im2col and col2im, and the convolution's products as
tiled GEMMs (any shape, any CPU).

Shapes and layouts as in ``base.py``: images NCHW, ``cols`` rows in (n, oh, ow) order and
columns in (c, i, j) order. Every kernel takes its units (images, tiles, groups of images)
from a shared counter (``threads.share_units``) and writes straight into the output the
engine allocated; ``col2im`` adds into a zeroed image in one sweep over its input. Kernels
take images of any memory layout (a convolution's output is a transposed view), so nothing
is copied before them.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .blas import N, T, gemm
from .kernels import LEAKY_RELU, RELU
from .threads import claim, unit

_jit = njit(cache=True, nogil=True, error_model="numpy")


def images_per_tile(rows_per_image: int, columns: int) -> int:
    """Images whose window rows one tile holds: about 256 KB of them, at least one image."""
    return max(1, TILE_ELEMENTS // (rows_per_image * columns))


#: Elements of a window tile (float32: 256 KB, within a core's L2 cache).
TILE_ELEMENTS = 1 << 16
#: Windows with rows shorter than this (kw * C values) are gathered into a transposed tile.
SHORT_RUN = 16
#: Images per partial sum of a weight gradient: a fixed grouping, whatever the thread count
#: (small, as a group is the unit threads take).
IMAGES_PER_GROUP = 4


@_jit
def im2col(x, kh, kw, sh, sw, top, left, oh, ow, per_unit, cols, counter):
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
    while True:
        b0, stop = unit(counter, per_unit, n)
        if b0 >= n:
            break
        for b in range(b0, stop):
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
def col2im(cols, kh, kw, sh, sw, top, left, oh, ow, per_unit, dx, counter):
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
    while True:
        b0, stop = unit(counter, per_unit, n)
        if b0 >= n:
            break
        for b in range(b0, stop):
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


# ------------------------------------------------- convolution as tiled GEMMs
# ``im2col_matmul`` and friends never build the whole (N*OH*OW, C*kh*kw) window matrix (40 MB
# for the MNIST CNN's second convolution at batch 128, written and read twice a step). They
# build it a tile of a few images at a time, in a buffer that stays in the core's cache, and
# multiply each tile at once with BLAS ``gemm`` called from compiled code (``gemm``: NumPy's
# own OpenBLAS, see ``blas``). A tile's columns are in (i, j, c) order, not
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
                # Copies between views indexed from 0 vectorize (offsets added to the
                # indices do not: Numba's negative-index handling stops it).
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
    long run, which vectorises (a loop per row of 16 values does not)."""
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
        t0 = claim(counter) * per_tile
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
        group = claim(counter)
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
        t0 = claim(counter) * per_tile
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
    ``run_rows`` at a time as one long run (which vectorises, where a loop per row of 16
    values does not), summed into a run of partial sums, whose rows are then added into
    ``partial[blk]`` in order."""
    n, k = grad.shape
    zero, alpha = grad.dtype.type(0), grad.dtype.type(alpha)
    g, o, r = grad.reshape(n * k), out.reshape(n * k), res.reshape(n * k)
    run = run_rows * k
    sums = np.empty(run)
    while True:
        blk = claim(counter)
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
