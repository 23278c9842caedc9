"""BLAS ``?gemm`` called from compiled code: one BLAS for the whole process.

``gemm`` is an intrinsic that calls a symbol by name, so cached machine code keeps working
across processes; ``register_blas`` binds the names, before the first kernel that calls
``gemm`` compiles, to NumPy's own OpenBLAS where it exports ``gemm`` with 64-bit integers
(as NumPy's wheels do), else to SciPy's ``cython_blas``. One BLAS matters: each OpenBLAS
keeps its own threads, which spin for a while after their last product, and two of them in
one process took the cores from each other.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: The symbols the kernels call, by integer width of the BLAS behind them: NumPy's own
#: OpenBLAS (64-bit integers, as NumPy's wheels ship it) or SciPy's (32-bit). Two names, so a
#: kernel cached for one never calls the other with the wrong integer size.
BLAS_SYMBOLS = {64: {"float32": "handprop_sgemm_ilp64", "float64": "handprop_dgemm_ilp64"},
                32: {"float32": "handprop_sgemm", "float64": "handprop_dgemm"}}
#: Which of them ``register_blas`` found (set before the first kernel compiles).
BLAS_INT_BITS = [32]
N, T = ord("N"), ord("T")


@intrinsic
def gemm(typingctx, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Row-major ``c[:m, :n] = alpha * op(a) @ op(b) + beta * c`` (``op`` transposes
    where ``trans`` is ``T``). Arrays go by their data pointer with explicit leading
    dimensions, so a product may use only the first rows of a buffer."""
    if not (isinstance(c, types.Array) and c.dtype in (types.float32, types.float64)
            and isinstance(a, types.Array) and isinstance(b, types.Array)
            and a.dtype == c.dtype and b.dtype == c.dtype):
        return None
    sig = types.void(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        kinds = signature.args
        flt = context.get_value_type(c.dtype)
        bits = BLAS_INT_BITS[0]
        i8, i32 = ir.IntType(8), ir.IntType(bits)

        def on_stack(i, to_type, llty):
            slot = cgutils.alloca_once(builder, llty)
            builder.store(context.cast(builder, args[i], kinds[i], to_type), slot)
            return slot

        def data(i):
            return context.make_array(kinds[i])(context, builder, args[i]).data

        def char(i):
            return on_stack(i, types.int8, i8)

        def int_(i):
            return on_stack(i, types.int64 if bits == 64 else types.int32, i32)

        def real(i):
            return on_stack(i, c.dtype, flt)

        fp, ip, cp = flt.as_pointer(), i32.as_pointer(), i8.as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [cp, cp, ip, ip, ip, fp, fp, ip, fp, ip, fp, fp, ip])
        fn = cgutils.get_or_insert_function(builder.module, fnty,
                                            BLAS_SYMBOLS[bits][str(c.dtype)])
        # Column-major BLAS sees a row-major matrix transposed: c^T = op(b)^T op(a)^T.
        builder.call(fn, [char(1), char(0), int_(3), int_(2), int_(4), real(5), data(8), int_(9),
                          data(6), int_(7), real(10), data(11), int_(12)])
        return context.get_dummy_value()

    return sig, codegen


_blas_ready = False


def numpy_blas_gemm() -> dict | None:
    """Addresses of ``sgemm``/``dgemm`` in the OpenBLAS NumPy itself calls, when it exports
    them with 64-bit integers (``scipy_sgemm_64_``, as NumPy's wheels do), else None."""
    import ctypes
    import os

    import numpy
    from threadpoolctl import ThreadpoolController

    numpy_dir = os.path.dirname(os.path.abspath(numpy.__file__))
    for lib in ThreadpoolController().select(internal_api="openblas").lib_controllers:
        path = os.path.abspath(lib.filepath)
        # NumPy's own copy: inside the numpy package or its wheel's numpy.libs/.
        if not (path.startswith(numpy_dir + os.sep) or path.startswith(numpy_dir + ".libs")):
            continue
        try:
            so = ctypes.CDLL(path)
            return {dtype: ctypes.cast(getattr(so, f"scipy_{letter}gemm_64_"), ctypes.c_void_p).value
                    for dtype, letter in (("float32", "s"), ("float64", "d"))}
        except (OSError, AttributeError):
            return None
    return None


def register_blas() -> None:
    """Give the BLAS the kernels call its symbol names: NumPy's own OpenBLAS where it can
    be reached, else SciPy's ``cython_blas``.

    One BLAS for the whole process matters: each OpenBLAS keeps its own threads, which
    spin for a while after their last product. With the epoch's GEMMs in SciPy's copy and
    the evaluation's in NumPy's, NumPy's spinning threads took the cores from the next
    epoch's products (back-to-back epochs of 784-100-10 at batch 64, 2 threads: 87-122k
    samples/s, against 194-201k with NumPy's pool held to one thread)."""
    global _blas_ready
    if _blas_ready:
        return
    import llvmlite.binding as llvm
    from numba.extending import get_cython_function_address

    for dtype, symbol in BLAS_SYMBOLS[32].items():
        name = "sgemm" if dtype == "float32" else "dgemm"
        llvm.add_symbol(symbol, get_cython_function_address("scipy.linalg.cython_blas", name))
    numpy_gemm = numpy_blas_gemm()
    if numpy_gemm:
        for dtype, symbol in BLAS_SYMBOLS[64].items():
            llvm.add_symbol(symbol, numpy_gemm[dtype])
    BLAS_INT_BITS[0] = 64 if numpy_gemm else 32
    _blas_ready = True
