"""Measured crossovers, in one place.

Cython: the recurrent engine (kernels/_engine.pxi) runs a whole sequence in
one parallel region.  A step's work is split into items of a few hidden
units each and the threads wait for each other once per step, which cost
1-3 us a step on this 2-core VM; threads pay once a step is well above
that.  Measured, float32, T=512, I=H, forward, us per step on 1 / 2 threads
(multiply-adds a step B*G*H*(I+H) in brackets):

    Elman B=1  H=64  (8K)    0.52 / 0.89      LSTM B=1 H=64  (32K)   1.81 / 2.44
    Elman B=4  H=64  (32K)   0.76 / 1.86      LSTM B=4 H=64  (131K)  3.99 / 5.06
    Elman B=2  H=128 (64K)   2.65 / 2.91      LSTM B=1 H=128 (131K)  7.36 / 5.09
    Elman B=16 H=64  (131K)  2.77 / 6.01      LSTM B=8 H=64  (262K)  6.74 / 8.09
    Elman B=1  H=256 (131K)  3.92 / 3.92      LSTM B=1 H=256 (524K)  22.4 / 15.2
    GRU   B=2  H=64  (49K)   2.26 / 1.84      GRU  B=4 H=64  (98K)   2.77 / 2.52

So two threads from 2**19 multiply-adds a step (they lose up to 2**18 when
H is small, and win from 2**19 in every case tried); ENGINE_MIN_MACS_PER_STEP.

Numba: the per-step recurrent product h_{t-1} (B, H) @ W_hh^T (H, G*H) is
the kernels' plain axpy loops (c[n] += a[k] M[k, n]) or BLAS.  Measured
(Elman, us per step, loops / BLAS): B=1 H=64 0.64 / 0.49, B=1 H=512 28 / 26,
B=4 H=64 2.2 / 3.9, B=4 H=512 105 / 149, B=16 H=32 3.5 / 2.5, B=16 H=256
74 / 55.  So one row goes to gemv, 2 to 7 rows to the loops, 8 or more to
BLAS, with a floor of BLAS_MIN_MACS below which a call's fixed cost dominates.
"""

BLAS_MIN_ROWS = 8  # Numba: from 8 rows OpenBLAS's gemm stops losing to the loops
BLAS_MIN_MACS = 32 * 32  # Numba: below this the loops, whatever the rows


def use_blas(backend, B, GH, H):
    """Whether the per-step product of the Numba kernels goes to BLAS (the
    Cython engine has its own product and does not read it)."""
    macs = B * GH * H
    return backend == "numba" and macs >= BLAS_MIN_MACS and (B == 1 or B >= BLAS_MIN_ROWS)


ENGINE_MIN_MACS_PER_STEP = 2 ** 19


def engine_threads(backend, B, I, H, GH, num_threads):
    """Threads for the Cython engine: all of ``num_threads`` once a step's
    multiply-adds (input and recurrent products, B * G*H * (I + H)) reach
    ENGINE_MIN_MACS_PER_STEP, else one."""
    if backend != "cython" or B * GH * (I + H) < ENGINE_MIN_MACS_PER_STEP:
        return 1
    return num_threads


# Rows of a chunk of steps whose input terms the engine computes at once; in
# inference it keeps only the gates and saved values of such a chunk, so the
# forward's memory is its output plus this, whatever T.  The engine uses the
# same number (kernels/_engine.pxi, _CHUNK_ROWS).
CHUNK_ROWS = 512


def kept_steps(backend, training, T, B):
    """Steps of gates (and of the cell's other saved values) a forward keeps:
    all T in training (the backward reads them) and for the Numba kernels;
    a chunk of steps for an inference by the Cython engine."""
    if training or backend != "cython":
        return T
    return _steps_in(CHUNK_ROWS, T, B)


