"""GRU kernels, Cython backend: forward recurrence, then BPTT.

These kernels trust their inputs: ``fastrnn._driver`` has checked shapes and
dtypes, made every array C-contiguous and of one float dtype, allocated the
outputs and workspace, and chosen ``use_blas`` and ``num_threads`` (see
``fastrnn._tuning``).  Shape letters: T steps, B batch, I input features,
H hidden units; the gate blocks of width H are r, z, n (PyTorch's order), and
b_hn stays inside the reset product: n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn)).

Read side by side with ``fastrnn/reference.py`` (the specification) and
``kernels/gru_numba.py`` (the same loops in Numba).  The steps every cell
shares (BLAS, activations, input projection, W_hh^T copy, weight gradients)
are in ``_common.pxi``; the threading is the Elman kernel's (see
``rnn_cython.pyx``).  Bounds checks, wraparound and initialised-memoryview
checks come from setup.py's directives, so none are set here.
"""
include "_common.pxi"


cdef inline void _forward_row(Py_ssize_t t, Py_ssize_t b, const int64_t[::1] lengths,
                              const floating* W_hhT, bint matmul,
                              const floating[::1] b_hn, floating[:, ::1] work,
                              floating[:, :, ::1] gates, floating[:, :, ::1] hn,
                              floating[:, :, ::1] out, floating[:, ::1] h_n) noexcept nogil:
    """Step t of sequence b: the gates, hn[t, b], and out[t, b] = h_n[b].

    W_hhT: W_hh^T (H, 3H) packed by _packed_for_loops, read only with ``matmul``.
    On entry gates[t, b] holds x_t W_ih^T + bias.  With ``matmul`` false,
    work[b] already holds h_n[b] @ W_hhT (computed by BLAS for all rows).
    Touches row b only, so rows can run on different threads.
    """
    cdef Py_ssize_t j, H = out.shape[2]
    cdef floating r, z, hnj, n, hj
    if t < lengths[b]:
        if matmul:
            # One product for all three gates: work[b] = h_{t-1} W_hh^T.
            _matmul_row(&h_n[b, 0], W_hhT, H, 3 * H, &work[b, 0])
        for j in range(H):
            r = _sigmoid(gates[t, b, j] + work[b, j])
            z = _sigmoid(gates[t, b, H + j] + work[b, H + j])
            hnj = work[b, 2 * H + j] + b_hn[j]
            n = _tanh(gates[t, b, 2 * H + j] + r * hnj)
            hj = (<floating>1 - z) * n + z * h_n[b, j]
            gates[t, b, j] = r
            gates[t, b, H + j] = z
            gates[t, b, 2 * H + j] = n
            hn[t, b, j] = hnj
            out[t, b, j] = hj
            h_n[b, j] = hj
    else:
        for j in range(3 * H):
            gates[t, b, j] = 0
        for j in range(H):
            hn[t, b, j] = 0
            out[t, b, j] = 0


