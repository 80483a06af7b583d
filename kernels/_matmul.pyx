"""Matrix products on fastrnn's own threads (the GEMMs of ``fastrnn.training.Linear``).

A training loop alternates the recurrence (fastrnn's OpenMP team) with a
read-out layer's products.  Run through NumPy, those products wake NumPy's
OpenBLAS pool, whose workers then spin for a while after every call, on
the cores the engine's threads need next: examples/char_lm.py ran 1.4x
slower on 2 threads than on 1.  Here the same OpenMP team splits C into
blocks of rows (or of columns, when C is wide) and each thread computes
its block with OpenBLAS on one thread (``_blas_local(1)``, as the engine's
weight gradients do), so one pool serves the whole loop.

These functions trust their callers for dtypes and contiguity (the memoryview
types check them) and check the shapes.
"""
from cython.parallel cimport parallel, threadid

include "_gemm.pxi"

# Below this many multiply-adds one thread is faster than starting the team
# (a product of 64 x 128 x 128 takes about 10 us on one core).
cdef Py_ssize_t _PARALLEL_MIN_MADDS = 1 << 20


cdef void _part(bint trans_a, bint trans_b, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                const floating* A, Py_ssize_t lda, const floating* Bm, Py_ssize_t ldb,
                floating* C, Py_ssize_t ldc, int part, int parts) noexcept nogil:
    """Block ``part`` of ``parts`` of C = op(A) op(Bm): rows of C when it is
    at least as tall as wide, else columns."""
    cdef Py_ssize_t i0, i1
    if M >= N:
        i0, i1 = M * part // parts, M * (part + 1) // parts
        if i1 > i0:
            _gemm(trans_a, trans_b, <int>(i1 - i0), <int>N, <int>K, 1,
                  A + (i0 if trans_a else i0 * lda), <int>lda, Bm, <int>ldb,
                  0, C + i0 * ldc, <int>ldc)
    else:
        i0, i1 = N * part // parts, N * (part + 1) // parts
        if i1 > i0:
            _gemm(trans_a, trans_b, <int>M, <int>(i1 - i0), <int>K, 1,
                  A, <int>lda, Bm + (i0 * ldb if trans_b else i0), <int>ldb,
                  0, C + i0, <int>ldc)


def matmul(const floating[:, ::1] A, const floating[:, ::1] Bm, floating[:, ::1] out,
           bint trans_a=False, bint trans_b=False, int num_threads=1):
    """out (M, N) = op(A) @ op(Bm), op transposing a matrix when its flag is set,
    on ``num_threads`` of fastrnn's OpenMP threads."""
    cdef Py_ssize_t M = A.shape[1] if trans_a else A.shape[0]
    cdef Py_ssize_t K = A.shape[0] if trans_a else A.shape[1]
    cdef Py_ssize_t KB = Bm.shape[1] if trans_b else Bm.shape[0]
    cdef Py_ssize_t N = Bm.shape[0] if trans_b else Bm.shape[1]
    if KB != K:
        raise ValueError(f"matmul: op(A) is ({M}, {K}) but op(Bm) is ({KB}, {N})")
    if out.shape[0] != M or out.shape[1] != N:
        raise ValueError(f"matmul: out must have shape ({M}, {N}), got "
                         f"({out.shape[0]}, {out.shape[1]})")
    if num_threads < 1:
        raise ValueError(f"matmul: num_threads must be >= 1, got {num_threads}")
    if M == 0 or N == 0:
        return
    if K == 0:
        out[:, :] = 0
        return
    cdef const floating* a = &A[0, 0]
    cdef const floating* b = &Bm[0, 0]
    cdef floating* c = &out[0, 0]
    cdef Py_ssize_t lda = A.shape[1], ldb = Bm.shape[1], ldc = N
    cdef bint local = num_threads > 1 and _blas_local != NULL
    if not local or M * N * K < _PARALLEL_MIN_MADDS:
        with nogil:
            if local:
                _blas_local(1)
            _part(trans_a, trans_b, M, N, K, a, lda, b, ldb, c, ldc, 0, 1)
            if local:
                _blas_local(num_threads)
        return
    with nogil:
        with parallel(num_threads=num_threads):
            _blas_local(1)
            _part(trans_a, trans_b, M, N, K, a, lda, b, ldb, c, ldc,
                  threadid(), fastrnn_team_size())
        _blas_local(num_threads)  # fastrnn's count, as after the engine's weight gradients