# An int8 inference whose weights outgrow L2 computes the input terms of a
# chunk of steps of about this many rows at once: enough for the int8 tiles
# (6 to 8 rows), no more.  Measured against chunks of CHUNK_ROWS (LSTM, AMD
# EPYC Zen 4, 2 threads, interleaved medians; python /tmp/w/chunk.py):
# (64, 1024) 54.3 -> 48.2 ms, (16, 1024) 55.8 -> 48.0, (32, 512) 36.4 -> 30.7,
# (4, 1024) 29.5 -> 27.1, (1, 1024) 11.4 -> 10.8 (one step a chunk: 14.7):
# the larger ring of gates went through memory (and fresh pages) every call.
INT8_CHUNK_ROWS = 8


# Below this many rows a step, an int8 inference whose weights fit L2 still
# computes its input terms a chunk of about INT8_FEW_ROWS_CHUNK_ROWS rows at
# a time: the tiles of a step's one or two rows cost more than the chunk's
# round trip through memory.  Chunks of 16 to 256 rows against each step's
# own input term (Intel Xeon, VNNI, 2 threads, min of 8-14 interleaved
# rounds; python /tmp/w/ring.py): B = 1, H = 64: GRU 0.49 -> 0.43 ms, LSTM
# 0.54 -> 0.45; H = 256: GRU 1.06 -> 0.72, LSTM 1.18 -> 0.90; B = 2, H = 64:
# GRU 0.63 -> 0.57, LSTM 0.87 -> 0.74 (H = 256: level); B = 4: level to
# 0.92x (GRU (4, 256) 2.14 -> 1.97); B = 8: level or slower (GRU (8, 256)
# 2.44 -> 2.67-2.70), B = 16 likewise; Elman level throughout.
INT8_STEP_INPUTS_MIN_ROWS = 8
INT8_FEW_ROWS_CHUNK_ROWS = 64


def int8_kept_steps(T, B, I, H, G):
    """kept_steps for an int8 inference: 1 (each step computes its own input
    term, kernels/_engine.pxi: _engine_forward_int8) where the int8 weights
    fit a core's L2 cache and a step has INT8_STEP_INPUTS_MIN_ROWS rows or
    more, else a chunk of about INT8_FEW_ROWS_CHUNK_ROWS or (weights past
    L2) INT8_CHUNK_ROWS rows."""
    if (I + H) * G * H <= l2_bytes():
        if B >= INT8_STEP_INPUTS_MIN_ROWS:
            return 1
        return _steps_in(INT8_FEW_ROWS_CHUNK_ROWS, T, B)
    return _steps_in(INT8_CHUNK_ROWS, T, B)


def l2_bytes():
    """A core's L2 cache, as the Cython kernels read it (engine.h:
    fastrnn_l2_bytes; 1 MB where the system does not say)."""
    global _L2
    if _L2 is None:
        from ._backends import kernels

        _L2 = kernels("cython", "rnn")._l2_bytes()
    return _L2


_L2 = None


def _steps_in(rows, T, B):
    """Steps of B rows in a chunk of about ``rows`` rows: at least 1, at most T."""
    return min(T, max(1, rows // B))


# Rows of a chunk of steps whose pre-activation gradients the Cython
# backward keeps at once (kernels/_engine.pxi, _engine_backward: each chunk's
# recurrence, then its share of the weight-gradient GEMMs).  Measured, LSTM
# float32 2 threads, the backward alone, best of interleaved calls (ms):
#   rows       256    512   1024   2048   4096    all T*B
#   (16, 256)  104.0  103.1  103.5  107.3  113.2  121.4     T=1024
#   (64, 1024)        790.0  793.9  813.3  817.9  918.6     T=128
BACKWARD_CHUNK_ROWS = 1024


def workspace_steps(backend, T, B):
    """Steps of the backward's pre-activation gradients (da) a backward
    keeps: a chunk for the Cython engine, all T for the Numba kernels."""
    if backend != "cython":
        return T
    return _steps_in(BACKWARD_CHUNK_ROWS, T, B)
