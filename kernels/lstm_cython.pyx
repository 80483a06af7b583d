"""LSTM kernels, Cython backend: forward recurrence, then BPTT.

These kernels trust their inputs: ``fastrnn._driver`` has checked shapes and
dtypes, made every array C-contiguous and of one float dtype, allocated the
outputs and workspace, and chosen ``use_blas`` and ``num_threads`` (see
``fastrnn._tuning``).  Shape letters: T steps, B batch, I input features,
H hidden units; the gate blocks of width H are i, f, g, o (PyTorch's order).

Read side by side with ``fastrnn/reference.py`` (the specification) and
``kernels/lstm_numba.py`` (the same loops in Numba).  The steps every cell
shares (BLAS, activations, input projection, W_hh^T copy, weight gradients)
are in ``_common.pxi``; the threading is the Elman kernel's (see
``rnn_cython.pyx``).  Bounds checks, wraparound and initialised-memoryview
checks come from setup.py's directives, so none are set here.
"""
include "_common.pxi"


cdef inline void _forward_row(Py_ssize_t t, Py_ssize_t b, const int64_t[::1] lengths,
                              const floating* W_hhT, bint matmul,
                              floating[:, ::1] work, floating[:, :, ::1] gates,
                              floating[:, :, ::1] c, floating[:, :, ::1] out,
                              floating[:, ::1] h_n, floating[:, ::1] c_n) noexcept nogil:
    """Step t of sequence b: the gates, c[t, b] = c_n[b] and out[t, b] = h_n[b].

    W_hhT: W_hh^T (H, 4H) packed by _packed_for_loops, read only with ``matmul``.
    On entry gates[t, b] holds x_t W_ih^T + bias.  With ``matmul`` false,
    work[b] already holds h_n[b] @ W_hhT (computed by BLAS for all rows).
    Touches row b only, so rows can run on different threads.
    """
    cdef Py_ssize_t j, H = out.shape[2]
    cdef floating i, f, g, o, cj, hj
    if t < lengths[b]:
        if matmul:
            # One product for all four gates: work[b] = h_{t-1} W_hh^T.
            _matmul_row(&h_n[b, 0], W_hhT, H, 4 * H, &work[b, 0])
        for j in range(H):
            i = _sigmoid(gates[t, b, j] + work[b, j])
            f = _sigmoid(gates[t, b, H + j] + work[b, H + j])
            g = _tanh(gates[t, b, 2 * H + j] + work[b, 2 * H + j])
            o = _sigmoid(gates[t, b, 3 * H + j] + work[b, 3 * H + j])
            cj = f * c_n[b, j] + i * g
            hj = o * _tanh(cj)
            gates[t, b, j] = i
            gates[t, b, H + j] = f
            gates[t, b, 2 * H + j] = g
            gates[t, b, 3 * H + j] = o
            c[t, b, j] = cj
            c_n[b, j] = cj
            out[t, b, j] = hj
            h_n[b, j] = hj
    else:
        for j in range(4 * H):
            gates[t, b, j] = 0
        for j in range(H):
            c[t, b, j] = c_n[b, j]
            out[t, b, j] = 0


