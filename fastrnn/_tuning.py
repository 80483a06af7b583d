"""Measured crossovers, in one place.

Per step the recurrent product is h_{t-1} (B, H) @ W_hh^T (H, G*H).  Small
products are faster as the kernels' own loops with the weights hot in cache
(a BLAS call costs about a microsecond before it does any work); large ones
are faster in BLAS, which also spreads them over the cores.

Measured (forward, float32, tanh, 2 threads, us per step; OpenBLAS 0.3.31,
T=256, I=H; loops = the kernels' own, Cython / Numba):

    B   H     loops        BLAS           B   H     loops        BLAS
    1   32    0.35 / 0.34  0.27 / 0.31    16  32     3.3 / 3.5    2.4 / 2.5
    1   64    0.77 / 0.64  0.47 / 0.49    16  256   84 / 74      51 / 55
    1   512  29 / 28      26 / 26         64  64    28 / 27      17 / 19
    4   64    2.3 / 2.2    3.9 / 3.9      64  512 1584 / 1697   551 / 663
    4   512 101 / 105    150 / 149

OpenBLAS sends one row to gemv, which is good; for 2 to 7 rows its gemm
repacks W_hh on every call and loses to the loops; from 8 rows on it wins.
So the rule is by rows, with a floor of work below which a call's fixed cost
dominates.
"""

# Use BLAS for the per-step product with one row, or with at least this many
# rows once the product has BLAS_MIN_MACS multiply-adds (B * G*H * H).
BLAS_MIN_ROWS = 8
BLAS_MIN_MACS = 32 * 32

# The Cython kernels spread the hand loops over OpenMP threads (prange over
# the batch rows) when B * G*H elements per step reach this.  A parallel
# region per step costs several microseconds here, and about 30 us once
# OpenBLAS's workers are spinning beside it (B=4, H=64: 31 us against 2.3 us
# serially), so it paid only from about 16K elements (B=8, H=2048: 6.7 ms
# against 10.0 ms; B=64, H=512: 1.48 ms against 1.58 ms).  With the rule
# above, the loops run only for 2-7 rows, where that needs H > 2000.
PARALLEL_MIN_ELEMENTS = 16 * 1024


def use_blas(B, GH, H):
    return B * GH * H >= BLAS_MIN_MACS and (B == 1 or B >= BLAS_MIN_ROWS)


def row_threads(B, GH, num_threads):
    return num_threads if B * GH >= PARALLEL_MIN_ELEMENTS else 1
