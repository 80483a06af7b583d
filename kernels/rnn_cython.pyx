"""Elman RNN kernels, Cython backend: forward recurrence, then BPTT.

These kernels trust their inputs: ``fastrnn._driver`` has checked shapes and
dtypes, made every array C-contiguous and of one float dtype, allocated the
outputs and workspace, and chosen ``num_threads`` (see ``fastrnn._tuning``).
Shape letters: T steps, B batch, I input features, H hidden units.

Read side by side with ``fastrnn/reference.py`` (the specification) and
``kernels/rnn_numba.py`` (the same loops in Numba).  One source serves
float32 and float64 through the fused type ``floating``.  The recurrence runs
in the engine shared by every cell (``_engine.pxi``: packed weights, one
parallel region per sequence); ``_cell_forward`` and ``_cell_backward`` below
are the Elman cell's part of it, called for each tile of units right after
its product.  The weight gradients are in ``_common.pxi``.  Bounds checks,
wraparound and initialised-memoryview checks come from setup.py's directives
(on in the FASTRNN_CYTHON_DEBUG build), so none are set here.
"""
include "_common.pxi"


cdef inline floating _act(floating a, bint relu) noexcept nogil:
    # relu keeps NaN (NaN < 0 is False), as np.maximum does in the reference.
    # Constants are cast to ``floating``: a bare 0 or 1 becomes a double literal
    # in C, which would promote float32 arithmetic.
    if relu:
        return <floating>0 if a < <floating>0 else a
    return _tanh(a)


cdef inline floating _act_grad(floating h, bint relu) noexcept nogil:
    """d act / d a, written with the activation's output h (min-char-rnn's 1 - h*h)."""
    if relu:
        return <floating>1 if h > <floating>0 else <floating>0
    return <floating>1 - h * h


cdef inline void _cell_forward(bint running, Py_ssize_t nu, Py_ssize_t H, Py_ssize_t u,
                               const floating* acc, floating* g, const floating* h_prev,
                               floating_out h_next, floating* out, floating* state,
                               floating* saved, const floating* extra, int relu) noexcept nogil:
    """Units 0..nu-1 of one row at step t (see _engine.pxi for the arguments):
    h_t = act(x_t W_ih^T + bias + h_{t-1} W_hh^T).  ``g`` is ``out``: the
    input term is read and h_t written in its place (so out, unlike h_next,
    is no restrict pointer)."""
    cdef Py_ssize_t j
    cdef floating v
    if running:
        for j in range(nu):
            v = _act(g[j] + acc[j], relu)
            out[j] = v
            h_next[j] = v
    else:
        for j in range(nu):
            out[j] = 0
            h_next[j] = h_prev[j]


cdef inline void _cell_infer(bint running, Py_ssize_t nu, Py_ssize_t H, Py_ssize_t u,
                             const floating* acc, floating* g, const floating* h_prev,
                             floating* h_next, floating* out, floating* state,
                             floating* saved, const floating* extra, int flag) noexcept nogil:
    """The engine's inference cell (int8 compute): _cell_forward's arithmetic."""
    _cell_forward(running, nu, H, u, acc, g, h_prev, h_next, out, state, saved, extra, flag)


cdef inline void _cell_backward(bint running, Py_ssize_t nu, Py_ssize_t H, const floating* h,
                                const floating* saved, const floating* prev,
                                const floating* d_out, floating_out dh, floating* dc,
                                floating_out da, floating* da_h, const floating* extra,
                                floating* d_extra, int relu) noexcept nogil:
    """Units 0..nu-1 of one row at step t: da from dh and h_t (``h``), then
    dh = 0 (all of dL/dh_{t-1} goes through W_hh)."""
    cdef Py_ssize_t j
    if not running:
        # A frozen step is the identity on h: dh passes through.
        for j in range(nu):
            da[j] = 0
        return
    for j in range(nu):
        da[j] = (dh[j] + d_out[j]) * _act_grad(h[j], relu)
        dh[j] = 0


include "_engine.pxi"


def forward(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
            const floating[::1] bias, const floating[:, ::1] W_hh,
            const floating[:, ::1] h0, const int64_t[::1] lengths,
            bint relu, bint bf16, bint use_blas, int num_threads,
            floating[:, ::1] work, floating[:, :, ::1] out, floating[:, ::1] h_n):
    """Elman forward over a whole sequence.

    Inputs:  x2d (T*B, I), W_ih (H, I), bias (H,) = b_ih + b_hh (zeros if none),
             W_hh (H, H), h0 (B, H), lengths (B,) int64, relu, use_blas (read
             by the Numba kernels only: the engine has its own product),
             num_threads (the engine's threads).
    Work:    work (B, H) (unused here).
    Outputs (overwritten): out (T, B, H) the states h_t (zero past a sequence's
             length), h_n (B, H) each sequence's state after its last step.

    float32 and float64 (all arrays one dtype).
    """
    # The input terms go straight into out, which then holds the states.
    _engine_forward(x2d, W_ih, W_hh, bias, h0, lengths, num_threads, &out[0, 0, 0],
                    out.shape[0], &out[0, 0, 0], NULL, NULL, NULL, relu, h_n, bf16)



def forward_int8(const float[:, ::1] x2d, W_ih, const float[::1] bias, W_hh,
                 const float[:, ::1] h0, const int64_t[::1] lengths, bint relu,
                 int num_threads, float[:, ::1] work, float[:, :, ::1] out, float[:, ::1] h_n):
    """``forward`` in int8 compute (inference): W_ih, W_hh QuantizedWeights
    (fastrnn.quantize_weight); float32 otherwise."""
    _engine_forward_int8(x2d, W_ih, W_hh, bias, h0, lengths, num_threads,
                         &out[0, 0, 0], out.shape[0], &out[0, 0, 0], NULL, NULL, NULL, relu, h_n)


def backward(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
             const floating[:, ::1] W_hh, const floating[:, ::1] h0,
             const floating[:, :, ::1] out, const floating[:, :, ::1] d_out,
             const floating[:, ::1] d_h_n, const int64_t[::1] lengths,
             bint relu, bint bf16, bint use_blas, int num_threads,
             floating[:, :, ::1] da, floating[:, ::1] work,
             floating[:, ::1] dx2d, floating[:, ::1] dh0,
             floating[:, ::1] dW_ih, floating[:, ::1] dW_hh, floating[::1] db):
    """Elman BPTT over a whole sequence.

    Inputs:  x2d (T*B, I), W_ih (H, I), W_hh (H, H), h0 (B, H), out (T, B, H)
             the forward states, d_out (T, B, H), d_h_n (B, H), lengths (B,) int64,
             relu, use_blas, num_threads (as in forward).
    Work:    da (S, B, H) the pre-activation gradients of a chunk of S <= T
             steps (see _engine_backward), work (B, H) (unused here).
    Outputs (overwritten): dx2d (T*B, I), dh0 (B, H), dW_ih (H, I),
             dW_hh (H, H), db (H,) (the gradient of b_ih and of b_hh alike).

    float32 and float64 (all arrays one dtype).
    """
    dh0[:, :] = d_h_n
    _engine_backward(W_hh, lengths, num_threads, &out[0, 0, 0], NULL, NULL, NULL, d_out, dh0,
                     NULL, da, da, NULL, NULL, relu, x2d, W_ih, h0, out, dx2d, dW_ih, dW_hh,
                     &db[0], &db[0], bf16)
