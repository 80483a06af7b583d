"""Measured crossovers, in one place.

Per step the recurrent product is h_{t-1} (B, H) @ W_hh^T (H, G*H).  Small
products are faster as the kernels' own loops with the weights hot in cache
(a BLAS call costs about a microsecond before it does any work, OpenBLAS's
gemm repacks W_hh on every call, and it hands even small products to its
second thread); large ones are faster in BLAS, which spreads them over the
cores.

The two backends' loops differ, so each has its rule.  The Cython loops pack
W_hh^T once per call into column panels and keep 64 columns of sums in
registers (kernels/matmul_row.h); measured forward, float32, 2 threads,
us per step, T=256, I=H, OpenBLAS 0.3.31 (cells: Elman rnn, LSTM lstm, GRU gru):

    B   H    cell  loops   BLAS        B   H    cell  loops   BLAS
    1   64   rnn    0.30   0.48        2   256  lstm   45.7  146.8
    1   64   lstm   1.46   1.77        4   256  lstm   86.6  163.0
    1   256  rnn    4.44   5.00        8   256  rnn    34.3   42.4
    1   256  lstm  22.5   24.3         8   256  lstm  173    187
    1   512  rnn   23.6   21.4        16   64   lstm   22.4   27.7
    1   512  lstm 108     56.8        16   128  lstm   98.1   84.1
    16  128  rnn   17.8   23.5        16   256  rnn    68.3   55.6

So: one row to the loops up to G*H*H = 2**18 multiply-adds (then to
OpenBLAS's gemv); 2 to 7 rows always to the loops; from 8 rows on, the loops
up to B*G*H*H = 2**19, BLAS beyond.

The Numba loops are the plain axpy form (c[n] += a[k] M[k, n]); measured the
same way (Elman, us per step, loops / BLAS): B=1 H=64 0.64 / 0.49, B=1 H=512
28 / 26, B=4 H=64 2.2 / 3.9, B=4 H=512 105 / 149, B=16 H=32 3.5 / 2.5, B=16
H=256 74 / 55.  So one row goes to gemv, 2 to 7 rows to the loops, 8 or more
to BLAS, with a floor of BLAS_MIN_MACS below which a call's fixed cost
dominates.
"""

BLAS_MIN_ROWS = 8  # both backends: from 8 rows OpenBLAS's gemm stops losing to the loops
CYTHON_LOOPS_MAX_MACS_ONE_ROW = 2 ** 18  # G*H*H
CYTHON_LOOPS_MAX_MACS = 2 ** 19  # B*G*H*H, from BLAS_MIN_ROWS rows on
BLAS_MIN_MACS = 32 * 32  # Numba: below this the loops, whatever the rows


def use_blas(backend, B, GH, H):
    """Whether the per-step product of ``backend``'s kernels goes to BLAS."""
    macs = B * GH * H
    if backend == "cython":
        if B == 1:
            return macs > CYTHON_LOOPS_MAX_MACS_ONE_ROW
        return B >= BLAS_MIN_ROWS and macs > CYTHON_LOOPS_MAX_MACS
    return macs >= BLAS_MIN_MACS and (B == 1 or B >= BLAS_MIN_ROWS)


# The Cython kernels spread the hand loops over OpenMP threads (prange over
# the batch rows) when B * G*H elements per step reach this.  A parallel
# region per step costs several microseconds here, and about 30 us once
# OpenBLAS's workers are spinning beside it (B=4, H=64: 31 us against 2.3 us
# serially), so it paid only from about 16K elements (B=8, H=2048: 6.7 ms
# against 10.0 ms; B=64, H=512: 1.48 ms against 1.58 ms).  With the rules
# above that is 2-7 rows of a large G*H (B=4 and an LSTM with H >= 1024).
PARALLEL_MIN_ELEMENTS = 16 * 1024


def row_threads(B, GH, num_threads):
    return num_threads if B * GH >= PARALLEL_MIN_ELEMENTS else 1
