# What every Cython kernel shares (``include "_common.pxi"`` in each cell's
# .pyx): the BLAS helper (_gemm.pxi), the activations, and the weight gradients that
# every cell's backward computes the same way after its recurrence.  The
# recurrence itself is the engine (``_engine.pxi``).
#
# Shape letters: T steps, B batch, I input features, H hidden units, G gates
# (1 Elman, 4 LSTM, 3 GRU); every array is C-contiguous and of one dtype.
from cython cimport floating
from cython.parallel cimport parallel, prange, threadid
from libc.math cimport sqrt, tanh

cdef extern from "fast_tanh.h" nogil:
    float fastrnn_tanhf(float x)
    void fastrnn_tanh_pq(float x, float* p, float* q)
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
include "_gemm.pxi"

# The arrays a gate loop writes, as restrict pointers (``floating_out``: C99's
# promise that nothing else reaches what they point to).  Without it gcc
# vectorises such a loop only behind run-time checks that no two of its
# arrays overlap, about 60 instructions a call, and the engine calls the
# cell for one row of one panel's units (16 a gate at AVX-512) at a time.
cdef extern from *:
    ctypedef float* float_out "float *__restrict__"
    ctypedef double* double_out "double *__restrict__"

ctypedef fused floating_out:
    float_out
    double_out


cdef inline floating _tanh(floating x) noexcept nogil:
    # float32 uses the rational tanh of fast_tanh.h, which vectorises; float64
    # keeps the C library's.
    if floating is float:
        return fastrnn_tanhf(x)
    else:
        return tanh(x)


cdef inline floating _sigmoid(floating x) noexcept nogil:
    """1 / (1 + exp(-x)), written as (1 + tanh(x / 2)) / 2: no overflow for any x.

    Constants are cast to ``floating``: a bare 0.5 is a double literal in C,
    which would promote float32 arithmetic.
    """
    return <floating>0.5 + <floating>0.5 * _tanh(<floating>0.5 * x)


# ---- LayerNorm over a row (the layer-normalised cells) -------------------------
#
# Sums in double, in 16 running lanes: lane l adds elements l, l+16, ...
# in order, which the compiler vectorises without reassociating (one
# accumulator would run one add's latency an element).
DEF _LANES = 16


cdef inline double _row_sum(const floating* a, Py_ssize_t n, double shift) noexcept nogil:
    """sum(a - shift) over a (n,) (shift 0: the sum), in double."""
    cdef double lane[_LANES]
    cdef Py_ssize_t j, l, m = n - n % _LANES
    cdef double total = 0
    for l in range(_LANES):
        lane[l] = 0
    for j in range(0, m, _LANES):
        for l in range(_LANES):
            lane[l] += a[j + l] - shift
    for j in range(m, n):
        total += a[j] - shift
    for l in range(_LANES):
        total += lane[l]
    return total


cdef inline floating _norm_row(floating* a, Py_ssize_t n, double eps) noexcept nogil:
    """a (n,) in place to (a - mean) * rstd, rstd = 1 / sqrt(var + eps) (the
    biased variance, of the centred row); returns rstd.  LayerNorm without
    its gain and bias."""
    cdef double lane[_LANES]
    cdef Py_ssize_t j, l, m = n - n % _LANES
    cdef double mean = _row_sum(a, n, 0) / n, var = 0, d
    cdef floating mf = <floating>mean, r
    for l in range(_LANES):
        lane[l] = 0
    for j in range(0, m, _LANES):
        for l in range(_LANES):
            d = a[j + l] - mean
            lane[l] += d * d
    for j in range(m, n):
        d = a[j] - mean
        var += d * d
    for l in range(_LANES):
        var += lane[l]
    r = <floating>(1 / sqrt(var / n + eps))
    for j in range(n):
        a[j] = (a[j] - mf) * r
    return r


