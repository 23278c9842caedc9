"""Register-blocked multiply-add loops written as explicit 512-bit vectors, for the direct
convolutions in ``direct_kernels``.

Numba's loops vectorise one at a time; a small matrix product needs more than that: a
block of outputs held in vector registers for the whole sum, each input value loaded once
and broadcast against a row of weights. LLVM keeps such a block in registers only when it
is written out, so these intrinsics emit it: a block of accumulators of one 64-byte
vector each (16 float32 or 8 float64 lanes), with the weights and inputs they need within
AVX-512's 32 registers (their speed against OpenBLAS is in ``bench/RESULTS.md``).

All take flat arrays and element offsets; the caller guarantees every index is in bounds
(nothing here checks). Sums run over their terms in a fixed order, with one fused
multiply-add per term, so results do not depend on the thread that computes them.

Each intrinsic takes its block sizes as literals (one block) or as runtime integers, for
which it emits every block of its table behind one switch: the register-block ladder is
generated, not written out. Numba's cache of the kernels that use these does not notice
edits here (it follows each kernel's own file): after changing one, delete
``__pycache__`` in this folder.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: Accumulators one block may hold (the rest of the 32 vector registers take the weights
#: and the broadcast input).
MAX_ACCUMULATORS = 28
#: Bytes in one vector register.
VECTOR_BYTES = 64


def wide_vectors() -> bool:
    """Whether the kernels are compiled for a CPU with AVX-512 (32 registers of 64 bytes),
    which these blocks are sized for: the host, unless ``NUMBA_CPU_NAME`` names another."""
    import numba
    from llvmlite import binding

    name = numba.config.CPU_NAME
    if name not in (None, "host"):
        return False
    features = numba.config.CPU_FEATURES
    if features:
        return "+avx512f" in features.split(",")
    return bool(binding.get_host_cpu_features().get("avx512f"))


def _vector_ops(context, builder, dtype):
    """(vector type, fused multiply-add, broadcast, load, store) for ``dtype``."""
    scalar = context.get_value_type(dtype)
    bits = dtype.bitwidth
    width = VECTOR_BYTES // (bits // 8)
    vector = ir.VectorType(scalar, width)
    suffix = f"v{width}f{bits}"
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3),
                                         f"llvm.fma.{suffix}")
    align = bits // 8
    zeros = ir.Constant(ir.VectorType(ir.IntType(32), width), [0] * width)

    def broadcast(value):
        one = builder.insert_element(ir.Constant(vector, ir.Undefined), value,
                                     ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(one, ir.Constant(vector, ir.Undefined), zeros)

    def load(base, index):
        return builder.load(builder.bitcast(builder.gep(base, [index]), vector.as_pointer()),
                            align=align)

    def store(value, base, index):
        builder.store(value, builder.bitcast(builder.gep(base, [index]), vector.as_pointer()),
                      align=align)

    return vector, width, (lambda a, b, c: builder.call(fma, [a, b, c])), broadcast, load, store


def _arguments(context, builder, signature, args, arrays, integers):
    """The data pointers of the array arguments at positions ``arrays`` and the integer
    arguments at ``integers`` as 64-bit values."""
    kinds = signature.args
    return ([context.make_array(kinds[k])(context, builder, args[k]).data for k in arrays],
            [context.cast(builder, args[k], kinds[k], types.int64) for k in integers])


def _block_offsets(builder, base, step, rows, vectors, width):
    """``base + r*step + v*width`` for the ``rows`` x ``vectors`` vectors of an output block."""
    i64 = ir.IntType(64)
    return [[builder.add(builder.add(base, builder.mul(step, ir.Constant(i64, r))),
                         ir.Constant(i64, v * width)) for v in range(vectors)]
            for r in range(rows)]


def _accumulators(builder, vector, accumulate, load, out_ptr, out_at):
    """One register-sized slot per output vector of the block (LLVM keeps them in
    registers), starting from ``out`` where ``accumulate`` (an i1 value; None: never),
    else from zero."""
    acc = [[cgutils.alloca_once(builder, vector) for _ in row] for row in out_at]

    def zero():
        for slots in acc:
            for slot in slots:
                builder.store(ir.Constant(vector, None), slot)

    if accumulate is None:
        zero()
        return acc
    with builder.if_else(accumulate) as (then, otherwise):
        with then:
            for slots, at in zip(acc, out_at):
                for slot, index in zip(slots, at):
                    builder.store(load(out_ptr, index), slot)
        with otherwise:
            zero()
    return acc


def _float_arrays(*arrays):
    first = arrays[0]
    return (isinstance(first, types.Array) and first.dtype in (types.float32, types.float64)
            and all(isinstance(a, types.Array) and a.dtype == first.dtype for a in arrays))


#: Output blocks the kernels cut rows into (the largest first, any remainder in at most four
#: more blocks: 13 = 8 + 4 + 1), and the window widths with a sliding-window block.
BLOCK_SIZES = (14, 8, 4, 2, 1)
SLIDE_TAPS = (5, 3)
#: The blocks each intrinsic is generated for when its sizes come at run time:
#: (pixels or values, vectors), (pixels, taps, vectors) and (pixels, taps).
ROWS_BLOCKS = tuple((size, vectors) for size in BLOCK_SIZES for vectors in (1, 2))
SLIDE_BLOCKS = tuple((size, taps, 1) for size in BLOCK_SIZES for taps in SLIDE_TAPS)
SLIDE_REDUCE_BLOCKS = tuple((size, taps) for size in BLOCK_SIZES for taps in SLIDE_TAPS)


def _sizes(*sizes, table):
    """The literal block sizes as a tuple; None where any is a runtime integer (then every
    entry of ``table`` is emitted, and the call picks one at run time); False for anything
    else, which is refused."""
    if all(isinstance(v, types.IntegerLiteral) for v in sizes):
        return tuple(v.literal_value for v in sizes)
    if all(isinstance(v, types.Integer) for v in sizes):
        return None
    return False


def _emit_blocks(context, builder, signature, args, table, positions, emit):
    """``emit(*block)`` for the block of ``table`` that the runtime integers at ``positions``
    of ``args`` name, through one switch: the register-block ladder, generated from the
    table. Other values do nothing."""
    i64 = ir.IntType(64)
    key = ir.Constant(i64, 0)
    for k in positions:
        value = context.cast(builder, args[k], signature.args[k], types.int64)
        key = builder.add(builder.mul(key, ir.Constant(i64, 256)), value)
    end = builder.append_basic_block("blocks.end")
    switch = builder.switch(key, end)
    for block in table:
        number = 0
        for v in block:
            number = number * 256 + v
        case = builder.append_basic_block(f"block.{'x'.join(map(str, block))}")
        switch.add_case(ir.Constant(i64, number), case)
        builder.position_at_end(case)
        emit(*block)
        builder.branch(end)
    builder.position_at_end(end)


def _intrinsic_body(sizes, table, positions, emit):
    """The codegen of an intrinsic whose block sizes are literal (one block) or runtime
    integers (every block of ``table``, chosen at run time)."""

    def codegen(context, builder, signature, args):
        if sizes is None:
            _emit_blocks(context, builder, signature, args, table, positions,
                         lambda *block: emit(context, builder, signature, args, *block))
        else:
            emit(context, builder, signature, args, *sizes)
        return context.get_dummy_value()

    return codegen


@intrinsic(prefer_literal=True)
def fma_rows(typingctx, pixels, vectors, a, a_off, a_step, i_count, i_step, t_count, b, b_off,
             b_step, out, out_off, out_step):
    """For ``px < pixels`` and ``v < vectors`` (literal block sizes), with L lanes:

        out[out_off + px*out_step + v*L + l] =
            sum over i < i_count, t < t_count of
                a[a_off + i*i_step + px*a_step + t] * b[b_off + (i*t_count + t)*b_step + v*L + l]

    summed over i, then t. A convolution's output row: ``a`` a padded channels-last
    image, each pixel's window i*i_step + t, ``b`` the weights in (i, j, c) rows."""
    sizes = _sizes(pixels, vectors, table=ROWS_BLOCKS)
    if sizes is False or not _float_arrays(a, b, out):
        return None
    if sizes and not (min(sizes) >= 1 and sizes[0] * sizes[1] <= MAX_ACCUMULATORS):
        return None
    sig = types.void(pixels, vectors, a, a_off, a_step, i_count, i_step, t_count, b, b_off,
                     b_step, out, out_off, out_step)

    def emit(context, builder, signature, args, p_count, v_count):
        kinds = signature.args
        i64 = ir.IntType(64)
        vector, width, fma, broadcast, load, store = _vector_ops(context, builder,
                                                                 kinds[2].dtype)
        (a_ptr, b_ptr, out_ptr), (a_off, a_step, i_count, i_step, t_count, b_off, b_step,
                                  out_off, out_step) = _arguments(
            context, builder, signature, args, (2, 8, 11), (3, 4, 5, 6, 7, 9, 10, 12, 13))
        out_at = _block_offsets(builder, out_off, out_step, p_count, v_count, width)
        acc = _accumulators(builder, vector, None, load, out_ptr, out_at)
        pixel_offsets = [builder.mul(a_step, ir.Constant(i64, px)) for px in range(p_count)]
        with cgutils.for_range(builder, i_count) as outer:
            a_row = builder.add(a_off, builder.mul(outer.index, i_step))
            b_row = builder.add(b_off, builder.mul(builder.mul(outer.index, t_count), b_step))
            with cgutils.for_range(builder, t_count) as inner:
                t = inner.index
                b_at = builder.add(b_row, builder.mul(t, b_step))
                weights = [load(b_ptr, builder.add(b_at, ir.Constant(i64, v * width)))
                           for v in range(v_count)]
                a_at = builder.add(a_row, t)
                for px in range(p_count):
                    value = broadcast(builder.load(builder.gep(a_ptr, [
                        builder.add(a_at, pixel_offsets[px])])))
                    for v in range(v_count):
                        builder.store(fma(value, weights[v], builder.load(acc[px][v])),
                                      acc[px][v])
        for px in range(p_count):
            for v in range(v_count):
                store(builder.load(acc[px][v]), out_ptr, out_at[px][v])

    return sig, _intrinsic_body(sizes, ROWS_BLOCKS, (0, 1), emit)


