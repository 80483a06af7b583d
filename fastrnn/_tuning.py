"""Measured crossovers, in one place.

Per step the recurrent product is h_{t-1} (B, H) @ W_hh^T (H, G*H).  Small
products are faster as the kernels' own loops with the weights hot in cache
(a BLAS call costs about a microsecond before it does any work); large ones
are faster in BLAS, which also spreads them over the cores.

Measured (forward, float32, 2 threads, us per step; OpenBLAS 0.3.31):

    B  H      loops   BLAS           B  H      loops   BLAS
    1  64      1.6     1.5           16 32     12.2    11.4
    1  512    41      37             16 256   148     124
    4  64      6.8     8.4           64 128   261     196
    4  512   126     184              8 1024  965     984
    2  1024  503     905              8 2048 8077    4124

OpenBLAS sends one row to gemv, which is good; for 2 to 7 rows its gemm
repacks W_hh on every call and loses to the loops; from 8 rows on it wins or
ties.  So the rule is by rows, with a floor of work below which a call's
fixed cost dominates.
"""

# Use BLAS for the per-step product with one row, or with at least this many
# rows once the product has BLAS_MIN_MACS multiply-adds (B * G*H * H).
BLAS_MIN_ROWS = 8
BLAS_MIN_MACS = 16 * 32 * 32

# The Cython kernels spread the hand loops over OpenMP threads (prange over
# the batch rows) when B * G*H elements per step reach this.  A parallel
# region per step costs several microseconds here (and its spinning threads
# slow OpenBLAS's), so it paid only from about 16K elements (B=8, H=2048:
# 6.7 ms against 10.0 ms serially); below that the loops run serially.
PARALLEL_MIN_ELEMENTS = 16 * 1024


def use_blas(B, GH, H):
    return B * GH * H >= BLAS_MIN_MACS and (B == 1 or B >= BLAS_MIN_ROWS)


def row_threads(B, GH, num_threads):
    return num_threads if B * GH >= PARALLEL_MIN_ELEMENTS else 1
