"""Sliding-window register blocks for stride-1 windows 3 or 5 wide (``simd``'s vectors and
dispatch): each input value is loaded once and multiplied by every tap it meets."""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .simd import (REGISTERS, SLIDE_BLOCKS, SLIDE_REDUCE_BLOCKS, _accumulators, _arguments,
                   _block_offsets, _float_arrays, _intrinsic_body, _sizes, _vector_ops)


@intrinsic(prefer_literal=True)
def fma_slide(typingctx, pixels, taps, vectors, a, a_off, a_step, i_count, i_step, c_count, b,
              b_off, b_step, out, out_off, out_step):
    """``fma_rows`` for a stride-1 window row of ``taps`` pixels (literal), with L lanes:

        out[out_off + px*out_step + v*L + l] =
            sum over i < i_count, c < c_count, j < taps of
                a[a_off + i*i_step + (px + j)*a_step + c]
                * b[b_off + ((i*taps + j)*c_count + c)*b_step + v*L + l]

    summed over i, then c, then j. Neighbouring pixels' windows overlap, so each input value
    is loaded once and multiplied by all ``taps`` weights it meets (held in registers):
    pixels + taps - 1 loads and taps * vectors weight loads for pixels * taps * vectors
    multiply-adds, against one load per multiply-add in ``fma_rows`` when ``vectors`` is 1."""
    sizes = _sizes(pixels, taps, vectors, table=SLIDE_BLOCKS)
    if sizes is False or not _float_arrays(a, b, out):
        return None
    if sizes and not (min(sizes) >= 1 and sizes[2] * (sizes[0] + sizes[1]) + 1 <= REGISTERS):
        return None
    sig = types.void(pixels, taps, vectors, a, a_off, a_step, i_count, i_step, c_count, b, b_off,
                     b_step, out, out_off, out_step)

    def emit(context, builder, signature, args, p_count, j_count, v_count):
        kinds = signature.args
        i64 = ir.IntType(64)
        vector, width, fma, broadcast, load, store = _vector_ops(context, builder,
                                                                 kinds[3].dtype)
        (a_ptr, b_ptr, out_ptr), (a_off, a_step, i_count, i_step, c_count, b_off, b_step,
                                  out_off, out_step) = _arguments(
            context, builder, signature, args, (3, 9, 12), (4, 5, 6, 7, 8, 10, 11, 13, 14))
        out_at = _block_offsets(builder, out_off, out_step, p_count, v_count, width)
        acc = _accumulators(builder, vector, None, load, out_ptr, out_at)
        pixel_offsets = [builder.mul(a_step, ir.Constant(i64, s))
                         for s in range(p_count + j_count - 1)]
        tap_step = builder.mul(c_count, b_step)  # from weight (i, j, c) to (i, j + 1, c)
        with cgutils.for_range(builder, i_count) as outer:
            a_row = builder.add(a_off, builder.mul(outer.index, i_step))
            b_row = builder.add(b_off, builder.mul(builder.mul(outer.index, ir.Constant(
                i64, j_count)), tap_step))
            with cgutils.for_range(builder, c_count) as inner:
                c = inner.index
                b_at = builder.add(b_row, builder.mul(c, b_step))
                weights = [[load(b_ptr, builder.add(builder.add(b_at, builder.mul(
                    tap_step, ir.Constant(i64, j))), ir.Constant(i64, v * width)))
                    for v in range(v_count)] for j in range(j_count)]
                a_at = builder.add(a_row, c)
                for s in range(p_count + j_count - 1):
                    value = broadcast(builder.load(builder.gep(a_ptr, [
                        builder.add(a_at, pixel_offsets[s])])))
                    for j in range(j_count):
                        px = s - j
                        if 0 <= px < p_count:
                            for v in range(v_count):
                                builder.store(fma(value, weights[j][v],
                                                  builder.load(acc[px][v])), acc[px][v])
        for px in range(p_count):
            for v in range(v_count):
                store(builder.load(acc[px][v]), out_ptr, out_at[px][v])

    return sig, _intrinsic_body(sizes, SLIDE_BLOCKS, (0, 1, 2), emit)


