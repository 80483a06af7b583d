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
                               const floating* acc, floating_out g, const floating* h_prev,
                               floating_out h_next, floating_out out, floating* state,
                               floating_out hn, const floating* b_hn, int flag) noexcept nogil:
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


cdef inline void _cell_infer(bint running, Py_ssize_t nu, Py_ssize_t H, Py_ssize_t u,
                             const floating* acc, floating_out g, const floating* h_prev,
                             floating_out h_next, floating_out out, floating* state,
                             floating_out hn, const floating* b_hn, int flag) noexcept nogil:
    """_cell_forward for an inference that keeps no gates (int8 compute: g
    and hn are left as they are): in float32 the activations as quotients
    p / q of fast_tanh.h's rational function (the LSTM's _cell_infer), two
    divisions a unit instead of three: r = (q_r + p_r) / (2 q_r), then
        h_t = (1 - z) n + z h = ((q_z - p_z) p_n + (q_z + p_z) h q_n) / (2 q_z q_n).
    int8 inference, one thread, interleaved medians, old build / new: GRU
    (16, 256, 128) 0.97x; (1, 64, 1024) 1.01x (its step waits on the chain
    r, n, h either way)."""
    cdef Py_ssize_t j
    cdef float pr, qr, pz, qz, pn, qn, hj
    cdef float half = 0.5, two = 2
    if floating is double or not running:
        _cell_forward(running, nu, H, u, acc, g, h_prev, h_next, out, state, hn, b_hn, flag)
        return
    for j in range(nu):
        fastrnn_tanh_pq(half * (g[j] + acc[j]), &pr, &qr)
        fastrnn_tanh_pq(half * (g[H + j] + acc[u + j]), &pz, &qz)
        fastrnn_tanh_pq(g[2 * H + j] + (qr + pr) / (two * qr) * (acc[2 * u + j] + b_hn[j]),
                        &pn, &qn)
        hj = ((qz - pz) * pn + (qz + pz) * h_prev[j] * qn) / (two * qz * qn)
        out[j] = hj
        h_next[j] = hj


