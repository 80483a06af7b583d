"""GRU kernels, Cython backend: forward recurrence, then BPTT.

These kernels trust their inputs: ``fastrnn._driver`` has checked shapes and
dtypes, made every array C-contiguous and of one float dtype, allocated the
outputs and workspace, and chosen ``num_threads`` (see ``fastrnn._tuning``).  Shape letters: T steps, B batch, I input features,
H hidden units; the gate blocks of width H are r, z, n (PyTorch's order), and
b_hn stays inside the reset product: n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn)).

Read side by side with ``fastrnn/reference.py`` (the specification) and
``kernels/gru_numba.py`` (the same loops in Numba).  The recurrence runs in
the engine shared by every cell (``_engine.pxi``); the two functions below
are the GRU's gate arithmetic, called for each tile of units right after its
product.  Bounds checks, wraparound and initialised-memoryview
checks come from setup.py's directives, so none are set here.
"""
include "_common.pxi"


cdef inline void _cell_forward(bint running, Py_ssize_t nu, Py_ssize_t H, Py_ssize_t u,
                               const floating* acc, floating* g, const floating* h_prev,
                               floating* h_next, floating* out, floating* state,
                               floating* hn, const floating* b_hn, int flag) noexcept nogil:
    """Units 0..nu-1 of one row at step t (see _engine.pxi for the arguments):
    hn this step's saved h_{t-1} W_hn^T + b_hn."""
    cdef Py_ssize_t j
    cdef floating r, z, hnj, n, hj
    if running:
        for j in range(nu):
            r = _sigmoid(g[j] + acc[j])
            z = _sigmoid(g[H + j] + acc[u + j])
            hnj = acc[2 * u + j] + b_hn[j]
            n = _tanh(g[2 * H + j] + r * hnj)
            hj = (<floating>1 - z) * n + z * h_prev[j]
            g[j] = r
            g[H + j] = z
            g[2 * H + j] = n
            hn[j] = hnj
            out[j] = hj
            h_next[j] = hj
    else:
        for j in range(nu):
            g[j] = 0
            g[H + j] = 0
            g[2 * H + j] = 0
            hn[j] = 0
            out[j] = 0
            h_next[j] = h_prev[j]


cdef inline void _cell_backward(bint running, Py_ssize_t nu, Py_ssize_t H, const floating* g,
                                const floating* hn, const floating* h_prev,
                                const floating* d_out, floating* dh, floating* dc,
                                floating* da_x, floating* da_h, const floating* extra,
                                floating* d_extra, int flag) noexcept nogil:
    """Units 0..nu-1 of one row at step t: da_x, da_h from dh, then
    dh = dL/dh_t z, the direct path (the engine adds da_h W_hh)."""
    cdef Py_ssize_t j
    cdef floating r, z, n, dhj, dn, dr, dz
    if not running:
        # A frozen step is the identity on h: dh passes through.
        for j in range(nu):
            da_x[j] = 0
            da_x[H + j] = 0
            da_x[2 * H + j] = 0
            da_h[j] = 0
            da_h[H + j] = 0
            da_h[2 * H + j] = 0
        return
    for j in range(nu):
        r = g[j]
        z = g[H + j]
        n = g[2 * H + j]
        dhj = dh[j] + d_out[j]
        dn = dhj * (<floating>1 - z) * (<floating>1 - n * n)
        dr = dn * hn[j] * r * (<floating>1 - r)
        dz = dhj * (h_prev[j] - n) * z * (<floating>1 - z)
        da_x[j] = dr
        da_x[H + j] = dz
        da_x[2 * H + j] = dn
        da_h[j] = dr
        da_h[H + j] = dz
        da_h[2 * H + j] = dn * r
        dh[j] = dhj * z


include "_engine.pxi"


def forward(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
            const floating[::1] bias, const floating[::1] b_hn,
            const floating[:, ::1] W_hh, const floating[:, ::1] h0,
            const int64_t[::1] lengths, bint bf16, bint use_blas, int num_threads,
            floating[:, :, ::1] gates, floating[:, ::1] work, floating[:, :, ::1] hn,
            floating[:, :, ::1] out, floating[:, ::1] h_n):
    """GRU forward over a whole sequence.

    Inputs:  x2d (T*B, I), W_ih (3H, I), bias (3H,) = b_ih + (b_hr, b_hz, 0),
             b_hn (H,) (zeros if there is no b_hh), W_hh (3H, H), h0 (B, H),
             lengths (B,) int64, use_blas (read by the Numba kernels only: the
             engine has its own product), num_threads (the engine's threads).
    Work:    work (B, 3H) (unused here).
    Outputs (overwritten): gates (S, B, 3H) the activated gates r, z, n of each
             step (zero past a sequence's length), hn (S, B, H) the term
             h_{t-1} W_hn^T + b_hn that r multiplies, both of the last S steps
             (S = T in training, fewer in inference: see _engine_forward),
             out (T, B, H) h_t (zero past the length), h_n (B, H) the state
             after each sequence's last step.

    float32 and float64 (all arrays one dtype).
    """
    _engine_forward(x2d, W_ih, W_hh, bias, h0, lengths, num_threads, &gates[0, 0, 0],
                    gates.shape[0], &out[0, 0, 0], NULL, &hn[0, 0, 0], &b_hn[0], 0, h_n, bf16)


def backward(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
             const floating[:, ::1] W_hh, const floating[:, ::1] h0,
             const floating[:, :, ::1] out, const floating[:, :, ::1] gates,
             const floating[:, :, ::1] hn, const floating[:, :, ::1] d_out,
             const floating[:, ::1] d_h_n, const int64_t[::1] lengths,
             bint bf16, bint use_blas, int num_threads,
             floating[:, :, ::1] da_x, floating[:, :, ::1] da_h, floating[:, ::1] work,
             floating[:, ::1] dx2d, floating[:, ::1] dh0, floating[:, ::1] dW_ih,
             floating[:, ::1] dW_hh, floating[::1] db_ih, floating[::1] db_hh):
    """GRU BPTT over a whole sequence.

    Inputs:  x2d (T*B, I), W_ih (3H, I), W_hh (3H, H), h0 (B, H), and from the
             forward out, hn (T, B, H) and gates (T, B, 3H); d_out (T, B, H),
             d_h_n (B, H), lengths (B,) int64, use_blas, num_threads (as in forward).
    Work:    da_x, da_h (S, B, 3H), a chunk of S <= T steps (see
             _engine_backward): the gradients of the input term
             x_t W_ih^T + b_ih and of the recurrent term h_{t-1} W_hh^T + b_hh
             (they differ in the n block by the factor r); work (B, H) (unused here).
    Outputs (overwritten): dx2d (T*B, I), dh0 (B, H), dW_ih (3H, I),
             dW_hh (3H, H), db_ih, db_hh (3H,).

    float32 and float64 (all arrays one dtype).
    """
    dh0[:, :] = d_h_n
    _engine_backward(W_hh, lengths, num_threads, &gates[0, 0, 0], &hn[0, 0, 0], &out[0, 0, 0],
                     &h0[0, 0], d_out, dh0, NULL, da_x, da_h, NULL, NULL, 0,
                     x2d, W_ih, h0, out, dx2d, dW_ih, dW_hh, &db_ih[0], &db_hh[0], bf16)
