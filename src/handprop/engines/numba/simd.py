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

#: Named CPUs Numba may target (``NUMBA_CPU_NAME``) by the vector extension they have.
AVX512_CPUS = frozenset({"skylake-avx512", "cascadelake", "cooperlake", "cannonlake",
                         "icelake-client", "icelake-server", "tigerlake", "rocketlake",
                         "sapphirerapids", "emeraldrapids", "graniterapids", "znver4", "znver5",
                         "x86-64-v4"})
AVX2_CPUS = frozenset({"haswell", "broadwell", "skylake", "alderlake", "raptorlake",
                       "meteorlake", "arrowlake", "lunarlake", "znver1", "znver2", "znver3",
                       "bdver4", "x86-64-v3"})


def target_isa() -> str:
    """The vector extension the kernels are compiled for: ``"avx512"`` (32 registers of 64
    bytes), ``"avx2"`` (16 of 32, with FMA) or ``""`` (neither: no vector kernels). The host
    CPU, unless ``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES`` name another target."""
    import numba
    from llvmlite import binding

    name, features = numba.config.CPU_NAME, numba.config.CPU_FEATURES
    if features:
        flags = set(features.split(","))
    elif name in (None, "host"):
        flags = {f"+{k}" for k, on in binding.get_host_cpu_features().items() if on}
    else:
        return "avx512" if name in AVX512_CPUS else "avx2" if name in AVX2_CPUS else ""
    if "+avx512f" in flags:
        return "avx512"
    return "avx2" if {"+avx2", "+fma"} <= flags else ""


def wide_vectors() -> bool:
    """Whether the kernels are compiled for a CPU with AVX-512."""
    return target_isa() == "avx512"


def vector_kernels() -> bool:
    """Whether the target has the vector extension (AVX2 or AVX-512) these kernels need."""
    return target_isa() != ""


ISA = target_isa()
#: Bytes in one vector register, and the registers a block may use.
VECTOR_BYTES, REGISTERS = (64, 32) if ISA == "avx512" else (32, 16)
#: Accumulators one block may hold (the other registers take the weights and the broadcast).
MAX_ACCUMULATORS = REGISTERS - 4


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


def _masked_ops(builder, vector, width, lanes):
    """(masked load, masked store) of the first ``lanes`` (a runtime i64, 1..width-1) lanes of
    a vector; the other lanes read as zero and are not written."""
    i64, i32 = ir.IntType(64), ir.IntType(32)
    index_type, flags = ir.VectorType(i64, width), ir.VectorType(ir.IntType(1), width)
    splat = builder.shuffle_vector(
        builder.insert_element(ir.Constant(index_type, ir.Undefined), lanes, ir.Constant(i32, 0)),
        ir.Constant(index_type, ir.Undefined), ir.Constant(ir.VectorType(i32, width), [0] * width))
    mask = builder.icmp_unsigned("<", ir.Constant(index_type, list(range(width))), splat)
    pointer = vector.as_pointer()
    name = f"p0v{width}{'f32' if vector.element == ir.FloatType() else 'f64'}"
    load_fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
        vector, [pointer, i32, flags, vector]), f"llvm.masked.load.{vector_suffix(vector)}.{name}")
    store_fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
        ir.VoidType(), [vector, pointer, i32, flags]),
        f"llvm.masked.store.{vector_suffix(vector)}.{name}")
    align = ir.Constant(i32, 4 if vector.element == ir.FloatType() else 8)

    def load(base, index):
        return builder.call(load_fn, [builder.bitcast(builder.gep(base, [index]), pointer), align,
                                      mask, ir.Constant(vector, None)])

    def store(value, base, index):
        builder.call(store_fn, [value, builder.bitcast(builder.gep(base, [index]), pointer),
                                align, mask])

    return load, store


def vector_suffix(vector) -> str:
    return f"v{vector.count}{'f32' if vector.element == ir.FloatType() else 'f64'}"


def _tail_versions(context, builder, signature, args, position, body):
    """``body(load_last, store_last)`` twice behind one branch: plain loads and stores where the
    integer at ``position`` of ``args`` is 0 (every lane of the block's last vector is in
    bounds), else masked ones for that many lanes of it."""
    tail = context.cast(builder, args[position], signature.args[position], types.int64)
    vector, width, _, _, load, store = _vector_ops(context, builder, signature.args[2].dtype)
    with builder.if_else(builder.icmp_signed("==", tail, ir.Constant(ir.IntType(64), 0))) as (
            full, part):
        with full:
            body(load, store)
        with part:
            body(*_masked_ops(builder, vector, width, tail))


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