@intrinsic(prefer_literal=True)
def fma_reduce(typingctx, values, vectors, a, a_off, a_step, a_row_step, rows, cols, g, g_off,
               g_step, g_row_step, out, out_off, out_step, accumulate):
    """For ``k < values`` and ``v < vectors`` (literal block sizes), with L lanes:

        out[out_off + k*out_step + v*L + l] (+)=
            sum over r < rows, s < cols of
                a[a_off + r*a_row_step + s*a_step + k] * g[g_off + r*g_row_step + s*g_step + v*L + l]

    summed over r, then s, onto the values already in ``out`` where ``accumulate``. A
    convolution's weight gradient: ``a`` a padded channels-last image, ``g`` the output
    gradient's rows of that image."""
    sizes = _sizes(values, vectors, table=ROWS_BLOCKS)
    if sizes is False or not _float_arrays(a, g, out):
        return None
    if sizes and not (min(sizes) >= 1 and sizes[0] * sizes[1] <= MAX_ACCUMULATORS):
        return None
    sig = types.void(values, vectors, a, a_off, a_step, a_row_step, rows, cols, g, g_off,
                     g_step, g_row_step, out, out_off, out_step, accumulate)

    def emit(context, builder, signature, args, k_count, v_count):
        kinds = signature.args
        i64 = ir.IntType(64)
        vector, width, fma, broadcast, load, store = _vector_ops(context, builder,
                                                                 kinds[2].dtype)
        (a_ptr, g_ptr, out_ptr), (a_off, a_step, a_row_step, rows, cols, g_off, g_step,
                                  g_row_step, out_off, out_step) = _arguments(
            context, builder, signature, args, (2, 8, 12), (3, 4, 5, 6, 7, 9, 10, 11, 13, 14))
        accumulate = context.cast(builder, args[15], kinds[15], types.boolean)
        out_at = _block_offsets(builder, out_off, out_step, k_count, v_count, width)
        acc = _accumulators(builder, vector, accumulate, load, out_ptr, out_at)
        with cgutils.for_range(builder, rows) as outer:
            a_row = builder.add(a_off, builder.mul(outer.index, a_row_step))
            g_row = builder.add(g_off, builder.mul(outer.index, g_row_step))
            with cgutils.for_range(builder, cols) as inner:
                s = inner.index
                g_at = builder.add(g_row, builder.mul(s, g_step))
                grads = [load(g_ptr, builder.add(g_at, ir.Constant(i64, v * width)))
                         for v in range(v_count)]
                a_at = builder.add(a_row, builder.mul(s, a_step))
                for k in range(k_count):
                    value = broadcast(builder.load(builder.gep(a_ptr, [
                        builder.add(a_at, ir.Constant(i64, k))])))
                    for v in range(v_count):
                        builder.store(fma(value, grads[v], builder.load(acc[k][v])), acc[k][v])
        for k in range(k_count):
            for v in range(v_count):
                store(builder.load(acc[k][v]), out_ptr, out_at[k][v])

    return sig, _intrinsic_body(sizes, ROWS_BLOCKS, (0, 1), emit)


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
    if sizes and not (min(sizes) >= 1 and sizes[2] * (sizes[0] + sizes[1]) + 1 <= 32):
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
    if sizes and not (min(sizes) >= 1 and sizes[0] + 2 * sizes[1] + 1 <= 32):
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
