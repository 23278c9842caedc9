"""The machine's FMA peak: a loop of fused multiply-adds only, on every core at once.

Each thread runs independent chains of vector FMAs held in registers (enough of them to
cover the FMA latency on every FMA pipe), in the widest vectors Numba's target CPU has
(64 bytes with AVX-512, 32 with AVX2), with no loads or stores inside the loop. What a
kernel reaches is then a share of physics, not of another library.
"""

from __future__ import annotations

import threading
import time

#: Independent accumulator chains per thread: latency 4 x 2 pipes, with room to spare.
CHAINS = 12


def _kernel(lanes: int):
    """``fma_chains(iterations, out)``: CHAINS chains of ``lanes``-wide float32 FMAs from the
    values in ``out``, their sum stored back into it (so nothing is optimised away)."""
    import numba
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def chains(typingctx, iterations, out):
        sig = types.void(iterations, out)

        def codegen(context, builder, signature, args):
            f32 = ir.FloatType()
            vector = ir.VectorType(f32, lanes)
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vector, [vector] * 3), f"llvm.fma.v{lanes}f32")
            data = context.make_array(signature.args[1])(context, builder, args[1]).data
            where = builder.bitcast(data, vector.as_pointer())
            # the operands come from memory at run time, so nothing can be folded away
            scale = builder.load(where, align=4)
            shift = builder.fmul(scale, ir.Constant(vector, [1e-3] * lanes))
            slots = [cgutils.alloca_once(builder, vector) for _ in range(CHAINS)]
            for i, slot in enumerate(slots):
                builder.store(builder.fadd(scale, ir.Constant(vector, [i * 1e-3] * lanes)), slot)
            count = context.cast(builder, args[0], signature.args[0], types.int64)
            with cgutils.for_range(builder, count):
                for slot in slots:
                    builder.store(builder.call(fma, [builder.load(slot), scale, shift]), slot)
            total = builder.load(slots[0])
            for slot in slots[1:]:
                total = builder.fadd(total, builder.load(slot))
            builder.store(total, where, align=4)
            return context.get_dummy_value()

        return sig, codegen

    @numba.njit(nogil=True)
    def fma_chains(iterations, out):
        chains(iterations, out)

    return fma_chains


def vector_lanes() -> int:
    """float32 lanes of the widest vector Numba's target CPU has."""
    from ..engines.numba.simd import wide_vectors

    return 16 if wide_vectors() else 8


def fma_peak_gflops(threads: int | None = None, seconds: float = 0.3) -> float:
    """float32 GFLOP/s of FMA-only loops on ``threads`` threads at once (default: every
    usable core), each running for about ``seconds``."""
    import numpy as np

    from .. import host

    threads = threads or host.available_cores()
    lanes = vector_lanes()
    kernel = _kernel(lanes)
    outs = [np.full(lanes, 0.5, np.float32) for _ in range(threads)]
    kernel(1000, outs[0])  # compile
    started = time.perf_counter()
    kernel(2_000_000, outs[0])
    per_call = (time.perf_counter() - started) / 2_000_000
    iterations = max(1000, int(seconds / max(per_call, 1e-12)))
    workers = [threading.Thread(target=kernel, args=(iterations, out)) for out in outs]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    return threads * iterations * CHAINS * lanes * 2 / elapsed / 1e9