def forward(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
            const floating[::1] bias, const floating[:, ::1] W_hh,
            const floating[:, ::1] h0, const floating[:, ::1] c0,
            const int64_t[::1] lengths, bint use_blas, int num_threads,
            floating[:, :, ::1] gates, floating[:, ::1] work, floating[:, :, ::1] c,
            floating[:, :, ::1] out, floating[:, ::1] h_n, floating[:, ::1] c_n):
    """LSTM forward over a whole sequence.

    Inputs:  x2d (T*B, I), W_ih (4H, I), bias (4H,) = b_ih + b_hh (zeros if none),
             W_hh (4H, H), h0 (B, H), c0 (B, H), lengths (B,) int64, use_blas,
             num_threads (OpenMP threads over the batch rows of the hand loop,
             as in the Elman kernels).
    Work:    work (B, 4H).
    Outputs (overwritten): gates (T, B, 4H) the activated gates i, f, g, o of
             each step (zero past a sequence's length), c (T, B, H) the cell
             state c_t (frozen past the length), out (T, B, H) h_t (zero past
             the length), h_n and c_n (B, H) the states after each sequence's
             last step.

    Runs without the GIL.  float32 and float64 (all arrays one dtype).
    """
    cdef Py_ssize_t T = out.shape[0], B = out.shape[1], H = out.shape[2]
    cdef Py_ssize_t t, b, j
    # As in the Elman kernel: OpenMP threads for the hand loop only, never beside BLAS's.
    cdef bint parallel = num_threads > 1 and B > 1 and not use_blas
    cdef bint hand = not use_blas
    # W_hh^T packed for the hand loops (NULL with BLAS, which reads W_hh as it is).
    cdef floating* W_hhT = _packed_for_loops(W_hh, True, use_blas)
    try:
        with nogil:
            # Every step's input term in one GEMM, into gates, which each step then
            # overwrites with its activated gates.
            _project_inputs(x2d, W_ih, bias, gates)
            for b in range(B):
                for j in range(H):
                    h_n[b, j] = h0[b, j]
                    c_n[b, j] = c0[b, j]
            for t in range(T):
                if use_blas:
                    # One product for all four gates: work = h_{t-1} W_hh^T, by BLAS
                    # for every row (frozen rows are ignored by _forward_row).
                    _gemm(False, True, <int>B, <int>(4 * H), <int>H,
                          1, &h_n[0, 0], <int>H, &W_hh[0, 0], <int>H,
                          0, &work[0, 0], <int>(4 * H))
                if parallel:
                    for b in prange(B, num_threads=num_threads, schedule='static'):
                        _forward_row(t, b, lengths, W_hhT, hand, work, gates, c, out, h_n, c_n)
                else:
                    for b in range(B):
                        _forward_row(t, b, lengths, W_hhT, hand, work, gates, c, out, h_n, c_n)
    finally:
        free(W_hhT)


cdef inline void _backward_row(Py_ssize_t t, Py_ssize_t b, const int64_t[::1] lengths,
                               const floating* W_hhP, const floating[:, ::1] c0,
                               const floating[:, :, ::1] c,
                               const floating[:, :, ::1] gates,
                               const floating[:, :, ::1] d_out, bint matmul,
                               floating[:, :, ::1] da, floating[:, ::1] dh,
                               floating[:, ::1] dc) noexcept nogil:
    """Step t of sequence b: da[t, b] and dc[b], then (if ``matmul``) dh[b] = da[t, b] @ W_hh.

    With ``matmul`` false the caller does the product with BLAS for all rows.
    Touches row b only, so rows can run on different threads.
    """
    cdef Py_ssize_t j, H = c.shape[2]
    cdef floating i, f, g, o, c_prev, tc, dhj, dcj
    if t < lengths[b]:
        for j in range(H):
            i = gates[t, b, j]
            f = gates[t, b, H + j]
            g = gates[t, b, 2 * H + j]
            o = gates[t, b, 3 * H + j]
            c_prev = c[t - 1, b, j] if t > 0 else c0[b, j]
            tc = _tanh(c[t, b, j])
            dhj = dh[b, j] + d_out[t, b, j]
            dcj = dc[b, j] + dhj * o * (<floating>1 - tc * tc)
            da[t, b, j] = dcj * g * i * (<floating>1 - i)
            da[t, b, H + j] = dcj * c_prev * f * (<floating>1 - f)
            da[t, b, 2 * H + j] = dcj * i * (<floating>1 - g * g)
            da[t, b, 3 * H + j] = dhj * tc * o * (<floating>1 - o)
            dc[b, j] = dcj * f
        if matmul:
            # The only sequential product: dh_{t-1} = da_t @ W_hh, all gates at
            # once.  dh[b] has been consumed by da[t, b], so the product
            # overwrites it directly (the Numba kernel goes through work, to the
            # same values).
            _matmul_row(&da[t, b, 0], W_hhP, 4 * H, H, &dh[b, 0])
    else:
        # A frozen step is the identity on (h, c): dh and dc pass through.
        for j in range(4 * H):
            da[t, b, j] = 0


