"""LSTM kernels, Cython backend: forward recurrence, then BPTT.

These kernels trust their inputs: ``fastrnn._driver`` has checked shapes and
dtypes, made every array C-contiguous and of one float dtype, allocated the
outputs and workspace, and chosen ``num_threads`` (see ``fastrnn._tuning``).
Shape letters: T steps, B batch, I input features, H hidden units; the gate
blocks of width H are i, f, g, o (PyTorch's order); the peephole weights
W_ch (3H,) have blocks i, f, o (``peephole``: the engine's ``flag``; without
it the loops are the plain LSTM's, which do not read W_ch).

Read side by side with ``fastrnn/reference.py`` (the specification) and
``kernels/lstm_numba.py`` (the same loops in Numba).  The recurrence runs in
the engine shared by every cell (``_engine.pxi``: packed weights, one
parallel region per sequence); the two functions below are the LSTM's gate
arithmetic, which the engine calls for each tile of units right after its
product.  Bounds checks, wraparound and initialised-memoryview checks come
from setup.py's directives, so none are set here.
"""
include "_common.pxi"


cdef inline void _cell_forward(bint running, Py_ssize_t nu, Py_ssize_t H, Py_ssize_t u,
                               const floating* acc, floating* g, const floating* h_prev,
                               floating* h_next, floating* out, floating* c_n, floating* c,
                               const floating* extra, int flag) noexcept nogil:
    """Units 0..nu-1 of one row at step t (see _engine.pxi for the arguments):
    c_n the running cell state, c this step's saved c_t; with ``flag``
    (peepholes) extra is W_ch's blocks i, f, o at these units."""
    cdef Py_ssize_t j
    cdef floating i, f, gj, o, cj, hj
    # Two loops, not one that tests ``flag`` per unit as the Numba kernel
    # does: written as one, the plain LSTM ran 5-10% slower (LSTM (1, 64)
    # and (16, 256) float32, old build against new, 6 alternating runs).
    if running and flag:
        for j in range(nu):
            cj = c_n[j]
            i = _sigmoid(g[j] + acc[j] + extra[j] * cj)
            f = _sigmoid(g[H + j] + acc[u + j] + extra[H + j] * cj)
            gj = _tanh(g[2 * H + j] + acc[2 * u + j])
            cj = f * cj + i * gj
            o = _sigmoid(g[3 * H + j] + acc[3 * u + j] + extra[2 * H + j] * cj)
            hj = o * _tanh(cj)
            g[j] = i
            g[H + j] = f
            g[2 * H + j] = gj
            g[3 * H + j] = o
            c[j] = cj
            c_n[j] = cj
            out[j] = hj
            h_next[j] = hj
    elif running:
        for j in range(nu):
            i = _sigmoid(g[j] + acc[j])
            f = _sigmoid(g[H + j] + acc[u + j])
            gj = _tanh(g[2 * H + j] + acc[2 * u + j])
            o = _sigmoid(g[3 * H + j] + acc[3 * u + j])
            cj = f * c_n[j] + i * gj
            hj = o * _tanh(cj)
            g[j] = i
            g[H + j] = f
            g[2 * H + j] = gj
            g[3 * H + j] = o
            c[j] = cj
            c_n[j] = cj
            out[j] = hj
            h_next[j] = hj
    else:
        for j in range(nu):
            g[j] = 0
            g[H + j] = 0
            g[2 * H + j] = 0
            g[3 * H + j] = 0
            c[j] = c_n[j]
            out[j] = 0
            h_next[j] = h_prev[j]


cdef inline void _cell_backward(bint running, Py_ssize_t nu, Py_ssize_t H, const floating* g,
                                const floating* c, const floating* c_prev,
                                const floating* d_out, floating* dh, floating* dc,
                                floating* da, floating* da_h, const floating* extra,
                                floating* d_extra, int flag) noexcept nogil:
    """Units 0..nu-1 of one row at step t: da (= da_h) from dh, dc; then
    dh = 0 (all of dL/dh_{t-1} goes through W_hh) and dc = dL/dc_{t-1};
    with ``flag`` (peepholes) c also reaches the gates through extra (W_ch),
    whose gradient adds into d_extra."""
    cdef Py_ssize_t j
    cdef floating i, f, gj, o, tc, dhj, dcj, dai, daf, dao
    if not running:
        # A frozen step is the identity on (h, c): dh and dc pass through.
        for j in range(nu):
            da[j] = 0
            da[H + j] = 0
            da[2 * H + j] = 0
            da[3 * H + j] = 0
        return
    if flag:
        for j in range(nu):
            i = g[j]
            f = g[H + j]
            gj = g[2 * H + j]
            o = g[3 * H + j]
            tc = _tanh(c[j])
            dhj = dh[j] + d_out[j]
            dao = dhj * tc * o * (<floating>1 - o)
            dcj = dc[j] + dhj * o * (<floating>1 - tc * tc) + dao * extra[2 * H + j]
            dai = dcj * gj * i * (<floating>1 - i)
            daf = dcj * c_prev[j] * f * (<floating>1 - f)
            da[j] = dai
            da[H + j] = daf
            da[2 * H + j] = dcj * i * (<floating>1 - gj * gj)
            da[3 * H + j] = dao
            dc[j] = dcj * f + dai * extra[j] + daf * extra[H + j]
            dh[j] = 0
            d_extra[j] += dai * c_prev[j]
            d_extra[H + j] += daf * c_prev[j]
            d_extra[2 * H + j] += dao * c[j]
        return
    for j in range(nu):
        i = g[j]
        f = g[H + j]
        gj = g[2 * H + j]
        o = g[3 * H + j]
        tc = _tanh(c[j])
        dhj = dh[j] + d_out[j]
        dcj = dc[j] + dhj * o * (<floating>1 - tc * tc)
        da[j] = dcj * gj * i * (<floating>1 - i)
        da[H + j] = dcj * c_prev[j] * f * (<floating>1 - f)
        da[2 * H + j] = dcj * i * (<floating>1 - gj * gj)
        da[3 * H + j] = dhj * tc * o * (<floating>1 - o)
        dc[j] = dcj * f
        dh[j] = 0


