"""GRU kernels, Cython backend: forward recurrence, then BPTT.

These kernels trust their inputs: ``fastrnn._driver`` has checked shapes and
dtypes, made every array C-contiguous and of one float dtype, allocated the
outputs and workspace, and chosen ``num_threads`` (see ``fastrnn._tuning``).  Shape letters: T steps, B batch, I input features,
H hidden units; the gate blocks of width H are r, z, n (PyTorch's order), and
b_hn stays inside the reset product: n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn)).
With ``reset_before`` (the option reset_after=False) r comes first and b_hn
is added after: n = tanh(x W_in^T + b_in + (r * h) W_hn^T + b_hn)
(``_forward_reset_before``, ``_backward_reset_before``).

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


# ---- the reset before the product (reset_after=False) ---------------------------
#
# Two products a step with an elementwise pass between them (r * h_{t-1}
# needs every unit's r before the n block's product can start), forward and
# backward.  They run as BLAS products a step at a time, as the engine's
# short sequences do (_forward_unpacked), not on the engine's packed panels:
# the engine's one product per step does not have that second phase yet.


cdef int _forward_reset_before(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
                               const floating[::1] bias, const floating[::1] b_hn,
                               const floating[:, ::1] W_hh, const floating[:, ::1] h0,
                               const int64_t[::1] lengths, int num_threads,
                               floating[:, :, ::1] gates, floating[:, :, ::1] hn,
                               floating[:, :, ::1] out, floating[:, ::1] h_n) except -1:
    """The forward with the reset before the n block's product.  Step t's
    gates and r * h_{t-1} (the n block's operand, saved for the backward) go
    to row t % ring of gates and hn (ring = T in training)."""
    cdef Py_ssize_t B = h0.shape[0], H = h0.shape[1], I = x2d.shape[1]
    cdef Py_ssize_t T = x2d.shape[0] // B, GH = 3 * H, ring = gates.shape[0]
    cdef Py_ssize_t t, b, j, row
    cdef int pool = _pool_threads()
    cdef bint solo = _solo(B, GH, max(I, H), num_threads, pool), stopped = False
    cdef floating* work = <floating*>malloc(5 * B * H * sizeof(floating))
    cdef floating* acc_rz  # (B, 2H) h_{t-1} W_h[rz]^T
    cdef floating* acc_n  # (B, H) (r * h_{t-1}) W_hn^T
    cdef floating* h_prev
    cdef floating* h_next
    cdef floating* g
    cdef floating* rh
    cdef floating r, z, n, hj
    cdef _SignalClock clock = [0, 1, 1]
    if work == NULL:
        raise MemoryError()
    try:
        with nogil:
            if solo:
                _blas_local(1)
            acc_rz, acc_n = work, work + 2 * B * H
            h_prev, h_next = work + 3 * B * H, work + 4 * B * H
            memcpy(h_prev, &h0[0, 0], B * H * sizeof(floating))
            if ring == T:
                # Every step's input term in one product (W_ih read once).
                _gemm(False, True, <int>(T * B), <int>GH, <int>I, 1, &x2d[0, 0], <int>I,
                      &W_ih[0, 0], <int>I, 0, &gates[0, 0, 0], <int>GH)
            for t in range(T):
                g = &gates[t % ring, 0, 0]
                rh = &hn[t % ring, 0, 0]
                if ring < T:
                    _gemm(False, True, <int>B, <int>GH, <int>I, 1, &x2d[t * B, 0], <int>I,
                          &W_ih[0, 0], <int>I, 0, g, <int>GH)
                for row in range(B):
                    for j in range(GH):
                        g[row * GH + j] += bias[j]
                _gemm(False, True, <int>B, <int>(2 * H), <int>H, 1, h_prev, <int>H,
                      &W_hh[0, 0], <int>H, 0, acc_rz, <int>(2 * H))
                for b in range(B):
                    for j in range(H):
                        r = _sigmoid(g[b * GH + j] + acc_rz[b * 2 * H + j])
                        g[b * GH + j] = r
                        g[b * GH + H + j] = _sigmoid(g[b * GH + H + j] + acc_rz[b * 2 * H + H + j])
                        rh[b * H + j] = r * h_prev[b * H + j]
                _gemm(False, True, <int>B, <int>H, <int>H, 1, rh, <int>H, &W_hh[2 * H, 0],
                      <int>H, 0, acc_n, <int>H)
                for b in range(B):
                    if t < lengths[b]:
                        for j in range(H):
                            z = g[b * GH + H + j]
                            n = _tanh(g[b * GH + 2 * H + j] + acc_n[b * H + j] + b_hn[j])
                            hj = (<floating>1 - z) * n + z * h_prev[b * H + j]
                            g[b * GH + 2 * H + j] = n
                            out[t, b, j] = hj
                            h_next[b * H + j] = hj
                    else:
                        for j in range(GH):
                            g[b * GH + j] = 0
                        for j in range(H):
                            rh[b * H + j] = 0
                            out[t, b, j] = 0
                            h_next[b * H + j] = h_prev[b * H + j]
                h_prev, h_next = h_next, h_prev
                if _check_now(&clock) and _interrupted():
                    stopped = True
                    break
            memcpy(&h_n[0, 0], h_prev, B * H * sizeof(floating))
    finally:
        if solo:
            _blas_local(pool)
        free(work)
    if stopped:
        _raise_pending()
    return 0


cdef int _backward_reset_before(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
                                const floating[:, ::1] W_hh, const floating[:, ::1] h0,
                                const floating[:, :, ::1] out, const floating[:, :, ::1] gates,
                                const floating[:, :, ::1] hn, const floating[:, :, ::1] d_out,
                                const int64_t[::1] lengths, int num_threads,
                                floating[:, :, ::1] da_x, floating[:, :, ::1] da_h,
                                floating[:, ::1] dh, floating[:, ::1] dx2d,
                                floating[:, ::1] dW_ih, floating[:, ::1] dW_hh,
                                floating[::1] db_ih, floating[::1] db_hh) except -1:
    """BPTT with the reset before the n block's product, in chunks of S steps
    (S = da_x.shape[0]) from the last: each chunk's steps, then its weight
    gradients.  Per step: dn and dz; drh = dn W_hn, the gradient of
    r * h_{t-1}; dr from it; dh_{t-1} = dh z + drh r + [dr, dz] W_h[rz].
    da_h's n block stays zero, so _weight_gradients leaves dW_hh's and
    db_hh's n blocks to this function: dW_hn = sum dn^T (r * h_{t-1}), db_hn = db_in."""
    cdef Py_ssize_t T = out.shape[0], B = out.shape[1], H = out.shape[2], GH = 3 * H
    cdef Py_ssize_t S = da_x.shape[0], c0, c1 = T, t, b, j
    cdef int pool = _pool_threads()
    cdef bint solo = _solo(B, GH, H, num_threads, pool), stopped = False
    cdef floating* work = <floating*>malloc(2 * B * H * sizeof(floating))
    cdef floating* dn  # (B, H)
    cdef floating* drh  # (B, H)
    cdef floating* ax
    cdef floating* ah
    cdef const floating* g
    cdef floating r, z, n, h_prev, dhj, dz, dr
    cdef _SignalClock clock = [0, 1, 1]
    if work == NULL:
        raise MemoryError()
    try:
        with nogil:
            dn, drh = work, work + B * H
            while c1 > 0 and not stopped:
                c0 = max(0, c1 - S)
                if solo:
                    _blas_local(1)
                for t in range(c1 - 1, c0 - 1, -1):
                    ax = &da_x[t - c0, 0, 0]
                    ah = &da_h[t - c0, 0, 0]
                    g = &gates[t, 0, 0]
                    for b in range(B):
                        if t < lengths[b]:
                            for j in range(H):
                                z = g[b * GH + H + j]
                                n = g[b * GH + 2 * H + j]
                                h_prev = out[t - 1, b, j] if t > 0 else h0[b, j]
                                dhj = dh[b, j] + d_out[t, b, j]
                                dn[b * H + j] = dhj * (<floating>1 - z) * (<floating>1 - n * n)
                                dz = dhj * (h_prev - n) * z * (<floating>1 - z)
                                ax[b * GH + H + j] = dz
                                ax[b * GH + 2 * H + j] = dn[b * H + j]
                                ah[b * GH + H + j] = dz
                                ah[b * GH + 2 * H + j] = 0
                                dh[b, j] = dhj * z  # the direct path; the products come next
                        else:
                            for j in range(H):
                                dn[b * H + j] = 0
                            for j in range(GH):
                                ax[b * GH + j] = 0
                                ah[b * GH + j] = 0
                    # drh = dn W_hn
                    _gemm(False, False, <int>B, <int>H, <int>H, 1, dn, <int>H, &W_hh[2 * H, 0],
                          <int>H, 0, drh, <int>H)
                    for b in range(B):
                        if t < lengths[b]:
                            for j in range(H):
                                r = g[b * GH + j]
                                h_prev = out[t - 1, b, j] if t > 0 else h0[b, j]
                                dr = drh[b * H + j] * h_prev * r * (<floating>1 - r)
                                ax[b * GH + j] = dr
                                ah[b * GH + j] = dr
                                dh[b, j] += drh[b * H + j] * r
                    # dh_{t-1} += [dr, dz] W_h[rz]; a frozen row's da is zero, so it adds nothing.
                    _gemm(False, False, <int>B, <int>H, <int>(2 * H), 1, ah, <int>GH,
                          &W_hh[0, 0], <int>H, 1, &dh[0, 0], <int>H)
                    if _check_now(&clock) and _interrupted():
                        stopped = True
                        break
                if solo:
                    _blas_local(pool)
                if stopped:
                    break
                _weight_gradients(x2d, W_ih, h0, out, &da_x[0, 0, 0], &da_h[0, 0, 0], c0, c1,
                                  c1 < T, dx2d, dW_ih, dW_hh, &db_ih[0], &db_hh[0],
                                  num_threads, pool)
                # dW_hn += DN^T (r * h_{t-1}) over the chunk's rows
                _gemm(True, False, <int>H, <int>H, <int>((c1 - c0) * B), 1, &da_x[0, 0, 2 * H],
                      <int>GH, &hn[c0, 0, 0], <int>H, 1, &dW_hh[2 * H, 0], <int>H)
                c1 = c0
            for j in range(2 * H, GH):
                db_hh[j] = db_ih[j]
    finally:
        if solo:
            _blas_local(pool)
        free(work)
    if stopped:
        _raise_pending()
    return 0


def forward(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
            const floating[::1] bias, const floating[::1] b_hn,
            const floating[:, ::1] W_hh, const floating[:, ::1] h0,
            const int64_t[::1] lengths, bint reset_before, bint bf16, bint use_blas,
            int num_threads,
            floating[:, :, ::1] gates, floating[:, ::1] work, floating[:, :, ::1] hn,
            floating[:, :, ::1] out, floating[:, ::1] h_n):
    """GRU forward over a whole sequence.

    Inputs:  x2d (T*B, I), W_ih (3H, I), bias (3H,) = b_ih + (b_hr, b_hz, 0),
             b_hn (H,) (zeros if there is no b_hh), W_hh (3H, H), h0 (B, H),
             lengths (B,) int64, reset_before (reset_after=False: r before the
             n block's product, _forward_reset_before), use_blas (read by the
             Numba kernels only: the engine has its own product), num_threads
             (the engine's threads).
    Work:    work (B, 3H) (unused here).
    Outputs (overwritten): gates (S, B, 3H) the activated gates r, z, n of each
             step (zero past a sequence's length), hn (S, B, H) the term
             h_{t-1} W_hn^T + b_hn that r multiplies (reset_before: r * h_{t-1}),
             both of the last S steps
             (S = T in training, fewer in inference: see _engine_forward),
             out (T, B, H) h_t (zero past the length), h_n (B, H) the state
             after each sequence's last step.

    float32 and float64 (all arrays one dtype).
    """
    if reset_before:
        _forward_reset_before(x2d, W_ih, bias, b_hn, W_hh, h0, lengths, num_threads, gates, hn,
                              out, h_n)
        return
    _engine_forward(x2d, W_ih, W_hh, bias, h0, lengths, num_threads, &gates[0, 0, 0],
                    gates.shape[0], &out[0, 0, 0], NULL, &hn[0, 0, 0], &b_hn[0], 0, h_n, bf16)


def backward(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
             const floating[:, ::1] W_hh, const floating[:, ::1] h0,
             const floating[:, :, ::1] out, const floating[:, :, ::1] gates,
             const floating[:, :, ::1] hn, const floating[:, :, ::1] d_out,
             const floating[:, ::1] d_h_n, const int64_t[::1] lengths, bint reset_before,
             bint bf16, bint use_blas, int num_threads,
             floating[:, :, ::1] da_x, floating[:, :, ::1] da_h, floating[:, ::1] work,
             floating[:, ::1] dx2d, floating[:, ::1] dh0, floating[:, ::1] dW_ih,
             floating[:, ::1] dW_hh, floating[::1] db_ih, floating[::1] db_hh):
    """GRU BPTT over a whole sequence.

    Inputs:  x2d (T*B, I), W_ih (3H, I), W_hh (3H, H), h0 (B, H), and from the
             forward out, hn (T, B, H) and gates (T, B, 3H); d_out (T, B, H),
             d_h_n (B, H), lengths (B,) int64, reset_before, use_blas,
             num_threads (as in forward).
    Work:    da_x, da_h (S, B, 3H), a chunk of S <= T steps (see
             _engine_backward): the gradients of the input term
             x_t W_ih^T + b_ih and of the recurrent term h_{t-1} W_hh^T + b_hh
             (they differ in the n block by the factor r); work (B, H) (unused here).
    Outputs (overwritten): dx2d (T*B, I), dh0 (B, H), dW_ih (3H, I),
             dW_hh (3H, H), db_ih, db_hh (3H,).

    float32 and float64 (all arrays one dtype).
    """
    dh0[:, :] = d_h_n
    if reset_before:
        _backward_reset_before(x2d, W_ih, W_hh, h0, out, gates, hn, d_out, lengths, num_threads,
                               da_x, da_h, dh0, dx2d, dW_ih, dW_hh, db_ih, db_hh)
        return
    _engine_backward(W_hh, lengths, num_threads, &gates[0, 0, 0], &hn[0, 0, 0], &out[0, 0, 0],
                     &h0[0, 0], d_out, dh0, NULL, da_x, da_h, NULL, NULL, 0,
                     x2d, W_ih, h0, out, dx2d, dW_ih, dW_hh, &db_ih[0], &db_hh[0], bf16)