cdef inline void _cell_backward(bint running, Py_ssize_t nu, Py_ssize_t H, const floating* g,
                                const floating* hn, const floating* h_prev,
                                const floating* d_out, floating_out dh, floating* dc,
                                floating_out da_x, floating_out da_h, const floating* extra,
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
# Two products a step with an elementwise pass between them: r * h_{t-1}
# needs every unit's r before the n block's product can start (and in BPTT
# dr needs all of dn W_hn).  The engine's one product per step has no such
# second phase, so this form splits the batch instead: groups of rows run
# every step of a chunk on their own, with no barrier (rows do not meet until
# the weight gradients), reading W_hh from panels packed once (_engine.pxi's
# "products for kernels that split the batch").  The input term and the
# weight gradients are GEMMs over many rows, as in the engine.  One thread
# where the batch has one row.

cdef void _forward_rows(Py_ssize_t t0, Py_ssize_t t1, Py_ssize_t b0, Py_ssize_t b1,
                        Py_ssize_t B, Py_ssize_t H, Py_ssize_t u, Py_ssize_t ring,
                        const floating* bias, const floating* b_hn, const int64_t* lengths,
                        const floating* P_rz, const floating* P_n, floating* gates,
                        floating* hn, floating* out, floating* hbuf, floating* work_rz,
                        floating* work_n, fastrnn_steps* shared,
                        bint main_thread) noexcept nogil:
    """Steps t0..t1-1 of the forward for rows b0..b1-1: gates and hn hold the
    input terms of these steps (row t % ring), hbuf's half t % 2 holds h_{t0-1}."""
    cdef Py_ssize_t GH = 3 * H, rows = b1 - b0, t, b, j
    cdef floating acc[ROW_BLOCK * 64]
    cdef floating* g
    cdef floating* rh
    cdef floating* h_prev
    cdef floating* h_next
    cdef floating r, z, n, hj
    cdef _SignalClock clock = [0, 1, 1]
    for t in range(t0, t1):
        if not _keep_going(shared, main_thread, &clock):
            return
        g = gates + (t % ring) * B * GH
        rh = hn + (t % ring) * B * H
        h_prev = hbuf + (t % 2) * B * H
        h_next = hbuf + ((t + 1) % 2) * B * H
        # The r and z blocks: h_{t-1} W_h[rz]^T, then r * h_{t-1}.
        _packed_product(h_prev + b0 * H, H, rows, P_rz, H, 2 * H, u, work_rz + b0 * 2 * H,
                        2 * H, False, acc)
        for b in range(b0, b1):
            for j in range(GH):
                g[b * GH + j] += bias[j]
            for j in range(H):
                r = _sigmoid(g[b * GH + j] + work_rz[b * 2 * H + j])
                g[b * GH + j] = r
                g[b * GH + H + j] = _sigmoid(g[b * GH + H + j] + work_rz[b * 2 * H + H + j])
                rh[b * H + j] = r * h_prev[b * H + j]
        # The n block: (r * h_{t-1}) W_hn^T.
        _packed_product(rh + b0 * H, H, rows, P_n, H, H, u, work_n + b0 * H, H, False, acc)
        for b in range(b0, b1):
            if t < lengths[b]:
                for j in range(H):
                    z = g[b * GH + H + j]
                    n = _tanh(g[b * GH + 2 * H + j] + work_n[b * H + j] + b_hn[j])
                    hj = (<floating>1 - z) * n + z * h_prev[b * H + j]
                    g[b * GH + 2 * H + j] = n
                    out[(t * B + b) * H + j] = hj
                    h_next[b * H + j] = hj
            else:
                for j in range(GH):
                    g[b * GH + j] = 0
                for j in range(H):
                    rh[b * H + j] = 0
                    out[(t * B + b) * H + j] = 0
                    h_next[b * H + j] = h_prev[b * H + j]


cdef int _forward_reset_before(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
                               const floating[::1] bias, const floating[::1] b_hn,
                               const floating[:, ::1] W_hh, const floating[:, ::1] h0,
                               const int64_t[::1] lengths, int num_threads,
                               floating[:, :, ::1] gates, floating[:, :, ::1] hn,
                               floating[:, :, ::1] out, floating[:, ::1] h_n) except -1:
    """The forward with the reset before the n block's product.  Step t's
    gates and r * h_{t-1} (the n block's operand, saved for the backward) go
    to row t % ring of gates and hn (ring = T in training; in inference a
    chunk of steps, whose input terms are one GEMM)."""
    cdef Py_ssize_t B = h0.shape[0], H = h0.shape[1], I = x2d.shape[1]
    cdef Py_ssize_t T = x2d.shape[0] // B, GH = 3 * H, ring = gates.shape[0]
    cdef Py_ssize_t u = _lanes(<floating*>NULL) * _ROWS_NV, t0 = 0, c1, grp
    cdef int team = <int>min(num_threads, B), pool = _pool_threads()
    cdef Py_ssize_t groups = _row_groups(B, team)
    cdef fastrnn_steps shared
    cdef bint stopped = False
    cdef floating* work = <floating*>malloc(5 * B * H * sizeof(floating))
    cdef floating* P_rz = NULL
    cdef floating* P_n = NULL
    try:
        with nogil:
            # W_h[rz]^T (H, 2H) and W_hn^T (H, H) as panels: W_hh's rows are their columns.
            P_rz = _packed(&W_hh[0, 0], 1, H, H, 2 * H, u)
            P_n = _packed(&W_hh[2 * H, 0], 1, H, H, H, u)
        if work == NULL or P_rz == NULL or P_n == NULL:
            raise MemoryError()
        with nogil:
            memcpy(work + 3 * B * H, &h0[0, 0], B * H * sizeof(floating))  # hbuf's half 0
            while t0 < T and not stopped:
                # A chunk: the ring's steps (inference) or all T, whose input terms are one GEMM.
                c1 = min(T, t0 + ring)
                _team_gemm(False, <int>((c1 - t0) * B), <int>GH, <int>I, &x2d[t0 * B, 0],
                           <int>I, &W_ih[0, 0], <int>I, 0, &gates[0, 0, 0], <int>GH, team, pool)
                fastrnn_steps_init(&shared, 0, NULL)
                for grp in prange(groups, schedule="dynamic", num_threads=team):
                    _forward_rows(t0, c1, grp * B // groups, (grp + 1) * B // groups, B, H, u,
                                  ring, &bias[0], &b_hn[0], &lengths[0], P_rz, P_n,
                                  &gates[0, 0, 0], &hn[0, 0, 0], &out[0, 0, 0], work + 3 * B * H,
                                  work, work + 2 * B * H, &shared, threadid() == 0)
                stopped = fastrnn_steps_aborted(&shared)
                t0 = c1
            memcpy(&h_n[0, 0], work + 3 * B * H + (T % 2) * B * H, B * H * sizeof(floating))
    finally:
        free(work)
        free(P_rz)
        free(P_n)
    if stopped:
        _raise_pending()
    return 0


cdef void _backward_rows(Py_ssize_t t0, Py_ssize_t t1, Py_ssize_t c0, Py_ssize_t b0,
                         Py_ssize_t b1, Py_ssize_t B, Py_ssize_t H, Py_ssize_t u,
                         const int64_t* lengths, const floating* P_n, const floating* P_rz,
                         const floating* h0, const floating* out, const floating* gates,
                         const floating* d_out, floating* da_x, floating* da_h, floating* dh,
                         floating* dn, floating* drh, fastrnn_steps* shared,
                         bint main_thread) noexcept nogil:
    """Steps t1-1 down to t0 of BPTT for rows b0..b1-1, from dh = dL/dh_{t1-1}
    (left as dL/dh_{t0-1}); step t's da at row t - c0 of da_x, da_h."""
    cdef Py_ssize_t GH = 3 * H, rows = b1 - b0, t, b, j
    cdef floating acc[ROW_BLOCK * 64]
    cdef floating* ax
    cdef floating* ah
    cdef const floating* g
    cdef const floating* hp
    cdef floating r, z, n, dhj, dz, dr
    cdef _SignalClock clock = [0, 1, 1]
    for t in range(t1 - 1, t0 - 1, -1):
        if not _keep_going(shared, main_thread, &clock):
            return
        ax = da_x + (t - c0) * B * GH
        ah = da_h + (t - c0) * B * GH
        g = gates + t * B * GH
        hp = out + (t - 1) * B * H if t > 0 else h0
        for b in range(b0, b1):
            if t < lengths[b]:
                for j in range(H):
                    z = g[b * GH + H + j]
                    n = g[b * GH + 2 * H + j]
                    dhj = dh[b * H + j] + d_out[(t * B + b) * H + j]
                    dn[b * H + j] = dhj * (<floating>1 - z) * (<floating>1 - n * n)
                    dz = dhj * (hp[b * H + j] - n) * z * (<floating>1 - z)
                    ax[b * GH + H + j] = dz
                    ax[b * GH + 2 * H + j] = dn[b * H + j]
                    ah[b * GH + H + j] = dz
                    ah[b * GH + 2 * H + j] = 0
                    dh[b * H + j] = dhj * z  # the direct path; the products come next
            else:
                for j in range(H):
                    dn[b * H + j] = 0
                for j in range(GH):
                    ax[b * GH + j] = 0
                    ah[b * GH + j] = 0
        # drh = dn W_hn, the gradient of r * h_{t-1}
        _packed_product(dn + b0 * H, H, rows, P_n, H, H, u, drh + b0 * H, H, False, acc)
        for b in range(b0, b1):
            if t < lengths[b]:
                for j in range(H):
                    r = g[b * GH + j]
                    dr = drh[b * H + j] * hp[b * H + j] * r * (<floating>1 - r)
                    ax[b * GH + j] = dr
                    ah[b * GH + j] = dr
                    dh[b * H + j] += drh[b * H + j] * r
        # dh_{t-1} += [dr, dz] W_h[rz]; a frozen row's da is zero, so it adds nothing.
        _packed_product(ah + b0 * GH, GH, rows, P_rz, 2 * H, H, u, dh + b0 * H, H, True, acc)


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
    (S = da_x.shape[0]) from the last: each chunk's steps (_backward_rows),
    then its weight gradients.  Per step: dn and dz; drh = dn W_hn, the
    gradient of r * h_{t-1}; dr from it; dh_{t-1} = dh z + drh r + [dr, dz] W_h[rz].
    da_h's n block stays zero, so _weight_gradients leaves dW_hh's and
    db_hh's n blocks to this function: dW_hn = sum dn^T (r * h_{t-1}), db_hn = db_in."""
    cdef Py_ssize_t T = out.shape[0], B = out.shape[1], H = out.shape[2], GH = 3 * H
    cdef Py_ssize_t S = da_x.shape[0], c0, c1 = T, j, grp
    cdef Py_ssize_t u = _lanes(<floating*>NULL) * _ROWS_NV
    cdef int team = <int>min(num_threads, B), pool = _pool_threads()
    cdef Py_ssize_t groups = _row_groups(B, team)
    cdef fastrnn_steps shared
    cdef bint stopped = False
    cdef floating* work = <floating*>malloc(2 * B * H * sizeof(floating))  # dn, drh (B, H)
    cdef floating* P_n = NULL
    cdef floating* P_rz = NULL
    try:
        with nogil:
            # W_hn (H, H) and W_h[rz] (2H, H) as they are, as panels
            P_n = _packed(&W_hh[2 * H, 0], H, 1, H, H, u)
            P_rz = _packed(&W_hh[0, 0], H, 1, 2 * H, H, u)
        if work == NULL or P_n == NULL or P_rz == NULL:
            raise MemoryError()
        with nogil:
            while c1 > 0 and not stopped:
                c0 = max(0, c1 - S)
                fastrnn_steps_init(&shared, 0, NULL)
                for grp in prange(groups, schedule="dynamic", num_threads=team):
                    _backward_rows(c0, c1, c0, grp * B // groups, (grp + 1) * B // groups, B, H,
                                   u, &lengths[0], P_n, P_rz, &h0[0, 0], &out[0, 0, 0],
                                   &gates[0, 0, 0], &d_out[0, 0, 0], &da_x[0, 0, 0],
                                   &da_h[0, 0, 0], &dh[0, 0], work, work + B * H, &shared,
                                   threadid() == 0)
                stopped = fastrnn_steps_aborted(&shared)
                if stopped:
                    break
                _weight_gradients(x2d, W_ih, h0, out, &da_x[0, 0, 0], &da_h[0, 0, 0], c0, c1,
                                  c1 < T, dx2d, dW_ih, dW_hh, &db_ih[0], &db_hh[0],
                                  num_threads, pool)
                # dW_hn += DN^T (r * h_{t-1}) over the chunk's rows
                _team_gemm(True, <int>H, <int>H, <int>((c1 - c0) * B), &da_x[0, 0, 2 * H],
                           <int>GH, &hn[c0, 0, 0], <int>H, 1, &dW_hh[2 * H, 0], <int>H, team,
                           pool)
                c1 = c0
            for j in range(2 * H, GH):
                db_hh[j] = db_ih[j]
    finally:
        free(work)
        free(P_n)
        free(P_rz)
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



def forward_int8(const float[:, ::1] x2d, W_ih, const float[::1] bias, const float[::1] b_hn,
                 W_hh, const float[:, ::1] h0, const int64_t[::1] lengths,
                 bint reset_before, int num_threads, float[:, :, ::1] gates,
                 float[:, ::1] work, float[:, :, ::1] hn, float[:, :, ::1] out,
                 float[:, ::1] h_n):
    """``forward`` in int8 compute (inference): W_ih, W_hh QuantizedWeights
    (fastrnn.quantize_weight); float32 otherwise; never with
    ``reset_before`` (the driver refuses it)."""
    _engine_forward_int8(x2d, W_ih, W_hh, bias, h0, lengths, num_threads,
                         &gates[0, 0, 0], gates.shape[0], &out[0, 0, 0], NULL, &hn[0, 0, 0],
                         &b_hn[0], 0, h_n)

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


# ---- the LayerNorm GRU (fastrnn.layernorm) ------------------------------------------
#
# [xr, xz, xn] = LN_i(x_t W_ih^T), [hr, hz, hn] = LN_h(h_{t-1} W_hh^T), r = sigmoid(xr + hr),
# z = sigmoid(xz + hz), n = tanh(xn + r hn), h_t = (1 - z) n + z h_{t-1}
# (fastrnn/reference.py, "Layer-normalised cells").  The recurrent LayerNorm
# needs all 3H columns of a row's product before any gate, so the batch is
# split as in the LayerNorm LSTM (kernels/lstm_cython.pyx, whose comments say
# more): groups of rows run a chunk's steps on their own threads.


cdef void _ln_forward_rows(Py_ssize_t t0, Py_ssize_t t1, Py_ssize_t b0, Py_ssize_t b1,
                           Py_ssize_t B, Py_ssize_t H, Py_ssize_t u, Py_ssize_t ring,
                           Py_ssize_t iring, const floating* gi, const floating* bi,
                           const floating* gh, const floating* bh, double eps,
                           const int64_t* lengths,
                           const floating* P_hh, const floating* i_hat, floating* h_hat,
                           floating* rstd_h, floating* gates, floating* hn, floating* out,
                           floating* hbuf, floating* a, fastrnn_steps* shared,
                           bint main_thread) noexcept nogil:
    """Steps t0..t1-1 of the LayerNorm GRU for rows b0..b1-1: i_hat holds
    these steps' normalised input products (row t % iring), hbuf's half t % 2
    h_{t0-1}.  Step t's gates (r, z, n), hn (the normalised recurrent n
    block, what r multiplies), h_hat and rstd_h go to row t % ring; a (3H,)
    is scratch."""
    cdef Py_ssize_t GH = 3 * H, rows = b1 - b0, t, b, j, sb
    cdef floating acc[ROW_BLOCK * 64]
    cdef floating r, z, n
    cdef const floating* ih
    cdef floating* hh
    cdef floating* g
    cdef floating* hnb
    cdef floating* h_prev
    cdef floating* h_next
    cdef _SignalClock clock = [0, 1, 1]
    for t in range(t0, t1):
        if not _keep_going(shared, main_thread, &clock):
            return
        h_prev = hbuf + (t % 2) * B * H
        h_next = hbuf + ((t + 1) % 2) * B * H
        sb = (t % ring) * B
        _packed_product(h_prev + b0 * H, H, rows, P_hh, H, GH, u, h_hat + (sb + b0) * GH, GH,
                        False, acc)
        for b in range(b0, b1):
            g = gates + (sb + b) * GH
            hnb = hn + (sb + b) * H
            if t >= lengths[b]:  # frozen: state kept, output zero
                memset(g, 0, GH * sizeof(floating))
                memset(hnb, 0, H * sizeof(floating))
                memset(out + (t * B + b) * H, 0, H * sizeof(floating))
                memcpy(h_next + b * H, h_prev + b * H, H * sizeof(floating))
                rstd_h[sb + b] = 0
                continue
            ih = i_hat + ((t % iring) * B + b) * GH
            hh = h_hat + (sb + b) * GH
            rstd_h[sb + b] = _norm_row(hh, GH, eps)
            # r, z's pre-activations; xn in a's n block, hn apart (as the LSTM's, in
            # loops of few arrays each, which vectorise)
            for j in range(2 * H):
                a[j] = ih[j] * gi[j] + bi[j] + hh[j] * gh[j] + bh[j]
            for j in range(2 * H, GH):
                a[j] = ih[j] * gi[j] + bi[j]
            for j in range(H):
                hnb[j] = hh[2 * H + j] * gh[2 * H + j] + bh[2 * H + j]
            for j in range(H):
                r = _sigmoid(a[j])
                z = _sigmoid(a[H + j])
                n = _tanh(a[2 * H + j] + r * hnb[j])
                g[j] = r
                g[H + j] = z
                g[2 * H + j] = n
                a[j] = (<floating>1 - z) * n + z * h_prev[b * H + j]  # h_t, copied below
            for j in range(H):
                out[(t * B + b) * H + j] = a[j]
                h_next[b * H + j] = a[j]


def layernorm_forward(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
                      const floating[:, ::1] W_hh, const floating[::1] gamma_i,
                      const floating[::1] beta_i, const floating[::1] gamma_h,
                      const floating[::1] beta_h, const int64_t[::1] lengths, double eps,
                      int num_threads, floating[:, ::1] h_n, floating[:, :, ::1] out,
                      floating[:, :, ::1] gates, floating[:, :, ::1] hn,
                      floating[:, :, ::1] i_hat, floating[:, ::1] rstd_i,
                      floating[:, :, ::1] h_hat, floating[:, ::1] rstd_h):
    """LayerNorm GRU forward over a whole sequence (kernels/layernorm_numba.py's
    gru_forward_steps, in the engine's row split).

    Inputs:  x2d (T*B, I), W_ih (3H, I), W_hh (3H, H), the LayerNorms' gamma
             and beta (3H,), lengths (B,) int64, eps, num_threads; h_n (B, H)
             holds h0.
    Outputs (overwritten): out (T, B, H), h_n; with S rows of steps (S = T
             in training, 1 in inference; step t in row t % S): gates (S, B,
             3H) r, z, n, hn (S, B, H), h_hat (S, B, 3H), rstd_h (S, B); with
             S' >= S rows (T, or a chunk in inference): i_hat (S', B, 3H),
             rstd_i (S', B).
    """
    cdef Py_ssize_t B = h_n.shape[0], H = h_n.shape[1], I = x2d.shape[1]
    cdef Py_ssize_t T = x2d.shape[0] // B if B else 0, GH = 3 * H, ring = gates.shape[0]
    cdef Py_ssize_t iring = i_hat.shape[0]  # as in lstm_cython.pyx's layernorm_forward
    cdef Py_ssize_t u = _lanes(<floating*>NULL) * 4, t0 = 0, c1, grp
    cdef int team = <int>max(1, min(num_threads, B)), pool = _pool_threads()
    cdef int wide = <int>max(1, num_threads)
    cdef Py_ssize_t groups = _row_groups(B, team)
    cdef fastrnn_steps shared
    cdef bint stopped = False
    cdef floating* hbuf = <floating*>malloc(max(1, 2 * B * H + groups * GH) * sizeof(floating))
    cdef floating* P_hh = NULL
    cdef bint solo = num_threads == 1 and pool > 1 and _blas_local != NULL
    if T == 0 or B == 0:
        free(hbuf)
        return
    if solo:
        _blas_local(1)
    try:
        with nogil:
            P_hh = _packed(&W_hh[0, 0], 1, H, H, GH, u)  # W_hh^T (H, 3H) as panels
        if hbuf == NULL or P_hh == NULL:
            raise MemoryError()
        with nogil:
            memcpy(hbuf, &h_n[0, 0], B * H * sizeof(floating))
            while t0 < T and not stopped:
                c1 = min(T, t0 + iring)
                _ln_inputs(&x2d[t0 * B, 0], &W_ih[0, 0], (c1 - t0) * B, I, GH, eps,
                           &i_hat[t0 % iring, 0, 0], &rstd_i[t0 % iring, 0],
                           <int>min(wide, (c1 - t0) * B), pool)
                fastrnn_steps_init(&shared, 0, NULL)
                for grp in prange(groups, schedule="dynamic", num_threads=team):
                    _ln_forward_rows(t0, c1, grp * B // groups, (grp + 1) * B // groups, B, H, u,
                                     ring, iring, &gamma_i[0], &beta_i[0], &gamma_h[0], &beta_h[0], eps,
                                     &lengths[0], P_hh, &i_hat[0, 0, 0], &h_hat[0, 0, 0],
                                     &rstd_h[0, 0], &gates[0, 0, 0], &hn[0, 0, 0], &out[0, 0, 0],
                                     hbuf, hbuf + 2 * B * H + grp * GH, &shared, threadid() == 0)
                stopped = fastrnn_steps_aborted(&shared)
                t0 = c1
            memcpy(&h_n[0, 0], hbuf + (T % 2) * B * H, B * H * sizeof(floating))
    finally:
        free(hbuf)
        free(P_hh)
        if solo:
            _blas_local(pool)
    if stopped:
        _raise_pending()


cdef void _ln_backward_rows(Py_ssize_t t0, Py_ssize_t t1, Py_ssize_t b0, Py_ssize_t b1,
                            Py_ssize_t B, Py_ssize_t H, Py_ssize_t u, const int64_t* lengths,
                            const floating* P_hh, const floating* gh, const floating* h0,
                            const floating* out, const floating* gates, const floating* hn,
                            const floating* h_hat, const floating* rstd_h,
                            const floating* d_out, floating* da, floating* dah, floating* dh,
                            floating* work, floating* row, floating* sums,
                            fastrnn_steps* shared, bint main_thread) noexcept nogil:
    """Steps t1-1 down to t0 of BPTT for rows b0..b1-1 from dh (left as step
    t0-1's): da (T, B, 3H) the gradient of the input LayerNorm's output (r,
    z, n blocks), dah that of the recurrent product before its LayerNorm,
    zero past a length.  row (3H,) is scratch (the recurrent LayerNorm's
    output gradient: da with its n block times r); sums (2 * 3H,) takes
    this group's shares of the gradients of gamma_h and beta_h."""
    cdef Py_ssize_t GH = 3 * H, rows = b1 - b0, t, b, j, tb
    cdef floating acc[ROW_BLOCK * 64]
    cdef floating r, z, n, dhj, da_n
    cdef const floating* g
    cdef const floating* hp
    cdef floating* ad
    cdef floating* dgh = sums
    cdef floating* dbh = sums + GH
    cdef _SignalClock clock = [0, 1, 1]
    for t in range(t1 - 1, t0 - 1, -1):
        if not _keep_going(shared, main_thread, &clock):
            return
        for b in range(b0, b1):
            tb = t * B + b
            ad = da + tb * GH
            if t >= lengths[b]:  # frozen: dh passes through
                memset(ad, 0, GH * sizeof(floating))
                memset(dah + tb * GH, 0, GH * sizeof(floating))
                continue
            g = gates + tb * GH
            hp = out + (tb - B) * H if t > 0 else h0 + b * H
            for j in range(H):
                r = g[j]
                z = g[H + j]
                n = g[2 * H + j]
                dhj = dh[b * H + j] + d_out[tb * H + j]
                da_n = dhj * (<floating>1 - z) * (<floating>1 - n * n)
                ad[j] = da_n * hn[tb * H + j] * r * (<floating>1 - r)
                ad[H + j] = dhj * (hp[j] - n) * z * (<floating>1 - z)
                ad[2 * H + j] = da_n
                row[2 * H + j] = da_n * r
                dh[b * H + j] = dhj * z  # the direct path; the product's share is added below
            for j in range(2 * H):
                row[j] = ad[j]
            for j in range(GH):
                dgh[j] += row[j] * h_hat[tb * GH + j]
                dbh[j] += row[j]
            _norm_row_backward(row, gh, h_hat + tb * GH, rstd_h[tb], dah + tb * GH, GH)
        # dL/dh_{t-1} += dah_t W_hh
        _packed_product(dah + (t * B + b0) * GH, GH, rows, P_hh, GH, H, u, work + b0 * H, H,
                        False, acc)
        for b in range(b0, b1):
            if t < lengths[b]:
                for j in range(H):
                    dh[b * H + j] += work[b * H + j]


def layernorm_backward(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
                       const floating[:, ::1] W_hh, const floating[::1] gamma_i,
                       const floating[::1] gamma_h, const floating[:, ::1] h0,
                       const floating[:, :, ::1] out, const floating[:, :, ::1] gates,
                       const floating[:, :, ::1] hn, const floating[:, :, ::1] i_hat,
                       const floating[:, ::1] rstd_i, const floating[:, :, ::1] h_hat,
                       const floating[:, ::1] rstd_h, const floating[:, :, ::1] d_out,
                       const int64_t[::1] lengths, int num_threads, floating[:, :, ::1] da,
                       floating[:, :, ::1] dah, floating[:, ::1] dx2d, floating[:, ::1] dh,
                       floating[:, ::1] dW_ih, floating[:, ::1] dW_hh,
                       floating[::1] dgamma_i, floating[::1] dbeta_i,
                       floating[::1] dgamma_h, floating[::1] dbeta_h):
    """LayerNorm GRU BPTT over a whole sequence (layernorm_numba.py's
    gru_backward_steps and after_the_loop, in the engine's row split).

    Inputs:  x2d, W_ih, W_hh, gamma_i, gamma_h, h0, and what the training
             forward saved (T rows of steps); d_out (T, B, H); lengths; dh
             (B, H) holds dL/dh_n.
    Work:    da, dah (T, B, 3H).
    Outputs (overwritten): dx2d (T*B, I), dh (dL/dh0), dW_ih, dW_hh, and
             the LayerNorms' gamma and beta gradients.
    """
    cdef Py_ssize_t T = out.shape[0], B = out.shape[1], H = out.shape[2]
    cdef Py_ssize_t GH = 3 * H, grp, j, k, n_sums = 2 * GH
    cdef Py_ssize_t u = _lanes(<floating*>NULL) * 4
    cdef int team = <int>max(1, min(num_threads, B)), pool = _pool_threads()
    cdef int wide = <int>max(1, num_threads)
    cdef Py_ssize_t groups = _row_groups(B, team)
    cdef fastrnn_steps shared
    cdef bint stopped = False
    cdef floating* P_hh = NULL
    cdef floating* spare = NULL  # per group: its sums and a scratch row; then work, scratch
    cdef floating* work
    cdef bint solo = num_threads == 1 and pool > 1 and _blas_local != NULL
    dgamma_h[:] = 0
    dbeta_h[:] = 0
    if T == 0 or B == 0:
        dgamma_i[:] = 0
        dbeta_i[:] = 0
        dx2d[:, :] = 0
        dW_ih[:, :] = 0
        dW_hh[:, :] = 0
        return
    spare = <floating*>calloc(groups * (n_sums + GH) + B * H + 2 * GH, sizeof(floating))
    work = spare + groups * (n_sums + GH)
    if solo:
        _blas_local(1)
    try:
        with nogil:
            P_hh = _packed(&W_hh[0, 0], H, 1, GH, H, u)  # W_hh (3H, H) as panels
        if spare == NULL or P_hh == NULL:
            raise MemoryError()
        with nogil:
            fastrnn_steps_init(&shared, 0, NULL)
            for grp in prange(groups, schedule="dynamic", num_threads=team):
                _ln_backward_rows(0, T, grp * B // groups, (grp + 1) * B // groups, B, H, u,
                                  &lengths[0], P_hh, &gamma_h[0], &h0[0, 0], &out[0, 0, 0],
                                  &gates[0, 0, 0], &hn[0, 0, 0], &h_hat[0, 0, 0],
                                  &rstd_h[0, 0], &d_out[0, 0, 0], &da[0, 0, 0], &dah[0, 0, 0],
                                  &dh[0, 0], work, spare + grp * (n_sums + GH) + n_sums,
                                  spare + grp * (n_sums + GH), &shared, threadid() == 0)
            stopped = fastrnn_steps_aborted(&shared)
        if stopped:
            _raise_pending()
        with nogil:
            for grp in range(groups):
                k = grp * (n_sums + GH)
                for j in range(GH):
                    dgamma_h[j] += spare[k + j]
                    dbeta_h[j] += spare[k + GH + j]
            _ln_after_the_loop(x2d, W_ih, h0, out, &gamma_i[0], &i_hat[0, 0, 0], &rstd_i[0, 0],
                               &da[0, 0, 0], &dah[0, 0, 0], dx2d, dW_ih, dW_hh, &dgamma_i[0],
                               &dbeta_i[0], work + B * H, wide, pool)
    finally:
        free(P_hh)
        free(spare)
        if solo:
            _blas_local(pool)