def _accumulators(builder, vector, accumulate, loads, out_ptr, out_at):
    """One register-sized slot per output vector of the block (LLVM keeps them in
    registers), starting from ``out`` where ``accumulate`` (an i1 value; None: never),
    else from zero; ``loads`` reads each vector of a row (a function, or one per vector)."""
    acc = [[cgutils.alloca_once(builder, vector) for _ in row] for row in out_at]
    if callable(loads):
        loads = [loads] * len(out_at[0])

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
                for slot, index, load in zip(slots, at, loads):
                    builder.store(load(out_ptr, index), slot)
        with otherwise:
            zero()
    return acc


def _float_arrays(*arrays):
    first = arrays[0]
    return (isinstance(first, types.Array) and first.dtype in (types.float32, types.float64)
            and all(isinstance(a, types.Array) and a.dtype == first.dtype for a in arrays))


#: Output blocks the kernels cut rows into (the largest first, any remainder in at most
#: three or four more blocks), sized for the target's registers, and the window widths with
#: a sliding-window block.
BLOCK_SIZES = (14, 8, 4, 2, 1) if ISA == "avx512" else (6, 4, 2, 1)
SLIDE_REDUCE_SIZES = BLOCK_SIZES if ISA == "avx512" else (4, 2, 1)
SLIDE_TAPS = (5, 3)
#: The blocks each intrinsic is generated for when its sizes come at run time:
#: (pixels or values, vectors), (pixels, taps, vectors) and (pixels, taps).
ROWS_BLOCKS = tuple((size, vectors) for size in BLOCK_SIZES for vectors in (1, 2))
SLIDE_BLOCKS = tuple((size, taps, 1) for size in BLOCK_SIZES for taps in SLIDE_TAPS)
SLIDE_REDUCE_BLOCKS = tuple((size, taps) for size in SLIDE_REDUCE_SIZES for taps in SLIDE_TAPS)


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
             b_step, out, out_off, out_step, tail):
    """For ``px < pixels`` and ``v < vectors`` (block sizes), with L lanes:

        out[out_off + px*out_step + v*L + l] =
            sum over i < i_count, t < t_count of
                a[a_off + i*i_step + px*a_step + t] * b[b_off + (i*t_count + t)*b_step + v*L + l]

    summed over i, then t; ``tail`` > 0: only the first ``tail`` lanes of the last vector are
    read from ``b`` and written. A convolution's output row (``a`` a padded channels-last
    image, each pixel's window i*i_step + t, ``b`` the weights in (i, j, c) rows), or with
    ``i_count`` 1 a block of a matrix product ``a @ b``."""
    sizes = _sizes(pixels, vectors, table=ROWS_BLOCKS)
    if sizes is False or not _float_arrays(a, b, out):
        return None
    if sizes and not (min(sizes) >= 1 and sizes[0] * sizes[1] <= MAX_ACCUMULATORS):
        return None
    sig = types.void(pixels, vectors, a, a_off, a_step, i_count, i_step, t_count, b, b_off,
                     b_step, out, out_off, out_step, tail)

    def emit(context, builder, signature, args, p_count, v_count):
        _tail_versions(context, builder, signature, args, 14, lambda load_last, store_last:
                       _rows_block(context, builder, signature, args, p_count, v_count,
                                   load_last, store_last))

    return sig, _intrinsic_body(sizes, ROWS_BLOCKS, (0, 1), emit)


def _rows_block(context, builder, signature, args, p_count, v_count, load_last, store_last):
    kinds = signature.args
    i64 = ir.IntType(64)
    vector, width, fma, broadcast, load, store = _vector_ops(context, builder, kinds[2].dtype)
    (a_ptr, b_ptr, out_ptr), (a_off, a_step, i_count, i_step, t_count, b_off, b_step,
                              out_off, out_step) = _arguments(
        context, builder, signature, args, (2, 8, 11), (3, 4, 5, 6, 7, 9, 10, 12, 13))
    loads = [load] * (v_count - 1) + [load_last]
    out_at = _block_offsets(builder, out_off, out_step, p_count, v_count, width)
    acc = _accumulators(builder, vector, None, loads, out_ptr, out_at)
    pixel_offsets = [builder.mul(a_step, ir.Constant(i64, px)) for px in range(p_count)]
    with cgutils.for_range(builder, i_count) as outer:
        a_row = builder.add(a_off, builder.mul(outer.index, i_step))
        b_row = builder.add(b_off, builder.mul(builder.mul(outer.index, t_count), b_step))
        with cgutils.for_range(builder, t_count) as inner:
            t = inner.index
            b_at = builder.add(b_row, builder.mul(t, b_step))
            weights = [loads[v](b_ptr, builder.add(b_at, ir.Constant(i64, v * width)))
                       for v in range(v_count)]
            a_at = builder.add(a_row, t)
            for px in range(p_count):
                value = broadcast(builder.load(builder.gep(a_ptr, [
                    builder.add(a_at, pixel_offsets[px])])))
                for v in range(v_count):
                    builder.store(fma(value, weights[v], builder.load(acc[px][v])), acc[px][v])
    stores = [store] * (v_count - 1) + [store_last]
    for px in range(p_count):
        for v in range(v_count):
            stores[v](builder.load(acc[px][v]), out_ptr, out_at[px][v])