include "_engine.pxi"


def forward(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
            const floating[::1] bias, const floating[:, ::1] W_hh, const floating[::1] W_ch,
            const floating[:, ::1] h0, const floating[:, ::1] c0,
            const int64_t[::1] lengths, bint peephole, bint bf16, bint use_blas, int num_threads,
            floating[:, :, ::1] gates, floating[:, ::1] work, floating[:, :, ::1] c,
            floating[:, :, ::1] out, floating[:, ::1] h_n, floating[:, ::1] c_n):
    """LSTM forward over a whole sequence.

    Inputs:  x2d (T*B, I), W_ih (4H, I), bias (4H,) = b_ih + b_hh (zeros if none),
             W_hh (4H, H), W_ch (3H,) the peepholes (read when ``peephole``),
             h0 (B, H), c0 (B, H), lengths (B,) int64, bf16 (bfloat16 products: _engine_forward), use_blas (read by the
             Numba kernels only: the engine has its own product), num_threads (the engine's threads).
    Work:    work (B, 4H) (unused here).
    Outputs (overwritten): gates (S, B, 4H) the activated gates i, f, g, o of
             each step (zero past a sequence's length), c (S, B, H) the cell
             state c_t (frozen past the length), both of the last S steps
             (S = T in training, fewer in inference: see _engine_forward), out (T, B, H) h_t (zero past
             the length), h_n and c_n (B, H) the states after each sequence's
             last step.

    float32 and float64 (all arrays one dtype).
    """
    c_n[:, :] = c0
    _engine_forward(x2d, W_ih, W_hh, bias, h0, lengths, num_threads, &gates[0, 0, 0],
                    gates.shape[0], &out[0, 0, 0], &c_n[0, 0], &c[0, 0, 0], &W_ch[0], peephole,
                    h_n, bf16)


def backward(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
             const floating[:, ::1] W_hh, const floating[::1] W_ch, const floating[:, ::1] h0,
             const floating[:, ::1] c0, const floating[:, :, ::1] out,
             const floating[:, :, ::1] c, const floating[:, :, ::1] gates,
             const floating[:, :, ::1] d_out, const floating[:, ::1] d_h_n,
             const floating[:, ::1] d_c_n, const int64_t[::1] lengths,
             bint peephole, bint bf16, bint use_blas, int num_threads,
             floating[:, :, ::1] da, floating[:, ::1] work,
             floating[:, ::1] dx2d, floating[:, ::1] dh0, floating[:, ::1] dc0,
             floating[:, ::1] dW_ih, floating[:, ::1] dW_hh, floating[::1] db,
             floating[::1] dW_ch):
    """LSTM BPTT over a whole sequence.

    Inputs:  x2d (T*B, I), W_ih (4H, I), W_hh (4H, H), W_ch (3H,), h0, c0 (B, H), and from
             the forward out, c (T, B, H) and gates (T, B, 4H); d_out (T, B, H),
             d_h_n, d_c_n (B, H), lengths (B,) int64, use_blas, num_threads
             (as in forward).
    Work:    da (S, B, 4H) the gradients of the gates' pre-activations of a
             chunk of S <= T steps (see _engine_backward), work
             (B, H) (unused here).
    Outputs (overwritten): dx2d (T*B, I), dh0, dc0 (B, H), dW_ih (4H, I),
             dW_hh (4H, H), db (4H,) (the gradient of b_ih and of b_hh alike),
             dW_ch (3H,) (zeros without peepholes).

    float32 and float64 (all arrays one dtype).
    """
    dh0[:, :] = d_h_n
    dc0[:, :] = d_c_n
    dW_ch[:] = 0
    _engine_backward(W_hh, lengths, num_threads, &gates[0, 0, 0], &c[0, 0, 0], &c[0, 0, 0],
                     &c0[0, 0], d_out, dh0, &dc0[0, 0], da, da, &W_ch[0], &dW_ch[0], peephole,
                     x2d, W_ih, h0, out, dx2d, dW_ih, dW_hh, &db[0], &db[0], bf16)