def forward(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
            const floating[::1] bias, const floating[::1] b_hn,
            const floating[:, ::1] W_hh, const floating[:, ::1] h0,
            const int64_t[::1] lengths, bint use_blas, int num_threads,
            floating[:, :, ::1] gates, floating[:, ::1] work, floating[:, :, ::1] hn,
            floating[:, :, ::1] out, floating[:, ::1] h_n):
    """GRU forward over a whole sequence.

    Inputs:  x2d (T*B, I), W_ih (3H, I), bias (3H,) = b_ih + (b_hr, b_hz, 0),
             b_hn (H,) (zeros if there is no b_hh), W_hh (3H, H), h0 (B, H),
             lengths (B,) int64, use_blas, num_threads (OpenMP threads over the
             batch rows of the hand loop, as in the Elman kernels).
    Work:    work (B, 3H).
    Outputs (overwritten): gates (T, B, 3H) the activated gates r, z, n of each
             step (zero past a sequence's length), hn (T, B, H) the term
             h_{t-1} W_hn^T + b_hn that r multiplies, out (T, B, H) h_t (zero
             past the length), h_n (B, H) the state after each sequence's last step.

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
            _project_inputs(x2d, W_ih, bias, gates)
            for b in range(B):
                for j in range(H):
                    h_n[b, j] = h0[b, j]
            for t in range(T):
                if use_blas:
                    # One product for all three gates: work = h_{t-1} W_hh^T, by BLAS
                    # for every row (frozen rows are ignored by _forward_row).
                    _gemm(False, True, <int>B, <int>(3 * H), <int>H,
                          1, &h_n[0, 0], <int>H, &W_hh[0, 0], <int>H,
                          0, &work[0, 0], <int>(3 * H))
                if parallel:
                    for b in prange(B, num_threads=num_threads, schedule='static'):
                        _forward_row(t, b, lengths, W_hhT, hand, b_hn, work, gates, hn, out, h_n)
                else:
                    for b in range(B):
                        _forward_row(t, b, lengths, W_hhT, hand, b_hn, work, gates, hn, out, h_n)
    finally:
        free(W_hhT)


cdef inline void _backward_row(Py_ssize_t t, Py_ssize_t b, const int64_t[::1] lengths,
                               const floating* W_hhP, const floating[:, ::1] h0,
                               const floating[:, :, ::1] out,
                               const floating[:, :, ::1] gates,
                               const floating[:, :, ::1] hn,
                               const floating[:, :, ::1] d_out, bint matmul,
                               floating[:, :, ::1] da_x, floating[:, :, ::1] da_h,
                               floating[:, ::1] work, floating[:, ::1] dh) noexcept nogil:
    """Step t of sequence b: da_x[t, b], da_h[t, b] and dh[b] = the direct path,
    then (if ``matmul``) dh[b] += da_h[t, b] @ W_hh, through work[b].

    With ``matmul`` false the caller adds the product, by BLAS for all rows.
    Touches row b only, so rows can run on different threads.
    """
    cdef Py_ssize_t j, H = out.shape[2]
    cdef floating r, z, n, h_prev, dhj, dn, dr, dz
    if t < lengths[b]:
        for j in range(H):
            r = gates[t, b, j]
            z = gates[t, b, H + j]
            n = gates[t, b, 2 * H + j]
            h_prev = out[t - 1, b, j] if t > 0 else h0[b, j]
            dhj = dh[b, j] + d_out[t, b, j]
            dn = dhj * (<floating>1 - z) * (<floating>1 - n * n)
            dr = dn * hn[t, b, j] * r * (<floating>1 - r)
            dz = dhj * (h_prev - n) * z * (<floating>1 - z)
            da_x[t, b, j] = dr
            da_x[t, b, H + j] = dz
            da_x[t, b, 2 * H + j] = dn
            da_h[t, b, j] = dr
            da_h[t, b, H + j] = dz
            da_h[t, b, 2 * H + j] = dn * r
            dh[b, j] = dhj * z  # the direct path; the product is added below
        if matmul:
            # The only sequential product: dh_{t-1} += da_h_t @ W_hh, all gates at once.
            _matmul_row(&da_h[t, b, 0], W_hhP, 3 * H, H, &work[b, 0])
            for j in range(H):
                dh[b, j] += work[b, j]
    else:
        # A frozen step is the identity on h: dh passes through untouched.
        for j in range(3 * H):
            da_x[t, b, j] = 0
            da_h[t, b, j] = 0


def backward(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
             const floating[:, ::1] W_hh, const floating[:, ::1] h0,
             const floating[:, :, ::1] out, const floating[:, :, ::1] gates,
             const floating[:, :, ::1] hn, const floating[:, :, ::1] d_out,
             const floating[:, ::1] d_h_n, const int64_t[::1] lengths,
             bint use_blas, int num_threads,
             floating[:, :, ::1] da_x, floating[:, :, ::1] da_h, floating[:, ::1] work,
             floating[:, ::1] dx2d, floating[:, ::1] dh0, floating[:, ::1] dW_ih,
             floating[:, ::1] dW_hh, floating[::1] db_ih, floating[::1] db_hh):
    """GRU BPTT over a whole sequence.

    Inputs:  x2d (T*B, I), W_ih (3H, I), W_hh (3H, H), h0 (B, H), and from the
             forward out, hn (T, B, H) and gates (T, B, 3H); d_out (T, B, H),
             d_h_n (B, H), lengths (B,) int64, use_blas, num_threads (as in forward).
    Work:    da_x, da_h (T, B, 3H): the gradients of the input term
             x_t W_ih^T + b_ih and of the recurrent term h_{t-1} W_hh^T + b_hh
             (they differ in the n block by the factor r); work (B, H).
    Outputs (overwritten): dx2d (T*B, I), dh0 (B, H), dW_ih (3H, I),
             dW_hh (3H, H), db_ih, db_hh (3H,).

    Runs without the GIL.  float32 and float64 (all arrays one dtype).
    """
    cdef Py_ssize_t T = out.shape[0], B = out.shape[1], H = out.shape[2]
    cdef Py_ssize_t t, b, j
    cdef bint parallel = num_threads > 1 and B > 1 and not use_blas
    cdef bint hand = not use_blas
    # dh0 is the running dL/dh_t; what is left after step 0 is dL/dh0.
    cdef floating[:, ::1] dh = dh0
    # W_hh packed for the hand loops (NULL with BLAS, which reads W_hh as it is).
    cdef floating* W_hhP = _packed_for_loops(W_hh, False, use_blas)
    try:
        with nogil:
            for b in range(B):
                for j in range(H):
                    dh[b, j] = d_h_n[b, j]
            for t in range(T - 1, -1, -1):
                if parallel:
                    for b in prange(B, num_threads=num_threads, schedule='static'):
                        _backward_row(t, b, lengths, W_hhP, h0, out, gates, hn, d_out, hand,
                                      da_x, da_h, work, dh)
                else:
                    for b in range(B):
                        _backward_row(t, b, lengths, W_hhP, h0, out, gates, hn, d_out, hand,
                                      da_x, da_h, work, dh)
                if use_blas:
                    # The only sequential product: dh_{t-1} += da_h_t @ W_hh, all gates at
                    # once, for every row; frozen rows must keep dh, so it lands in
                    # work first and is added for the running rows.
                    _gemm(False, False, <int>B, <int>H, <int>(3 * H),
                          1, &da_h[t, 0, 0], <int>(3 * H), &W_hh[0, 0], <int>H,
                          0, &work[0, 0], <int>H)
                    for b in range(B):
                        if t < lengths[b]:
                            for j in range(H):
                                dh[b, j] += work[b, j]
            # Everything else is one large GEMM per gradient over all T*B rows.
            _weight_gradients(x2d, W_ih, h0, out, da_x, da_h, dx2d, dW_ih, dW_hh, db_ih, db_hh)
    finally:
        free(W_hhP)