def backward(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
             const floating[:, ::1] W_hh, const floating[:, ::1] h0,
             const floating[:, ::1] c0, const floating[:, :, ::1] out,
             const floating[:, :, ::1] c, const floating[:, :, ::1] gates,
             const floating[:, :, ::1] d_out, const floating[:, ::1] d_h_n,
             const floating[:, ::1] d_c_n, const int64_t[::1] lengths,
             bint use_blas, int num_threads,
             floating[:, :, ::1] da, floating[:, ::1] work,
             floating[:, ::1] dx2d, floating[:, ::1] dh0, floating[:, ::1] dc0,
             floating[:, ::1] dW_ih, floating[:, ::1] dW_hh, floating[::1] db):
    """LSTM BPTT over a whole sequence.

    Inputs:  x2d (T*B, I), W_ih (4H, I), W_hh (4H, H), h0, c0 (B, H), and from
             the forward out, c (T, B, H) and gates (T, B, 4H); d_out (T, B, H),
             d_h_n, d_c_n (B, H), lengths (B,) int64, use_blas, num_threads
             (as in forward).
    Work:    da (T, B, 4H) the gradients of the gates' pre-activations, work (B, H)
             (used only with use_blas).
    Outputs (overwritten): dx2d (T*B, I), dh0, dc0 (B, H), dW_ih (4H, I),
             dW_hh (4H, H), db (4H,) (the gradient of b_ih and of b_hh alike).

    Runs without the GIL.  float32 and float64 (all arrays one dtype).
    """
    cdef Py_ssize_t T = out.shape[0], B = out.shape[1], H = out.shape[2]
    cdef Py_ssize_t t, b, j
    cdef bint parallel = num_threads > 1 and B > 1 and not use_blas
    cdef bint hand = not use_blas
    # The running dL/dh_t and dL/dc_t; after step 0 they are dL/dh0, dL/dc0.
    cdef floating[:, ::1] dh = dh0
    cdef floating[:, ::1] dc = dc0
    # W_hh packed for the hand loops (NULL with BLAS, which reads W_hh as it is).
    cdef floating* W_hhP = _packed_for_loops(W_hh, False, use_blas)
    try:
        with nogil:
            for b in range(B):
                for j in range(H):
                    dh[b, j] = d_h_n[b, j]
                    dc[b, j] = d_c_n[b, j]
            for t in range(T - 1, -1, -1):
                if parallel:
                    for b in prange(B, num_threads=num_threads, schedule='static'):
                        _backward_row(t, b, lengths, W_hhP, c0, c, gates, d_out, hand, da, dh, dc)
                else:
                    for b in range(B):
                        _backward_row(t, b, lengths, W_hhP, c0, c, gates, d_out, hand, da, dh, dc)
                if use_blas:
                    # The only sequential product: dh_{t-1} = da_t @ W_hh, all gates at
                    # once, for every row; frozen rows must keep dh, so it lands in
                    # work first.
                    _gemm(False, False, <int>B, <int>H, <int>(4 * H),
                          1, &da[t, 0, 0], <int>(4 * H), &W_hh[0, 0], <int>H,
                          0, &work[0, 0], <int>H)
                    for b in range(B):
                        if t < lengths[b]:
                            for j in range(H):
                                dh[b, j] = work[b, j]
            # Everything else is one large GEMM per gradient over all T*B rows.
            _weight_gradients(x2d, W_ih, h0, out, da, da, dx2d, dW_ih, dW_hh, db, db)
    finally:
        free(W_hhP)