@intrinsic(prefer_literal=True)
def fma_reduce(typingctx, values, vectors, a, a_off, a_step, a_row_step, rows, cols, g, g_off,
               g_step, g_row_step, out, out_off, out_step, accumulate, tail):
    """For ``k < values`` and ``v < vectors`` (block sizes), with L lanes:

        out[out_off + k*out_step + v*L + l] (+)=
            sum over r < rows, s < cols of
                a[a_off + r*a_row_step + s*a_step + k] * g[g_off + r*g_row_step + s*g_step + v*L + l]

    summed over r, then s, onto the values already in ``out`` where ``accumulate``; ``tail``
    > 0: only the first ``tail`` lanes of the last vector are read and written. A
    convolution's weight gradient (``a`` a padded channels-last image, ``g`` the output
    gradient's rows of that image), or with ``rows`` 1 a block of ``a.T @ g``."""
    sizes = _sizes(values, vectors, table=ROWS_BLOCKS)
    if sizes is False or not _float_arrays(a, g, out):
        return None
    if sizes and not (min(sizes) >= 1 and sizes[0] * sizes[1] <= MAX_ACCUMULATORS):
        return None
    sig = types.void(values, vectors, a, a_off, a_step, a_row_step, rows, cols, g, g_off,
                     g_step, g_row_step, out, out_off, out_step, accumulate, tail)

    def emit(context, builder, signature, args, k_count, v_count):
        _tail_versions(context, builder, signature, args, 16, lambda load_last, store_last:
                       _reduce_block(context, builder, signature, args, k_count, v_count,
                                     load_last, store_last))

    return sig, _intrinsic_body(sizes, ROWS_BLOCKS, (0, 1), emit)


def _reduce_block(context, builder, signature, args, k_count, v_count, load_last, store_last):
    kinds = signature.args
    i64 = ir.IntType(64)
    vector, width, fma, broadcast, load, store = _vector_ops(context, builder, kinds[2].dtype)
    (a_ptr, g_ptr, out_ptr), (a_off, a_step, a_row_step, rows, cols, g_off, g_step,
                              g_row_step, out_off, out_step) = _arguments(
        context, builder, signature, args, (2, 8, 12), (3, 4, 5, 6, 7, 9, 10, 11, 13, 14))
    accumulate = context.cast(builder, args[15], kinds[15], types.boolean)
    loads = [load] * (v_count - 1) + [load_last]
    out_at = _block_offsets(builder, out_off, out_step, k_count, v_count, width)
    acc = _accumulators(builder, vector, accumulate, loads, out_ptr, out_at)
    with cgutils.for_range(builder, rows) as outer:
        a_row = builder.add(a_off, builder.mul(outer.index, a_row_step))
        g_row = builder.add(g_off, builder.mul(outer.index, g_row_step))
        with cgutils.for_range(builder, cols) as inner:
            s = inner.index
            g_at = builder.add(g_row, builder.mul(s, g_step))
            grads = [loads[v](g_ptr, builder.add(g_at, ir.Constant(i64, v * width)))
                     for v in range(v_count)]
            a_at = builder.add(a_row, builder.mul(s, a_step))
            for k in range(k_count):
                value = broadcast(builder.load(builder.gep(a_ptr, [
                    builder.add(a_at, ir.Constant(i64, k))])))
                for v in range(v_count):
                    builder.store(fma(value, grads[v], builder.load(acc[k][v])), acc[k][v])
    stores = [store] * (v_count - 1) + [store_last]
    for k in range(k_count):
        for v in range(v_count):
            stores[v](builder.load(acc[k][v]), out_ptr, out_at[k][v])