@intrinsic(prefer_literal=True)
def fma_slide_reduce(typingctx, pixels, taps, a, a_off, a_step, a_row_step, rows, blocks, g,
                     g_off, g_step, g_row_step, out, out_off, out_step, accumulate):
    """``fma_reduce`` for a stride-1 window row of ``taps`` pixels (literal), one vector of
    columns, over ``rows`` rows of ``blocks`` blocks of ``pixels`` (literal) pixels each:

        out[out_off + j*out_step + l] (+)=
            sum over r < rows, s < blocks*pixels of
                a[a_off + r*a_row_step + (s + j)*a_step] * g[g_off + r*g_row_step + s*g_step + l]

    The block's gradient rows stay in registers while each input value is loaded once and
    multiplied into every tap it meets. Each tap sums even and odd pixels of a block in two
    accumulators (twice the multiply-adds in flight), added once at the end."""
    sizes = _sizes(pixels, taps, table=SLIDE_REDUCE_BLOCKS)
    if sizes is False or not _float_arrays(a, g, out):
        return None
    if sizes and not (min(sizes) >= 1 and sizes[0] + 2 * sizes[1] + 1 <= REGISTERS):
        return None
    sig = types.void(pixels, taps, a, a_off, a_step, a_row_step, rows, blocks, g, g_off, g_step,
                     g_row_step, out, out_off, out_step, accumulate)

    def emit(context, builder, signature, args, p_count, j_count):
        kinds = signature.args
        i64 = ir.IntType(64)
        vector, width, fma, broadcast, load, store = _vector_ops(context, builder,
                                                                 kinds[2].dtype)
        (a_ptr, g_ptr, out_ptr), (a_off, a_step, a_row_step, rows, blocks, g_off, g_step,
                                  g_row_step, out_off, out_step) = _arguments(
            context, builder, signature, args, (2, 8, 12), (3, 4, 5, 6, 7, 9, 10, 11, 13, 14))
        accumulate = context.cast(builder, args[15], kinds[15], types.boolean)
        out_at = _block_offsets(builder, out_off, out_step, j_count, 1, width)
        first = _accumulators(builder, vector, accumulate, load, out_ptr, out_at)
        second = _accumulators(builder, vector, None, load, out_ptr, out_at)
        sums = [(first[j][0], second[j][0]) for j in range(j_count)]
        block = ir.Constant(i64, p_count)
        with cgutils.for_range(builder, rows) as outer:
            a_row = builder.add(a_off, builder.mul(outer.index, a_row_step))
            g_row = builder.add(g_off, builder.mul(outer.index, g_row_step))
            with cgutils.for_range(builder, blocks) as inner:
                s0 = builder.mul(inner.index, block)
                g_at = builder.add(g_row, builder.mul(s0, g_step))
                grads = [load(g_ptr, builder.add(g_at, builder.mul(g_step, ir.Constant(i64, px))))
                         for px in range(p_count)]
                a_at = builder.add(a_row, builder.mul(s0, a_step))
                for s in range(p_count + j_count - 1):
                    value = broadcast(builder.load(builder.gep(a_ptr, [
                        builder.add(a_at, builder.mul(a_step, ir.Constant(i64, s)))])))
                    for j in range(j_count):
                        px = s - j
                        if 0 <= px < p_count:
                            slot = sums[j][px % 2]
                            builder.store(fma(value, grads[px], builder.load(slot)), slot)
        for j in range(j_count):
            store(builder.fadd(builder.load(sums[j][0]), builder.load(sums[j][1])), out_ptr,
                  out_at[j][0])

    return sig, _intrinsic_body(sizes, SLIDE_REDUCE_BLOCKS, (0, 1), emit)
