"""Direct convolutions of the numba engine: the convolution's sums without any window matrix.

Each output row's windows are read straight from a padded channels-last image by the
register-blocked vector loops of ``simd`` (a window row of kw*C values is contiguous there,
and the next pixel's starts sw*C values later). They need the filters (forward, weight
gradient) or the channels (input gradient) in whole vectors; the engine's implementation
table (``windows``) picks them then and the tiled GEMMs of ``window_kernels`` otherwise.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .kernels import RELU
from .simd import BLOCK_SIZES, SLIDE_REDUCE_SIZES, SLIDE_TAPS, VECTOR_BYTES, fma_reduce, fma_rows
from .simd_slide import fma_slide, fma_slide_reduce
from .threads import claim
from .window_kernels import SHORT_RUN, _bias_act_rows, _pad_channels_last, _padded_shape

_jit = njit(cache=True, nogil=True, error_model="numpy")

@_jit
def _zeros_aligned(shape, dtype):
    """Zeros of ``shape`` starting on a 64-byte boundary (Numba's own start on 32), so vector
    loads of whole rows never straddle two cache lines."""
    size = shape[0] * shape[1] * shape[2]
    raw = np.zeros(size + VECTOR_BYTES, dtype)
    start = (-raw.ctypes.data % VECTOR_BYTES) // raw.itemsize
    return raw[start:start + size].reshape(shape)


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
                fma_rows(size, 2 if two else 1, a, a_off + q * a_step, a_step, i_count, i_step,
                         t_count, b, f0, f, out, out_off + q * f + f0, f, 0)
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
                fma_reduce(size, 2 if two else 1, a, a_off + k, a_step, a_row_step, oh, ow, g,
                           g_off + f0, f, ow * f, out, out_off + k * f + f0, f, accumulate, 0)
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
        b = claim(counter)
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
    ``SLIDE_TAPS`` take ``fma_slide_reduce`` (with 16 channels ``fma_reduce`` is faster),
    the others ``fma_reduce``."""
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
        group = claim(counter)
        if group >= partial.shape[0]:
            break
        out = partial[group].reshape(kh * run * f)
        first, last = group * per_group, min((group + 1) * per_group, n)
        for b in range(first, last):
            _image_weight_grad(x, b, top, left, padded, kh, kw, sh, sw, oh, ow, g_flat,
                               b * rows * f, f, out, b == first)


@_jit
def _slide_row(a, a_off, kh, kw, i_step, c, b, f, out, out_off, pixels):
    """One stride-1 output row of ``pixels`` pixels and ``f`` columns from a padded
    channels-last image (``c`` channels): ``fma_slide`` over blocks of pixels, a vector of
    columns at a time."""
    for f0 in range(0, f, VECTOR_BYTES // a.itemsize):
        q = 0
        for size in BLOCK_SIZES:
            while pixels - q >= size:
                fma_slide(size, kw, 1, a, a_off + q * c, c, kh, i_step, c, b, f0, f, out,
                          out_off + q * f + f0, f)
                q += size


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
                for size in SLIDE_REDUCE_SIZES:
                    blocks = (ow - q) // size
                    if blocks > 0:
                        fma_slide_reduce(size, kw, flat, i * wp * c + q * c + ch, c,
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
        group = claim(counter)
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
        b = claim(counter)
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