cdef inline void _norm_row_backward(const floating* dy, const floating* gamma,
                                    const floating* a_hat, floating rstd, floating* da,
                                    Py_ssize_t n) noexcept nogil:
    """da (n,) = the gradient of a LayerNorm's input from dy (n,), that of
    its output: with g = dy * gamma, rstd * (g - mean(g) - a_hat * mean(g *
    a_hat)), the means in double.  da may be dy."""
    cdef double l1[_LANES]
    cdef double l2[_LANES]
    cdef Py_ssize_t j, l, m = n - n % _LANES
    cdef double s1 = 0, s2 = 0, g
    cdef floating k1, k2
    if n == 1:  # a LayerNorm of one value is constant: no gradient (exactly, not an FMA's rounding)
        da[0] = 0
        return
    for l in range(_LANES):
        l1[l] = 0
        l2[l] = 0
    for j in range(0, m, _LANES):
        for l in range(_LANES):
            g = dy[j + l] * gamma[j + l]
            l1[l] += g
            l2[l] += g * a_hat[j + l]
    for j in range(m, n):
        g = dy[j] * gamma[j]
        s1 += g
        s2 += g * a_hat[j]
    for l in range(_LANES):
        s1 += l1[l]
        s2 += l2[l]
    k1 = <floating>(s1 / n)
    k2 = <floating>(s2 / n)
    for j in range(n):
        da[j] = rstd * (dy[j] * gamma[j] - k1 - a_hat[j] * k2)


cdef inline void _column_sums(const floating* A, Py_ssize_t rows, Py_ssize_t n, floating* s,
                              Py_ssize_t m0, Py_ssize_t m1, bint add) noexcept nogil:
    """s[m0:m1] (+)= the sums of columns m0..m1 of A (rows, n) over its rows."""
    cdef Py_ssize_t r, j
    if not add:
        for j in range(m0, m1):
            s[j] = 0
    for r in range(rows):
        for j in range(m0, m1):
            s[j] += A[r * n + j]


cdef void _weight_gradients_part(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
                                 const floating[:, ::1] h0, const floating[:, :, ::1] out,
                                 const floating* da_x, const floating* da_h,
                                 Py_ssize_t t0, Py_ssize_t t1, bint add,
                                 floating[:, ::1] dx2d, floating[:, ::1] dW_ih,
                                 floating[:, ::1] dW_hh, floating* db_ih,
                                 floating* db_hh, int part, int parts,
                                 const floating* sum_x, const floating* sum_h) noexcept nogil:
    """Share ``part`` of ``parts`` of the products below for steps t0..t1-1,
    whose da_x, da_h rows are the first (t1 - t0) * B of theirs: rows of dx2d,
    and rows of dW_ih, dW_hh and entries of the bias gradients, added to what
    they hold when ``add``.  The bias gradients sum sum_x, sum_h (da_x, da_h
    but in bf16 compute, whose products read da rounded and whose sums read
    it as it is)."""
    cdef Py_ssize_t B = out.shape[1], H = out.shape[2], I = x2d.shape[1]
    cdef Py_ssize_t GH = dW_ih.shape[0], rows = (t1 - t0) * B
    cdef Py_ssize_t r0 = rows * part // parts, r1 = rows * (part + 1) // parts
    cdef Py_ssize_t m0 = GH * part // parts, m1 = GH * (part + 1) // parts
    cdef floating beta = 1 if add else 0
    if r1 > r0:
        # dx2d (T*B, I) = DX W_ih
        _gemm(False, False, <int>(r1 - r0), <int>I, <int>GH,
              1, da_x + r0 * GH, <int>GH, &W_ih[0, 0], <int>I,
              0, &dx2d[t0 * B + r0, 0], <int>I)
    if m1 == m0:
        return
    # dW_ih (G*H, I) += DX^T X, rows m0..m1 from columns m0..m1 of DX
    _gemm(True, False, <int>(m1 - m0), <int>I, <int>rows,
          1, da_x + m0, <int>GH, &x2d[t0 * B, 0], <int>I,
          beta, &dW_ih[m0, 0], <int>I)
    # dW_hh (G*H, H) += DH^T H_prev, where h_{t-1} is h0 for t = 0 and out[t-1] after.
    if t0 == 0:
        _gemm(True, False, <int>(m1 - m0), <int>H, <int>B,
              1, da_h + m0, <int>GH, &h0[0, 0], <int>H,
              beta, &dW_hh[m0, 0], <int>H)
        if t1 > 1:
            _gemm(True, False, <int>(m1 - m0), <int>H, <int>(rows - B),
                  1, da_h + B * GH + m0, <int>GH, &out[0, 0, 0], <int>H,
                  1, &dW_hh[m0, 0], <int>H)
    else:
        _gemm(True, False, <int>(m1 - m0), <int>H, <int>rows,
              1, da_h + m0, <int>GH, &out[t0 - 1, 0, 0], <int>H,
              beta, &dW_hh[m0, 0], <int>H)
    _column_sums(sum_x, rows, GH, db_ih, m0, m1, add)
    if db_hh != db_ih:
        _column_sums(sum_h, rows, GH, db_hh, m0, m1, add)


