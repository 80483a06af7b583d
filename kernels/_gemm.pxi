# The BLAS calls every Cython module shares (``include "_gemm.pxi"``): a
# row-major GEMM on scipy.linalg.cython_blas, and OpenBLAS's per-thread thread
# count, so that a team of OpenMP threads can each run a share of a product
# without waking OpenBLAS's own pool.
from cython cimport floating
from scipy.linalg.cython_blas cimport dgemm, dgemv, sgemm, sgemv


cdef inline void _gemm(bint transA, bint transB, int M, int N, int K,
                       floating alpha, const floating* A, int lda,
                       const floating* Bm, int ldb,
                       floating beta, floating* C, int ldc) noexcept nogil:
    """Row-major C (M, N) = alpha op(A) @ op(Bm) + beta C, op transposing when its flag is set.

    lda, ldb, ldc are the row lengths of A, Bm, C as stored.  BLAS is
    column-major, and a row-major matrix read column-major is its transpose,
    so this asks BLAS for C^T = op(Bm)^T op(A)^T: the operands swap, the flags
    do not.  With beta = 0, C is not read, so it may hold garbage.

    A product with one row or one column goes to gemv, as NumPy's and Numba's
    np.dot do: gemm packs the whole matrix operand on every call, which made
    the B = 1 recurrence (1, H) @ (H, H) 6-7x slower than gemv at H = 512-1024.
    """
    cdef char ta = b'T' if transA else b'N'
    cdef char tb = b'T' if transB else b'N'
    cdef char gt
    cdef int gm, gn, gld, incx, incy, i
    cdef const floating* V
    cdef const floating* x
    if M == 1 or N == 1:
        if M == 1:
            # c (N,) = op(Bm)^T a; Bm read column-major is Bm^T (N, K) or op(Bm) (K, N).
            gt = b'T' if transB else b'N'
            gm, gn = (K, N) if transB else (N, K)
            V, gld = Bm, ldb
            x, incx = A, (lda if transA else 1)
            incy = 1
        else:
            # c (M,) = op(A) b, a column of C; A read column-major is A^T (K, M) or op(A) (M, K).
            gt = b'N' if transA else b'T'
            gm, gn = (M, K) if transA else (K, M)
            V, gld = A, lda
            x, incx = Bm, (1 if transB else ldb)
            incy = ldc
        if beta == 0:
            # gemv scales y by beta, and 0 * NaN is NaN in some OpenBLAS
            # versions: clear y so np.empty garbage cannot leak in.
            for i in range(M if N == 1 else N):
                C[i * incy] = 0
        # cython_blas takes non-const pointers; it does not write V or x.
        if floating is float:
            sgemv(&gt, &gm, &gn, &alpha, <float*>V, &gld, <float*>x, &incx,
                  &beta, C, &incy)
        else:
            dgemv(&gt, &gm, &gn, &alpha, <double*>V, &gld, <double*>x, &incx,
                  &beta, C, &incy)
        return
    if floating is float:
        sgemm(&tb, &ta, &N, &M, &K, &alpha, <float*>Bm, &ldb, <float*>A, &lda,
              &beta, C, &ldc)
    else:
        dgemm(&tb, &ta, &N, &M, &K, &alpha, <double*>Bm, &ldb, <double*>A, &lda,
              &beta, C, &ldc)


cdef extern from "engine.h" nogil:
    ctypedef int (*fastrnn_blas_local_fn)(int)
    fastrnn_blas_local_fn fastrnn_find_blas_local(const void* symbol)
    int fastrnn_team_size()

# OpenBLAS's per-thread thread count (openblas_set_num_threads_local, in the
# OpenBLAS that scipy.linalg.cython_blas calls), or NULL where that BLAS has none.
cdef fastrnn_blas_local_fn _blas_local = fastrnn_find_blas_local(<void*>sgemm)
