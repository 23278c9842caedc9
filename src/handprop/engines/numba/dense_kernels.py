"""A dense layer's three products on ``simd``'s register-blocked vector loops, for the
compiled epoch: the forward product, the weight gradient (onto the weights themselves for
plain SGD) and the input gradient.

All take flat row-major arrays with element offsets, so they read and write the epoch's
work buffer and the model's flat parameters in place, and a range of rows (or of weight
rows), so threads can share one product with fixed parts. Widths that are no whole number
of vectors end in a masked vector. Sums run over their terms in a fixed order, one fused
multiply-add per term.
"""

from __future__ import annotations

from numba import njit

from .simd import BLOCK_SIZES, VECTOR_BYTES, fma_reduce, fma_rows

_jit = njit(cache=True, nogil=True, error_model="numpy")


@_jit
def column_span(n0, n, width):
    """``(vectors, columns, tail)`` of the column block starting at ``n0`` of ``n``: two
    vectors where more than one is left, else one; ``tail`` the lanes of its last vector
    in use (0: all)."""
    left = n - n0
    vectors = 2 if left > width else 1
    columns = min(left, vectors * width)
    tail = columns - (vectors - 1) * width
    return vectors, columns, 0 if tail == width else tail


@_jit
def matmul_rows(a, a_off, k, b, b_off, n, out, out_off, r0, r1):
    """Rows ``r0 .. r1`` of ``out (m x n) = a (m x k) @ b (k x n)``, all row-major at the
    given offsets; blocks of rows against blocks of one or two vectors of columns."""
    width = VECTOR_BYTES // out.itemsize
    n0 = 0
    while n0 < n:
        vectors, columns, tail = column_span(n0, n, width)
        r = r0
        for size in BLOCK_SIZES:
            while r1 - r >= size:
                fma_rows(size, vectors, a, a_off + r * k, k, 1, 0, k, b, b_off + n0, n, out,
                         out_off + r * n + n0, n, tail)
                r += size
        n0 += columns


@_jit
def matmul_t_rows(a, a_off, k, m, g, g_off, n, out, out_off, accumulate, k0, k1):
    """Rows ``k0 .. k1`` of ``out (k x n) (+)= a.T @ g`` for ``a (m x k)``, ``g (m x n)``,
    summed over the ``m`` samples in order; onto ``out`` where ``accumulate``."""
    width = VECTOR_BYTES // out.itemsize
    row = k0
    for size in BLOCK_SIZES:  # a block of rows against every block of columns, while cached
        while k1 - row >= size:
            n0 = 0
            while n0 < n:
                vectors, columns, tail = column_span(n0, n, width)
                fma_reduce(size, vectors, a, a_off + row, k, 0, 1, m, g, g_off + n0, n, 0, out,
                           out_off + row * n + n0, n, accumulate, tail)
                n0 += columns
            row += size


#: Rows and columns of the tiles a transpose copies at a time (one cache line of float32).
TILE = 16


@_jit
def transpose_rows(w, w_off, k, n, wt, r0, r1):
    """Rows ``r0 .. r1`` of ``w (k x n)`` at ``w_off`` into columns ``r0 .. r1`` of
    ``wt (n x k)``, tile by tile (both sides a few cache lines at a time): the input
    gradient ``g @ w.T`` is then ``matmul_rows`` of ``wt``."""
    for i0 in range(r0, r1, TILE):
        i1 = min(i0 + TILE, r1)
        for j0 in range(0, n, TILE):
            j1 = min(j0 + TILE, n)
            for j in range(j0, j1):
                row = j * k
                for r in range(i0, i1):
                    wt[row + r] = w[w_off + r * n + j]
