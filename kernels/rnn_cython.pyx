"""Elman RNN kernels, Cython backend: forward recurrence, then BPTT.

These kernels trust their inputs: ``fastrnn._driver`` has checked shapes and
dtypes, made every array C-contiguous and of one float dtype, allocated the
outputs and workspace, and chosen ``use_blas`` and ``num_threads`` (see
``fastrnn._tuning``).  Shape letters: T steps, B batch, I input features,
H hidden units.

Read side by side with ``fastrnn/reference.py`` (the specification) and
``kernels/rnn_numba.py`` (the same loops in Numba).  One source serves
float32 and float64 through the fused type ``floating``; only ``_gemm`` and
``_tanh`` branch on it.  The steps every cell shares (BLAS, input projection,
W_hh^T copy, weight gradients) are in ``_common.pxi``.  Bounds checks,
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


cdef inline void _forward_row(Py_ssize_t t, Py_ssize_t b, const int64_t[::1] lengths,
                              const floating* W_hhT, bint relu, bint matmul,
                              floating[:, ::1] work, floating[:, :, ::1] out,
                              floating[:, ::1] h_n) noexcept nogil:
    """Step t of sequence b: out[t, b] = h_n[b] = act(out[t, b] + h_n[b] @ W_hhT).

    W_hhT: W_hh^T (H, H) packed by _packed_for_loops, read only with ``matmul``.
    On entry out[t, b] holds x_t W_ih^T + bias.  With ``matmul`` false,
    work[b] already holds h_n[b] @ W_hhT (computed by BLAS for all rows).
    Touches row b only, so rows can run on different threads.
    """
    cdef Py_ssize_t j, H = out.shape[2]
    cdef floating v
    if t < lengths[b]:
        if matmul:
            _matmul_row(&h_n[b, 0], W_hhT, H, H, &work[b, 0])
        for j in range(H):
            v = _act(out[t, b, j] + work[b, j], relu)
            out[t, b, j] = v
            h_n[b, j] = v
    else:
        for j in range(H):
            out[t, b, j] = 0


def forward(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
            const floating[::1] bias, const floating[:, ::1] W_hh,
            const floating[:, ::1] h0, const int64_t[::1] lengths,
            bint relu, bint use_blas, int num_threads,
            floating[:, ::1] work, floating[:, :, ::1] out, floating[:, ::1] h_n):
    """Elman forward over a whole sequence.

    Inputs:  x2d (T*B, I), W_ih (H, I), bias (H,) = b_ih + b_hh (zeros if none),
             W_hh (H, H), h0 (B, H), lengths (B,) int64, relu, use_blas,
             num_threads (OpenMP threads over the batch rows of the hand loop;
             1 runs serially; unused with use_blas, where BLAS's threads work).
    Work:    work (B, H).
    Outputs (overwritten): out (T, B, H) the states h_t (zero past a sequence's
             length), h_n (B, H) each sequence's state after its last step.

    Runs without the GIL.  float32 and float64 (all arrays one dtype).
    """
    cdef Py_ssize_t T = out.shape[0], B = out.shape[1], H = out.shape[2]
    cdef Py_ssize_t t, b, j
    # Rows go to OpenMP threads only around the hand loop.  A parallel region per
    # step costs microseconds, and with one thread or one row there is nothing
    # to share.  With BLAS, its own threads already share the step's product,
    # and libgomp's workers spin-wait after each region, taking the cores BLAS
    # needs: measured on 2 cores, B=16 H=256 float32 went from 0.14 to 10 ms per
    # step.  The elementwise rest is O(B*H) against BLAS's O(B*H*H), so serial.
    cdef bint parallel = num_threads > 1 and B > 1 and not use_blas
    # The hand loop runs inside the per-row function; BLAS runs once per step
    # for all rows, before it.
    cdef bint hand = not use_blas
    # W_hh^T packed for the hand loops (NULL with BLAS, which reads W_hh as it is).
    cdef floating* W_hhT = _packed_for_loops(W_hh, True, use_blas)
    try:
        with nogil:
            # Only the recurrence is sequential: every step's input term in one GEMM,
            # written straight into out, which later holds the states.
            _project_inputs(x2d, W_ih, bias, out)
            for b in range(B):
                for j in range(H):
                    h_n[b, j] = h0[b, j]
            for t in range(T):
                if use_blas:
                    # BLAS computes every row (frozen rows are ignored by _forward_row).
                    _gemm(False, True, <int>B, <int>H, <int>H,
                          1, &h_n[0, 0], <int>H, &W_hh[0, 0], <int>H,
                          0, &work[0, 0], <int>H)
                if parallel:
                    for b in prange(B, num_threads=num_threads, schedule='static'):
                        _forward_row(t, b, lengths, W_hhT, relu, hand, work, out, h_n)
                else:
                    for b in range(B):
                        _forward_row(t, b, lengths, W_hhT, relu, hand, work, out, h_n)
    finally:
        free(W_hhT)


cdef inline void _backward_row(Py_ssize_t t, Py_ssize_t b, const int64_t[::1] lengths,
                               const floating* W_hhP,
                               const floating[:, :, ::1] out,
                               const floating[:, :, ::1] d_out, bint relu, bint matmul,
                               floating[:, :, ::1] da, floating[:, ::1] dh) noexcept nogil:
    """Step t of sequence b: da[t, b], then (if ``matmul``) dh[b] = da[t, b] @ W_hh.

    With ``matmul`` false the caller does the product with BLAS for all rows.
    Touches row b only, so rows can run on different threads.
    """
    cdef Py_ssize_t j, H = out.shape[2]
    if t < lengths[b]:
        for j in range(H):
            da[t, b, j] = (dh[b, j] + d_out[t, b, j]) * _act_grad(out[t, b, j], relu)
        if matmul:
            # The only sequential product: dh_{t-1} = da_t @ W_hh.  dh[b] has been
            # consumed by da[t, b], so the product overwrites it directly
            # (the Numba kernel goes through work, to the same values).
            _matmul_row(&da[t, b, 0], W_hhP, H, H, &dh[b, 0])
    else:
        # A frozen step is the identity on h: dh passes through untouched.
        for j in range(H):
            da[t, b, j] = 0


def backward(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
             const floating[:, ::1] W_hh, const floating[:, ::1] h0,
             const floating[:, :, ::1] out, const floating[:, :, ::1] d_out,
             const floating[:, ::1] d_h_n, const int64_t[::1] lengths,
             bint relu, bint use_blas, int num_threads,
             floating[:, :, ::1] da, floating[:, ::1] work,
             floating[:, ::1] dx2d, floating[:, ::1] dh0,
             floating[:, ::1] dW_ih, floating[:, ::1] dW_hh, floating[::1] db):
    """Elman BPTT over a whole sequence.

    Inputs:  x2d (T*B, I), W_ih (H, I), W_hh (H, H), h0 (B, H), out (T, B, H)
             the forward states, d_out (T, B, H), d_h_n (B, H), lengths (B,) int64,
             relu, use_blas, num_threads (as in forward).
    Work:    da (T, B, H) the pre-activation gradients, work (B, H) (used only
             with use_blas).
    Outputs (overwritten): dx2d (T*B, I), dh0 (B, H), dW_ih (H, I),
             dW_hh (H, H), db (H,) (the gradient of b_ih and of b_hh alike).

    Runs without the GIL.  float32 and float64 (all arrays one dtype).
    """
    cdef Py_ssize_t T = out.shape[0], B = out.shape[1], H = out.shape[2]
    cdef Py_ssize_t t, b, j
    # As in forward: OpenMP threads for the hand loop only, never beside BLAS's.
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
                        _backward_row(t, b, lengths, W_hhP, out, d_out, relu, hand, da, dh)
                else:
                    for b in range(B):
                        _backward_row(t, b, lengths, W_hhP, out, d_out, relu, hand, da, dh)
                if use_blas:
                    # The only sequential product: dh_{t-1} = da_t @ W_hh, for every
                    # row; frozen rows must keep dh, so it lands in work first.
                    _gemm(False, False, <int>B, <int>H, <int>H,
                          1, &da[t, 0, 0], <int>H, &W_hh[0, 0], <int>H,
                          0, &work[0, 0], <int>H)
                    for b in range(B):
                        if t < lengths[b]:
                            for j in range(H):
                                dh[b, j] = work[b, j]
            # Everything else is one large GEMM per gradient over all T*B rows.
            _weight_gradients(x2d, W_ih, h0, out, da, da, dx2d, dW_ih, dW_hh, db, db)
    finally:
        free(W_hhP)