cdef void _weight_gradients(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
                            const floating[:, ::1] h0, const floating[:, :, ::1] out,
                            const floating* da_x, const floating* da_h,
                            Py_ssize_t t0, Py_ssize_t t1, bint add,
                            floating[:, ::1] dx2d, floating[:, ::1] dW_ih,
                            floating[:, ::1] dW_hh, floating* db_ih, floating* db_hh,
                            int num_threads, int pool) noexcept nogil:
    """Everything of BPTT that is not sequential, for steps t0..t1-1: a GEMM
    per gradient over their rows, added to the gradients of the later steps
    when ``add`` (the engine's backward of a short sequence calls it once
    per chunk of steps, so that it keeps only a chunk of da; a long one runs
    _weight_gradients_part in its own region: _engine_backward).

    da_x ((t1 - t0) * B, G*H) is the gradient of the input term x_t W_ih^T + b_ih, da_h
    that of the recurrent term h_{t-1} W_hh^T + b_hh (the same array except in
    the GRU).  Rows past a sequence's length are zero.  The single-bias cells
    pass one array as db_ih and db_hh (it is summed once).
    DX, DH below are da_x, da_h as ((t1 - t0) * B, G*H).

    With several threads, the engine's threads each run a share of every
    product with OpenBLAS on one thread (openblas_set_num_threads_local(1)
    in each): OpenBLAS's own pool is never woken, so its workers do not spin
    beside the engine's.  In a pthreads OpenBLAS (scipy's wheels) that call
    sets the global count, so afterwards the calling thread sets it back to
    ``pool``, fastrnn's count (set_num_threads gives it to every BLAS pool;
    _pool_threads); the value the call returns is not restored, because
    two threads saving and restoring it could leave 1 behind.  Without that
    function (another BLAS), one thread runs the products and BLAS uses its
    own threads.  With one thread the caller decides (_engine_backward keeps
    OpenBLAS to it when fastrnn's count is more).

    OpenBLAS, not the engine's tile product: tried with the engine's product
    (dA^T read with a row stride of G*H, packed panels of X and H_prev, the
    bias sums as a column of ones), LSTM (16, 256) float32 training took
    1015 ms on 1 thread and 652 on 2 against 725 and 575 with OpenBLAS in
    the same run: every k of dA^T is a new 4 KB page, past the prefetcher.
    Doing it well means packing blocks of dA^T as a GEMM library does.  (The
    bf16 products where the level has vdpbf16ps do not come here: OpenBLAS
    has no bf16 GEMM, and _engine.pxi's _weight_gradients_bf16 packs da and
    transposes X and H_prev instead.)
    """
    if num_threads == 1 or _blas_local == NULL:
        _weight_gradients_part(x2d, W_ih, h0, out, da_x, da_h, t0, t1, add, dx2d, dW_ih, dW_hh,
                               db_ih, db_hh, 0, 1, da_x, da_h)
        return
    with parallel(num_threads=num_threads):
        _blas_local(1)
        _weight_gradients_part(x2d, W_ih, h0, out, da_x, da_h, t0, t1, add, dx2d, dW_ih, dW_hh,
                               db_ih, db_hh, threadid(), fastrnn_team_size(), da_x, da_h)
    _blas_local(pool)
