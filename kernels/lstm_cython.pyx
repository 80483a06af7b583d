"""LSTM kernels, Cython backend: forward recurrence, then BPTT.

These kernels trust their inputs: ``fastrnn._driver`` has checked shapes and
dtypes, made every array C-contiguous and of one float dtype, allocated the
outputs and workspace, and chosen ``num_threads`` (see ``fastrnn._tuning``).
Shape letters: T steps, B batch, I input features, H hidden units; the gate
blocks of width H are i, f, g, o (PyTorch's order); the peephole weights
W_ch (3H,) have blocks i, f, o (``peephole``: the engine's ``flag``; without
it the loops are the plain LSTM's, which do not read W_ch).  With a
projection (``proj``: W_hr (P, H), PyTorch's proj_size) h has P columns and
a step has a second product after the gates, h_t = (o * tanh(c_t)) W_hr^T:
``_forward_proj``, ``_backward_proj`` below, which split the batch between
threads instead of the units.

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
                               const floating* acc, floating_out g, const floating* h_prev,
                               floating_out h_next, floating_out out, floating_out c_n,
                               floating_out c, const floating* extra, int flag) noexcept nogil:
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


cdef inline void _cell_infer(bint running, Py_ssize_t nu, Py_ssize_t H, Py_ssize_t u,
                             const floating* acc, floating_out g, const floating* h_prev,
                             floating_out h_next, floating_out out, floating_out c_n,
                             floating_out c, const floating* extra, int flag) noexcept nogil:
    """_cell_forward for an inference that keeps no gates (int8 compute: g
    and c are left as they are): in float32 each of the five activations
    is a quotient p / q of fast_tanh.h's rational function, and the cell
    divides twice, not five times:
        i = (q_i + p_i) / (2 q_i) (a sigmoid is (1 + tanh(a / 2)) / 2), f, o
        alike, g = p_g / q_g;
        c_t = f c + i g = ((q_f + p_f) c q_i q_g + (q_i + p_i) p_g q_f) / (2 q_f q_i q_g)
        h_t = o tanh(c_t) = (q_o + p_o) p_c / (2 q_o q_c)
    (a few float32 roundings from _cell_forward's values; the sigmoids
    without fast_tanh's small-argument case, which only keeps tanh's
    relative error near 0).  Measured on an Intel Xeon (AVX512_VNNI), the
    loop of 16 units a call in L1: 1.75 -> 1.44 ns a unit; int8 inference,
    one thread, interleaved, old build / new: LSTM (16, 256, 128) 4.56 ->
    4.24 ms median (0.93x), (1, 64, 1024) 0.99x; 2 threads (64, 1024, 32)
    0.95x."""
    cdef Py_ssize_t j
    cdef float pi, qi, pf, qf, pg, qg, po, qo, pc, qc, s, cj, hj
    cdef float half = 0.5, two = 2
    if floating is double or not running:
        _cell_forward(running, nu, H, u, acc, g, h_prev, h_next, out, c_n, c, extra, flag)
        return
    if flag:
        for j in range(nu):
            cj = c_n[j]
            fastrnn_tanh_pq(half * (g[j] + acc[j] + extra[j] * cj), &pi, &qi)
            fastrnn_tanh_pq(half * (g[H + j] + acc[u + j] + extra[H + j] * cj), &pf, &qf)
            fastrnn_tanh_pq(g[2 * H + j] + acc[2 * u + j], &pg, &qg)
            s = qi * qg
            cj = ((qf + pf) * cj * s + (qi + pi) * pg * qf) / (two * qf * s)
            fastrnn_tanh_pq(half * (g[3 * H + j] + acc[3 * u + j] + extra[2 * H + j] * cj),
                            &po, &qo)
            fastrnn_tanh_pq(cj, &pc, &qc)
            hj = (qo + po) * pc / (two * qo * qc)
            c_n[j] = cj
            out[j] = hj
            h_next[j] = hj
        return
    for j in range(nu):
        fastrnn_tanh_pq(half * (g[j] + acc[j]), &pi, &qi)
        fastrnn_tanh_pq(half * (g[H + j] + acc[u + j]), &pf, &qf)
        fastrnn_tanh_pq(g[2 * H + j] + acc[2 * u + j], &pg, &qg)
        fastrnn_tanh_pq(half * (g[3 * H + j] + acc[3 * u + j]), &po, &qo)
        s = qi * qg
        cj = ((qf + pf) * c_n[j] * s + (qi + pi) * pg * qf) / (two * qf * s)
        fastrnn_tanh_pq(cj, &pc, &qc)
        hj = (qo + po) * pc / (two * qo * qc)
        c_n[j] = cj
        out[j] = hj
        h_next[j] = hj


cdef inline void _cell_backward(bint running, Py_ssize_t nu, Py_ssize_t H, const floating* g,
                                const floating* c, const floating* c_prev,
                                const floating* d_out, floating_out dh, floating_out dc,
                                floating_out da, floating* da_h, const floating* extra,
                                floating_out d_extra, int flag) noexcept nogil:
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



# ---- the projection (proj_size) -------------------------------------------------
#
# Two products a step with the gate arithmetic between them: the projection
# needs every unit's m = o * tanh(c_t), and the next step's gates need all of
# h_t.  So the batch is split instead of the units: groups of rows run every
# step of a chunk on their own (_engine.pxi's "products for kernels that
# split the batch": _row_groups, _keep_going, _packed_product, _team_gemm).
# The peepholes come along: W_ch is zeros without them.


cdef void _proj_forward_rows(Py_ssize_t t0, Py_ssize_t t1, Py_ssize_t b0, Py_ssize_t b1,
                             Py_ssize_t B, Py_ssize_t H, Py_ssize_t P, Py_ssize_t u,
                             Py_ssize_t ring, const floating* bias, const floating* W_ch,
                             int peephole, const int64_t* lengths, const floating* P_hh,
                             const floating* P_hr, floating* gates, floating* c, floating* out,
                             floating* c_n, floating* hbuf, floating* work, floating* m,
                             floating* spare, fastrnn_steps* shared,
                             bint main_thread) noexcept nogil:
    """Steps t0..t1-1 of the forward for rows b0..b1-1: gates holds the input
    terms of these steps (row t % ring, without the bias), hbuf's half t % 2
    holds h_{t0-1} (B, P), c_n c_{t0-1}; spare (B, H) takes the cell's h_next,
    which must not be its out.  The gate arithmetic is the
    engine's (_cell_forward, with the row's four gate blocks as one tile of
    H units), which the compiler vectorises; written out here with its
    indices it ran scalar, a quarter of the time (perf, (16, 1024, 256))."""
    cdef Py_ssize_t GH = 4 * H, rows = b1 - b0, t, b, j
    cdef floating acc[ROW_BLOCK * 64]
    cdef floating* g
    cdef floating* a
    cdef floating* cs
    cdef floating* h_prev
    cdef floating* h_next
    cdef _SignalClock clock = [0, 1, 1]
    for t in range(t0, t1):
        if not _keep_going(shared, main_thread, &clock):
            return
        g = gates + (t % ring) * B * GH
        cs = c + (t % ring) * B * H
        h_prev = hbuf + (t % 2) * B * P
        h_next = hbuf + ((t + 1) % 2) * B * P
        # work = h_{t-1} W_hh^T, all four gates
        _packed_product(h_prev + b0 * P, P, rows, P_hh, P, GH, u, work + b0 * GH, GH, False, acc)
        for b in range(b0, b1):
            if t < lengths[b]:
                a = work + b * GH
                for j in range(GH):
                    a[j] += bias[j]
                # m (the row's o * tanh(c_t)) as the cell's out (its h_next, a
                # second restrict pointer, may not point there too)
                _cell_forward(True, H, H, H, a, g + b * GH, m + b * H, spare + b * H,
                              m + b * H, c_n + b * H, cs + b * H, W_ch, peephole)
            else:
                memset(g + b * GH, 0, GH * sizeof(floating))
                memcpy(cs + b * H, c_n + b * H, H * sizeof(floating))
                memset(m + b * H, 0, H * sizeof(floating))
        # h_t = m W_hr^T, straight into out
        _packed_product(m + b0 * H, H, rows, P_hr, H, P, u, out + (t * B + b0) * P, P, False,
                        acc)
        for b in range(b0, b1):
            if t < lengths[b]:
                memcpy(h_next + b * P, out + (t * B + b) * P, P * sizeof(floating))
            else:
                memset(out + (t * B + b) * P, 0, P * sizeof(floating))
                memcpy(h_next + b * P, h_prev + b * P, P * sizeof(floating))


cdef int _forward_proj(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
                       const floating[::1] bias, const floating[:, ::1] W_hh,
                       const floating[::1] W_ch, const floating[:, ::1] W_hr,
                       const floating[:, ::1] h0, const int64_t[::1] lengths, bint peephole,
                       int num_threads, floating[:, :, ::1] gates, floating[:, ::1] work,
                       floating[:, ::1] m,
                       floating[:, :, ::1] c, floating[:, :, ::1] out, floating[:, ::1] h_n,
                       floating[:, ::1] c_n) except -1:
    """The forward with a projection; c_n holds c0.  Step t's gates and c_t go
    to row t % ring of gates and c (ring = T in training; in inference a
    chunk of steps, whose input terms are one GEMM)."""
    cdef Py_ssize_t B = h0.shape[0], P = h0.shape[1], H = c_n.shape[1], I = x2d.shape[1]
    cdef Py_ssize_t T = x2d.shape[0] // B, GH = 4 * H, ring = gates.shape[0]
    cdef Py_ssize_t u = _lanes(<floating*>NULL) * _ROWS_NV, t0 = 0, c1, grp
    cdef int team = <int>min(num_threads, B), pool = _pool_threads()
    cdef Py_ssize_t groups = _row_groups(B, team)
    cdef fastrnn_steps shared
    cdef bint stopped = False
    cdef floating* hbuf = <floating*>malloc(2 * B * P * sizeof(floating))
    cdef floating* spare = <floating*>malloc(B * H * sizeof(floating))
    cdef floating* P_hh = NULL
    cdef floating* P_hr = NULL
    try:
        with nogil:
            # W_hh^T (P, 4H) and W_hr^T (H, P) as panels: the rows are their columns.
            P_hh = _packed(&W_hh[0, 0], 1, P, P, GH, u)
            P_hr = _packed(&W_hr[0, 0], 1, H, H, P, u)
        if hbuf == NULL or spare == NULL or P_hh == NULL or P_hr == NULL:
            raise MemoryError()
        with nogil:
            memcpy(hbuf, &h0[0, 0], B * P * sizeof(floating))
            while t0 < T and not stopped:
                c1 = min(T, t0 + ring)
                _team_gemm(False, <int>((c1 - t0) * B), <int>GH, <int>I, &x2d[t0 * B, 0],
                           <int>I, &W_ih[0, 0], <int>I, 0, &gates[0, 0, 0], <int>GH, team, pool)
                fastrnn_steps_init(&shared, 0, NULL)
                for grp in prange(groups, schedule="dynamic", num_threads=team):
                    _proj_forward_rows(t0, c1, grp * B // groups, (grp + 1) * B // groups,
                                       B, H, P, u, ring, &bias[0], &W_ch[0], peephole,
                                       &lengths[0], P_hh, P_hr, &gates[0, 0, 0], &c[0, 0, 0],
                                       &out[0, 0, 0], &c_n[0, 0], hbuf, &work[0, 0], &m[0, 0],
                                       spare, &shared, threadid() == 0)
                stopped = fastrnn_steps_aborted(&shared)
                t0 = c1
            memcpy(&h_n[0, 0], hbuf + (T % 2) * B * P, B * P * sizeof(floating))
    finally:
        free(hbuf)
        free(spare)
        free(P_hh)
        free(P_hr)
    if stopped:
        _raise_pending()
    return 0


cdef void _proj_backward_rows(Py_ssize_t t0, Py_ssize_t t1, Py_ssize_t s0, Py_ssize_t b0,
                              Py_ssize_t b1, Py_ssize_t B, Py_ssize_t H, Py_ssize_t P,
                              Py_ssize_t u, const int64_t* lengths, const floating* P_hr,
                              const floating* P_hh, const floating* W_ch, int peephole,
                              const floating* zeros, floating* scratch, const floating* c0,
                              const floating* c, const floating* gates, const floating* d_out,
                              floating* da, floating* m, floating* dhp, floating* dh,
                              floating* dc, floating* work, fastrnn_steps* shared,
                              bint main_thread) noexcept nogil:
    """Steps t1-1 down to t0 of BPTT for rows b0..b1-1, from dh, dc =
    dL/dh_{t1-1}, dL/dc_{t1-1} (left as those of step t0-1); step t's da,
    m (dL/dm, then m_t) and dhp (dL/dh_t) at row t - s0 of theirs.  The gate
    arithmetic is the engine's (_cell_backward, vectorised, as in the
    forward): zeros (H,) stands for its d_out, scratch (3H,) takes its
    dW_ch terms, which _backward_proj sums in one pass instead."""
    cdef Py_ssize_t GH = 4 * H, rows = b1 - b0, t, b, j
    cdef floating acc[ROW_BLOCK * 64]
    cdef floating* ad
    cdef floating* mt
    cdef floating* dp
    cdef const floating* g
    cdef const floating* ct
    cdef const floating* cp
    cdef _SignalClock clock = [0, 1, 1]
    for t in range(t1 - 1, t0 - 1, -1):
        if not _keep_going(shared, main_thread, &clock):
            return
        ad = da + (t - s0) * B * GH
        mt = m + (t - s0) * B * H
        dp = dhp + (t - s0) * B * P
        g = gates + t * B * GH
        ct = c + t * B * H
        cp = c + (t - 1) * B * H if t > 0 else c0
        for b in range(b0, b1):
            if t < lengths[b]:
                for j in range(P):
                    dp[b * P + j] = dh[b * P + j] + d_out[(t * B + b) * P + j]
            else:
                memset(dp + b * P, 0, P * sizeof(floating))
        # dL/dm_t = dL/dh_t W_hr
        _packed_product(dp + b0 * P, P, rows, P_hr, P, H, u, mt + b0 * H, H, False, acc)
        for b in range(b0, b1):
            if t < lengths[b]:
                # dL/dm_t as the cell's dh (which it leaves zero)
                _cell_backward(True, H, H, g + b * GH, ct + b * H, cp + b * H, zeros,
                               mt + b * H, dc + b * H, ad + b * GH, ad + b * GH, W_ch, scratch,
                               peephole)
                for j in range(H):  # m_t, for dW_hr
                    mt[b * H + j] = g[b * GH + 3 * H + j] * _tanh(ct[b * H + j])
            else:
                # A frozen step is the identity on (h, c): dh and dc pass through.
                memset(ad + b * GH, 0, GH * sizeof(floating))
                memset(mt + b * H, 0, H * sizeof(floating))
        # dL/dh_{t-1} = da W_hh
        _packed_product(ad + b0 * GH, GH, rows, P_hh, GH, P, u, work + b0 * P, P, False, acc)
        for b in range(b0, b1):
            if t < lengths[b]:
                memcpy(dh + b * P, work + b * P, P * sizeof(floating))


cdef int _backward_proj(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
                        const floating[:, ::1] W_hh, const floating[::1] W_ch,
                        const floating[:, ::1] W_hr, const floating[:, ::1] h0,
                        const floating[:, ::1] c0, const floating[:, :, ::1] out,
                        const floating[:, :, ::1] c, const floating[:, :, ::1] gates,
                        const floating[:, :, ::1] d_out, const int64_t[::1] lengths,
                        bint peephole, int num_threads, floating[:, :, ::1] da,
                        floating[:, ::1] work, floating[:, :, ::1] m, floating[:, :, ::1] dhp,
                        floating[:, ::1] dx2d, floating[:, ::1] dh, floating[:, ::1] dc,
                        floating[:, ::1] dW_ih, floating[:, ::1] dW_hh, floating[::1] db,
                        floating[::1] dW_ch, floating[:, ::1] dW_hr) except -1:
    """BPTT with a projection, in chunks of S steps (S = da.shape[0]) from the
    last: each chunk's steps (_proj_backward_rows), then its weight
    gradients, dW_hr += DHP^T M among them (and dW_ch's sums)."""
    cdef Py_ssize_t T = out.shape[0], B = out.shape[1], P = out.shape[2], H = c.shape[2]
    cdef Py_ssize_t GH = 4 * H, S = da.shape[0], s0, c1 = T, t, b, j, grp
    cdef Py_ssize_t u = _lanes(<floating*>NULL) * _ROWS_NV
    cdef int team = <int>min(num_threads, B), pool = _pool_threads()
    cdef Py_ssize_t groups = _row_groups(B, team)
    cdef fastrnn_steps shared
    cdef bint stopped = False
    cdef const floating* cp
    cdef floating* P_hr = NULL
    cdef floating* P_hh = NULL
    # zeros (H,), then a dW_ch scratch (3H,) per group
    cdef floating* spare = <floating*>calloc(H + 3 * H * groups, sizeof(floating))
    try:
        with nogil:
            # W_hr (P, H) and W_hh (4H, P) as they are, as panels
            P_hr = _packed(&W_hr[0, 0], H, 1, P, H, u)
            P_hh = _packed(&W_hh[0, 0], P, 1, GH, P, u)
        if P_hr == NULL or P_hh == NULL or spare == NULL:
            raise MemoryError()
        with nogil:
            while c1 > 0 and not stopped:
                s0 = max(0, c1 - S)
                fastrnn_steps_init(&shared, 0, NULL)
                for grp in prange(groups, schedule="dynamic", num_threads=team):
                    _proj_backward_rows(s0, c1, s0, grp * B // groups, (grp + 1) * B // groups,
                                        B, H, P, u, &lengths[0], P_hr, P_hh, &W_ch[0], peephole,
                                        spare, spare + H + 3 * H * grp, &c0[0, 0], &c[0, 0, 0],
                                        &gates[0, 0, 0], &d_out[0, 0, 0], &da[0, 0, 0],
                                        &m[0, 0, 0], &dhp[0, 0, 0], &dh[0, 0], &dc[0, 0],
                                        &work[0, 0], &shared, threadid() == 0)
                stopped = fastrnn_steps_aborted(&shared)
                if stopped:
                    break
                _weight_gradients(x2d, W_ih, h0, out, &da[0, 0, 0], &da[0, 0, 0], s0, c1,
                                  c1 < T, dx2d, dW_ih, dW_hh, &db[0], &db[0], num_threads, pool)
                # dW_hr += DHP^T M over the chunk's rows
                _team_gemm(True, <int>P, <int>H, <int>((c1 - s0) * B), &dhp[0, 0, 0], <int>P,
                           &m[0, 0, 0], <int>H, 1 if c1 < T else 0, &dW_hr[0, 0], <int>H, team,
                           pool)
                if peephole:  # dW_ch += [da_i c_{t-1}, da_f c_{t-1}, da_o c_t], summed
                    for t in range(s0, c1):
                        cp = &c[t - 1, 0, 0] if t > 0 else &c0[0, 0]
                        for b in range(B):
                            for j in range(H):
                                dW_ch[j] += da[t - s0, b, j] * cp[b * H + j]
                                dW_ch[H + j] += da[t - s0, b, H + j] * cp[b * H + j]
                                dW_ch[2 * H + j] += da[t - s0, b, 3 * H + j] * c[t, b, j]
                c1 = s0
    finally:
        free(P_hr)
        free(P_hh)
        free(spare)
    if stopped:
        _raise_pending()
    return 0


def forward(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
            const floating[::1] bias, const floating[:, ::1] W_hh, const floating[::1] W_ch,
            const floating[:, ::1] W_hr, const floating[:, ::1] h0, const floating[:, ::1] c0,
            const int64_t[::1] lengths, bint peephole, bint proj, bint bf16, bint use_blas,
            int num_threads, floating[:, :, ::1] gates, floating[:, ::1] work,
            floating[:, ::1] m, floating[:, :, ::1] c, floating[:, :, ::1] out,
            floating[:, ::1] h_n, floating[:, ::1] c_n):
    """LSTM forward over a whole sequence.

    Inputs:  x2d (T*B, I), W_ih (4H, I), bias (4H,) = b_ih + b_hh (zeros if none),
             W_hh (4H, P), W_ch (3H,) the peepholes (read when ``peephole``),
             W_hr (P, H) the projection (``proj``; without it P = H and W_hr
             has no rows), h0 (B, P), c0 (B, H), lengths (B,) int64, bf16
             (bfloat16 products: _engine_forward; never with ``proj``),
             use_blas (read by the Numba kernels only: the engine has its own
             product), num_threads (the engine's threads).
    Work:    work (B, 4H), m (B, H) (``proj``: _forward_proj).
    Outputs (overwritten): gates (S, B, 4H) the activated gates i, f, g, o of
             each step (zero past a sequence's length), c (S, B, H) the cell
             state c_t (frozen past the length), both of the last S steps
             (S = T in training, fewer in inference: see _engine_forward),
             out (T, B, P) h_t (zero past the length), h_n (B, P) and c_n
             (B, H) the states after each sequence's last step.

    float32 and float64 (all arrays one dtype).
    """
    c_n[:, :] = c0
    if proj:
        _forward_proj(x2d, W_ih, bias, W_hh, W_ch, W_hr, h0, lengths, peephole, num_threads,
                      gates, work, m, c, out, h_n, c_n)
        return
    _engine_forward(x2d, W_ih, W_hh, bias, h0, lengths, num_threads, &gates[0, 0, 0],
                    gates.shape[0], &out[0, 0, 0], &c_n[0, 0], &c[0, 0, 0], &W_ch[0], peephole,
                    h_n, bf16)



def forward_int8(const float[:, ::1] x2d, W_ih, const float[::1] bias, W_hh,
                 const float[::1] W_ch, const float[:, ::1] W_hr, const float[:, ::1] h0,
                 const float[:, ::1] c0, const int64_t[::1] lengths, bint peephole, bint proj,
                 int num_threads, float[:, :, ::1] gates, float[:, ::1] work,
                 float[:, ::1] m, float[:, :, ::1] c, float[:, :, ::1] out,
                 float[:, ::1] h_n, float[:, ::1] c_n):
    """``forward`` in int8 compute (inference): W_ih, W_hh QuantizedWeights
    (fastrnn.quantize_weight); float32 otherwise; never with ``proj`` (the
    driver refuses it)."""
    c_n[:, :] = c0
    _engine_forward_int8(x2d, W_ih, W_hh, bias, h0, lengths, num_threads,
                         &gates[0, 0, 0], gates.shape[0], &out[0, 0, 0], &c_n[0, 0],
                         &c[0, 0, 0], &W_ch[0], peephole, h_n)

def backward(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
             const floating[:, ::1] W_hh, const floating[::1] W_ch,
             const floating[:, ::1] W_hr, const floating[:, ::1] h0,
             const floating[:, ::1] c0, const floating[:, :, ::1] out,
             const floating[:, :, ::1] c, const floating[:, :, ::1] gates,
             const floating[:, :, ::1] d_out, const floating[:, ::1] d_h_n,
             const floating[:, ::1] d_c_n, const int64_t[::1] lengths,
             bint peephole, bint proj, bint bf16, bint use_blas, int num_threads,
             floating[:, :, ::1] da, floating[:, ::1] work, floating[:, :, ::1] m,
             floating[:, :, ::1] dhp, floating[:, ::1] dx2d, floating[:, ::1] dh0,
             floating[:, ::1] dc0, floating[:, ::1] dW_ih, floating[:, ::1] dW_hh,
             floating[::1] db, floating[::1] dW_ch, floating[:, ::1] dW_hr):
    """LSTM BPTT over a whole sequence.

    Inputs:  x2d (T*B, I), W_ih (4H, I), W_hh (4H, P), W_ch (3H,), W_hr (P, H),
             h0 (B, P), c0 (B, H), and from the forward out (T, B, P), c (T, B, H)
             and gates (T, B, 4H); d_out (T, B, P), d_h_n (B, P), d_c_n (B, H),
             lengths (B,) int64, peephole, proj, use_blas, num_threads (as in forward).
    Work:    da (S, B, 4H) the gradients of the gates' pre-activations of a
             chunk of S <= T steps (see _engine_backward); with ``proj``
             (_backward_proj) work (B, P), m (S, B, H) dL/dm and then m_t,
             dhp (S, B, P) dL/dh_t.
    Outputs (overwritten): dx2d (T*B, I), dh0 (B, P), dc0 (B, H), dW_ih (4H, I),
             dW_hh (4H, P), db (4H,) (the gradient of b_ih and of b_hh alike),
             dW_ch (3H,) (zeros without peepholes), dW_hr (P, H) (``proj``).

    float32 and float64 (all arrays one dtype).
    """
    dh0[:, :] = d_h_n
    dc0[:, :] = d_c_n
    dW_ch[:] = 0
    if proj:
        _backward_proj(x2d, W_ih, W_hh, W_ch, W_hr, h0, c0, out, c, gates, d_out, lengths,
                       peephole, num_threads, da, work, m, dhp, dx2d, dh0, dc0, dW_ih, dW_hh, db,
                       dW_ch, dW_hr)
        return
    _engine_backward(W_hh, lengths, num_threads, &gates[0, 0, 0], &c[0, 0, 0], &c[0, 0, 0],
                     &c0[0, 0], d_out, dh0, &dc0[0, 0], da, da, &W_ch[0], &dW_ch[0], peephole,
                     x2d, W_ih, h0, out, dx2d, dW_ih, dW_hh, &db[0], &db[0], bf16)


# ---- the LayerNorm LSTM (fastrnn.layernorm) ---------------------------------------
#
# [i, f, g, o] = LN_i(x_t W_ih^T) + LN_h(h_{t-1} W_hh^T), c_t = LN_c(f c_{t-1} + i g),
# h_t = o tanh(c_t) (fastrnn/reference.py, "Layer-normalised cells").  The
# LayerNorms need whole rows (all 4H gate columns of the recurrent product
# before any gate; all H units of f c_{t-1} + i g before c_t), so the batch
# is split as with the projection: groups of rows run every step of a chunk
# on their own (_row_groups), each step a packed product of the group's rows
# (_packed_product) and then one pass per row.  The input products of a
# chunk are one GEMM (_team_gemm), normalised row by row before the steps.


cdef inline void _ln_row(Py_ssize_t t, Py_ssize_t b, Py_ssize_t B, Py_ssize_t H,
                         Py_ssize_t ring, Py_ssize_t iring, const floating* gi, const floating* bi,
                         const floating* gh, const floating* bh, const floating* gc,
                         const floating* bc, double eps, const int64_t* lengths,
                         const floating* i_hat, floating* h_hat, floating* rstd_h,
                         floating* gates, floating* cs, floating* c_hat, floating* rstd_c,
                         floating* out, floating* c_n, const floating* h_prev,
                         floating* h_next, floating* a) noexcept nogil:
    """Row b of step t after its recurrent product (h_hat's row, not yet
    normalised): the recurrent LayerNorm, the gates, the cell state's
    LayerNorm, h_t.  Step t's saved arrays go to row t % ring, its input
    product is row t % iring of i_hat; a (4H,) is scratch."""
    cdef Py_ssize_t GH = 4 * H, j, sb = (t % ring) * B
    cdef floating i, f, gj, o, cj, hj
    cdef const floating* ih = i_hat + ((t % iring) * B + b) * GH
    cdef floating* hh = h_hat + (sb + b) * GH
    cdef floating* g = gates + (sb + b) * GH
    cdef floating* cp = c_hat + (sb + b) * H
    if t >= lengths[b]:  # frozen: states kept, output zero
        memset(g, 0, GH * sizeof(floating))
        memcpy(cs + (sb + b) * H, c_n + b * H, H * sizeof(floating))
        memset(cp, 0, H * sizeof(floating))
        memset(out + (t * B + b) * H, 0, H * sizeof(floating))
        memcpy(h_next + b * H, h_prev + b * H, H * sizeof(floating))
        rstd_h[sb + b] = 0
        rstd_c[sb + b] = 0
        return
    rstd_h[sb + b] = _norm_row(hh, GH, eps)
    # The pre-activations first, then the gates from them alone: one loop
    # reading seven arrays and writing two ran scalar (gcc's checks for
    # their overlap), a third of a (1, 64) step.
    for j in range(GH):
        a[j] = ih[j] * gi[j] + bi[j] + hh[j] * gh[j] + bh[j]
    for j in range(H):
        i = _sigmoid(a[j])
        f = _sigmoid(a[H + j])
        gj = _tanh(a[2 * H + j])
        o = _sigmoid(a[3 * H + j])
        g[j] = i
        g[H + j] = f
        g[2 * H + j] = gj
        g[3 * H + j] = o
        cp[j] = f * c_n[b * H + j] + i * gj  # normalised below
    rstd_c[sb + b] = _norm_row(cp, H, eps)
    for j in range(H):
        cj = cp[j] * gc[j] + bc[j]
        hj = g[3 * H + j] * _tanh(cj)
        c_n[b * H + j] = cj
        cs[(sb + b) * H + j] = cj
        out[(t * B + b) * H + j] = hj
        h_next[b * H + j] = hj


cdef void _ln_forward_rows(Py_ssize_t t0, Py_ssize_t t1, Py_ssize_t b0, Py_ssize_t b1,
                           Py_ssize_t B, Py_ssize_t H, Py_ssize_t u, Py_ssize_t ring,
                           Py_ssize_t iring, const floating* gi, const floating* bi,
                           const floating* gh, const floating* bh, const floating* gc,
                           const floating* bc, double eps, const int64_t* lengths,
                           const floating* P_hh, const floating* i_hat, floating* h_hat,
                           floating* rstd_h, floating* gates, floating* cs, floating* c_hat,
                           floating* rstd_c, floating* out, floating* c_n, floating* hbuf,
                           floating* a, fastrnn_steps* shared, bint main_thread) noexcept nogil:
    """Steps t0..t1-1 of the LayerNorm LSTM for rows b0..b1-1 alone: i_hat
    holds these steps' normalised input products (row t % iring), hbuf's
    half t % 2 h_{t0-1}, c_n c_{t0-1}; each step the group's product, then
    _ln_row for each of its rows."""
    cdef Py_ssize_t GH = 4 * H, t, b
    cdef floating acc[ROW_BLOCK * 64]
    cdef floating* h_prev
    cdef _SignalClock clock = [0, 1, 1]
    for t in range(t0, t1):
        if not _keep_going(shared, main_thread, &clock):
            return
        h_prev = hbuf + (t % 2) * B * H
        # h_hat = h_{t-1} W_hh^T, every gate, normalised row by row in _ln_row
        _packed_product(h_prev + b0 * H, H, b1 - b0, P_hh, H, GH, u,
                        h_hat + ((t % ring) * B + b0) * GH, GH, False, acc)
        for b in range(b0, b1):
            _ln_row(t, b, B, H, ring, iring, gi, bi, gh, bh, gc, bc, eps, lengths, i_hat, h_hat,
                    rstd_h, gates, cs, c_hat, rstd_c, out, c_n, h_prev,
                    hbuf + ((t + 1) % 2) * B * H, a)


cdef void _ln_forward_shared(fastrnn_steps* steps, int tid, Py_ssize_t n_items, Py_ssize_t t0,
                             Py_ssize_t t1, Py_ssize_t B, Py_ssize_t H, Py_ssize_t u,
                             Py_ssize_t ring, Py_ssize_t iring, const floating* gi,
                             const floating* bi,
                             const floating* gh, const floating* bh, const floating* gc,
                             const floating* bc, double eps, const int64_t* lengths,
                             const floating* P_hh, const floating* i_hat, floating* h_hat,
                             floating* rstd_h, floating* gates, floating* cs,
                             floating* c_hat, floating* rstd_c, floating* out, floating* c_n,
                             floating* hbuf, floating* scratch) noexcept nogil:
    """Steps t0..t1-1 of the LayerNorm LSTM by the whole team: each step's
    product split by columns (n_items shares of W_hh's panels, every row),
    then, once all of it is done, its rows (n_items groups) through _ln_row:
    two waits a step, but each thread streams only its share of W_hh (the
    rows' split streams all of it through every thread, every step: W_hh
    of 16 MB at (64, 1024)).  scratch: a (4H,) row a thread."""
    cdef Py_ssize_t GH = 4 * H, t, b, k_item, item, p0, p1, n_panels = (GH + u - 1) // u
    cdef long phase
    cdef int team = fastrnn_team_size()
    cdef Py_ssize_t own = tid * n_items // team, mine = (tid + 1) * n_items // team - own
    cdef floating acc[ROW_BLOCK * 64]
    cdef floating* h_prev
    cdef _SignalClock clock = [0, 1, 1]
    for t in range(t0, t1):
        h_prev = hbuf + (t % 2) * B * H
        for phase in range(2 * (t - t0), 2 * (t - t0) + 2):
            if not fastrnn_steps_wait(steps, phase):
                return
            for k_item in range(n_items):
                # Own items first, then the partners' from the far end.
                item = (own + k_item if k_item < mine
                        else (own - 1 - (k_item - mine) + n_items) % n_items)
                if not fastrnn_steps_claim(steps, item, phase):
                    continue
                if phase % 2 == 0:  # the product's columns of panels p0..p1-1
                    p0 = item * n_panels // n_items
                    p1 = (item + 1) * n_panels // n_items
                    if p1 > p0:
                        _packed_product(h_prev, H, B, P_hh + p0 * H * u, H,
                                        min(GH, p1 * u) - p0 * u, u,
                                        h_hat + (t % ring) * B * GH + p0 * u, GH, False, acc)
                else:
                    for b in range(item * B // n_items, (item + 1) * B // n_items):
                        _ln_row(t, b, B, H, ring, iring, gi, bi, gh, bh, gc, bc, eps, lengths,
                                i_hat, h_hat, rstd_h, gates, cs, c_hat, rstd_c, out, c_n,
                                h_prev, hbuf + ((t + 1) % 2) * B * H, scratch + tid * GH)
                fastrnn_steps_done(steps)
        if tid == 0 and _check_now(&clock) and _interrupted():
            fastrnn_steps_abort(steps)
            return


def layernorm_forward(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
                      const floating[:, ::1] W_hh, const floating[::1] gamma_i,
                      const floating[::1] beta_i, const floating[::1] gamma_h,
                      const floating[::1] beta_h, const floating[::1] gamma_c,
                      const floating[::1] beta_c, const int64_t[::1] lengths, double eps,
                      int num_threads, floating[:, ::1] h_n, floating[:, ::1] c_n,
                      floating[:, :, ::1] out, floating[:, :, ::1] gates,
                      floating[:, :, ::1] c, floating[:, :, ::1] i_hat,
                      floating[:, ::1] rstd_i, floating[:, :, ::1] h_hat,
                      floating[:, ::1] rstd_h, floating[:, :, ::1] c_hat,
                      floating[:, ::1] rstd_c):
    """LayerNorm LSTM forward over a whole sequence (kernels/layernorm_numba.py's
    lstm_forward_steps, in the engine's row split).

    Inputs:  x2d (T*B, I), W_ih (4H, I), W_hh (4H, H), each LayerNorm's gamma
             and beta ((4H,) for i and h, (H,) for c), lengths (B,) int64,
             eps, num_threads; h_n, c_n (B, H) hold h0, c0.
    Outputs (overwritten): out (T, B, H), h_n, c_n the states after each
             sequence's last step; and with S rows of steps (S = T in
             training, 1 in inference, step t in row t % S): gates (S, B,
             4H) activated, c (S, B, H) c_t, h_hat (S, B, 4H) the normalised
             recurrent product, c_hat (S, B, H) the normalised f c_{t-1} +
             i g, rstd_h and rstd_c (S, B) their 1 / sqrt(var + eps); with
             S' rows (T in training, a chunk in inference, S' >= S), i_hat
             (S', B, 4H) and rstd_i (S', B), the input product's.
    """
    cdef Py_ssize_t B = h_n.shape[0], H = h_n.shape[1], I = x2d.shape[1]
    cdef Py_ssize_t T = x2d.shape[0] // B if B else 0, GH = 4 * H, ring = gates.shape[0]
    cdef Py_ssize_t iring = i_hat.shape[0]  # the chunk's input products: as many steps or more
    # panels of 4 vectors: a (1, 64) step's product ran latency-bound on tiles of 2
    cdef Py_ssize_t u = _lanes(<floating*>NULL) * 4, t0 = 0, c1, grp
    # the steps' team: a thread per group of rows; the GEMMs' and row passes': all
    # (with one team of one, OpenBLAS's own pool would run the GEMM and then spin
    # beside the steps: half the samples of a (1, 64) inference)
    cdef int team = <int>max(1, min(num_threads, B)), pool = _pool_threads()
    cdef int wide = <int>max(1, num_threads)
    cdef Py_ssize_t groups = _row_groups(B, team)
    # or the team shares each step's product by columns (_ln_forward_shared)
    cdef bint columns = _ln_share_columns(B, GH, H, team, sizeof(floating))
    cdef Py_ssize_t n_items = min(B, (GH + u - 1) // u, 4 * <Py_ssize_t>team)
    cdef fastrnn_steps shared
    cdef bint stopped = False
    # h_{t-1} and h_t (B, H) each; then each group's (or thread's) scratch (4H)
    cdef floating* hbuf = <floating*>malloc(max(1, 2 * B * H + max(groups, team) * GH)
                                            * sizeof(floating))
    cdef long* claims = <long*>malloc(max(1, n_items) * sizeof(long))
    cdef floating* P_hh = NULL
    # on one thread, OpenBLAS kept to it too (its pool would spin beside: _solo)
    cdef bint solo = num_threads == 1 and pool > 1 and _blas_local != NULL
    if T == 0 or B == 0:
        free(hbuf)
        free(claims)
        return
    if solo:
        _blas_local(1)
    try:
        with nogil:
            P_hh = _packed(&W_hh[0, 0], 1, H, H, GH, u)  # W_hh^T (H, 4H) as panels
        if hbuf == NULL or P_hh == NULL or claims == NULL:
            raise MemoryError()
        with nogil:
            memcpy(hbuf, &h_n[0, 0], B * H * sizeof(floating))
            while t0 < T and not stopped:
                c1 = min(T, t0 + iring)
                _ln_inputs(&x2d[t0 * B, 0], &W_ih[0, 0], (c1 - t0) * B, I, GH, eps,
                           &i_hat[t0 % iring, 0, 0], &rstd_i[t0 % iring, 0],
                           <int>min(wide, (c1 - t0) * B), pool)
                if columns:
                    fastrnn_steps_init(&shared, n_items, claims)
                    with parallel(num_threads=team):
                        _ln_forward_shared(&shared, threadid(), n_items, t0, c1, B, H, u, ring,
                                           iring, &gamma_i[0], &beta_i[0], &gamma_h[0], &beta_h[0],
                                           &gamma_c[0], &beta_c[0], eps, &lengths[0], P_hh,
                                           &i_hat[0, 0, 0], &h_hat[0, 0, 0], &rstd_h[0, 0],
                                           &gates[0, 0, 0], &c[0, 0, 0], &c_hat[0, 0, 0],
                                           &rstd_c[0, 0], &out[0, 0, 0], &c_n[0, 0], hbuf,
                                           hbuf + 2 * B * H)
                    stopped = fastrnn_steps_aborted(&shared)
                    t0 = c1
                    continue
                fastrnn_steps_init(&shared, 0, NULL)
                for grp in prange(groups, schedule="dynamic", num_threads=team):
                    _ln_forward_rows(t0, c1, grp * B // groups, (grp + 1) * B // groups, B, H, u,
                                     ring, iring, &gamma_i[0], &beta_i[0], &gamma_h[0], &beta_h[0],
                                     &gamma_c[0], &beta_c[0], eps, &lengths[0], P_hh,
                                     &i_hat[0, 0, 0], &h_hat[0, 0, 0], &rstd_h[0, 0],
                                     &gates[0, 0, 0], &c[0, 0, 0], &c_hat[0, 0, 0],
                                     &rstd_c[0, 0], &out[0, 0, 0], &c_n[0, 0], hbuf,
                                     hbuf + 2 * B * H + grp * GH, &shared, threadid() == 0)
                stopped = fastrnn_steps_aborted(&shared)
                t0 = c1
            memcpy(&h_n[0, 0], hbuf + (T % 2) * B * H, B * H * sizeof(floating))
    finally:
        free(hbuf)
        free(claims)
        free(P_hh)
        if solo:
            _blas_local(pool)
    if stopped:
        _raise_pending()


cdef inline void _ln_row_backward(Py_ssize_t t, Py_ssize_t b, Py_ssize_t B, Py_ssize_t H,
                                  const int64_t* lengths, const floating* gh,
                                  const floating* gc, const floating* c0, const floating* cs,
                                  const floating* gates, const floating* h_hat,
                                  const floating* rstd_h, const floating* c_hat,
                                  const floating* rstd_c, const floating* d_out, floating* da,
                                  floating* dah, const floating* dh, floating* dc,
                                  floating* row, floating* sums) noexcept nogil:
    """Row b of BPTT's step t, from dh, dc = dL/dh_t, dL/dc_t (dc left as
    dL/dc_{t-1}; dh for the product to replace): da (the gates'
    pre-activations) and dah (the recurrent product's, before its
    LayerNorm), zero past the length.  row (2H,) is scratch; sums (2*4H +
    2*H,) takes the row's shares of the gradients of gamma_h, beta_h,
    gamma_c, beta_c."""
    cdef Py_ssize_t GH = 4 * H, j, tb = t * B + b
    cdef floating i, f, gj, o, tc, dhj, dcj, dp
    cdef const floating* g = gates + tb * GH
    cdef const floating* cp
    cdef floating* ad = da + tb * GH
    cdef floating* dct = row
    cdef floating* dpr = row + H
    cdef floating* dgh = sums
    cdef floating* dbh = sums + GH
    cdef floating* dgc = sums + 2 * GH
    cdef floating* dbc = sums + 2 * GH + H
    if t >= lengths[b]:  # frozen: dh, dc pass through
        memset(ad, 0, GH * sizeof(floating))
        memset(dah + tb * GH, 0, GH * sizeof(floating))
        return
    # dc_t, then back through LN_c: dpr = dL/d(f c_{t-1} + i g)
    for j in range(H):
        o = g[3 * H + j]
        tc = _tanh(cs[tb * H + j])
        dhj = dh[b * H + j] + d_out[tb * H + j]
        ad[3 * H + j] = dhj * tc * o * (<floating>1 - o)
        dcj = dc[b * H + j] + dhj * o * (<floating>1 - tc * tc)
        dct[j] = dcj
        dgc[j] += dcj * c_hat[tb * H + j]
        dbc[j] += dcj
    _norm_row_backward(dct, gc, c_hat + tb * H, rstd_c[tb], dpr, H)
    cp = cs + (tb - B) * H if t > 0 else c0 + b * H
    for j in range(H):
        i = g[j]
        f = g[H + j]
        gj = g[2 * H + j]
        dp = dpr[j]
        ad[j] = dp * gj * i * (<floating>1 - i)
        ad[H + j] = dp * cp[j] * f * (<floating>1 - f)
        ad[2 * H + j] = dp * i * (<floating>1 - gj * gj)
        dc[b * H + j] = dp * f  # dL/dc_{t-1}
    for j in range(GH):
        dgh[j] += ad[j] * h_hat[tb * GH + j]
        dbh[j] += ad[j]
    _norm_row_backward(ad, gh, h_hat + tb * GH, rstd_h[tb], dah + tb * GH, GH)


cdef void _ln_backward_rows(Py_ssize_t t0, Py_ssize_t t1, Py_ssize_t b0, Py_ssize_t b1,
                            Py_ssize_t B, Py_ssize_t H, Py_ssize_t u, const int64_t* lengths,
                            const floating* P_hh, const floating* gh, const floating* gc,
                            const floating* c0, const floating* cs, const floating* gates,
                            const floating* h_hat, const floating* rstd_h,
                            const floating* c_hat, const floating* rstd_c,
                            const floating* d_out, floating* da, floating* dah, floating* dh,
                            floating* dc, floating* work, floating* row, floating* sums,
                            fastrnn_steps* shared, bint main_thread) noexcept nogil:
    """Steps t1-1 down to t0 of BPTT for rows b0..b1-1 alone, from dh, dc =
    dL/dh, dL/dc of step t1-1 (left as those of step t0-1): each step's rows
    (_ln_row_backward), then dL/dh_{t-1} = dah_t W_hh for them."""
    cdef Py_ssize_t GH = 4 * H, t, b
    cdef floating acc[ROW_BLOCK * 64]
    cdef _SignalClock clock = [0, 1, 1]
    for t in range(t1 - 1, t0 - 1, -1):
        if not _keep_going(shared, main_thread, &clock):
            return
        for b in range(b0, b1):
            _ln_row_backward(t, b, B, H, lengths, gh, gc, c0, cs, gates, h_hat, rstd_h, c_hat,
                             rstd_c, d_out, da, dah, dh, dc, row, sums)
        _packed_product(dah + (t * B + b0) * GH, GH, b1 - b0, P_hh, GH, H, u, work + b0 * H, H,
                        False, acc)
        for b in range(b0, b1):
            if t < lengths[b]:
                memcpy(dh + b * H, work + b * H, H * sizeof(floating))


cdef void _ln_backward_shared(fastrnn_steps* steps, int tid, Py_ssize_t n_items, Py_ssize_t T,
                              Py_ssize_t B, Py_ssize_t H, Py_ssize_t u,
                              const int64_t* lengths, const floating* P_hh,
                              const floating* gh, const floating* gc, const floating* c0,
                              const floating* cs, const floating* gates,
                              const floating* h_hat, const floating* rstd_h,
                              const floating* c_hat, const floating* rstd_c,
                              const floating* d_out, floating* da, floating* dah, floating* dh,
                              floating* dc, floating* work, floating* slots) noexcept nogil:
    """BPTT by the whole team, as _ln_forward_shared runs the forward: each
    step's rows in n_items groups (_ln_row_backward), then, once all are
    done, dL/dh_{t-1} = dah_t W_hh split by columns (n_items shares of the
    panels of W_hh's H columns, every row).  slots: a thread's parameter
    sums (2*4H + 2*H) and scratch row (2H), a slot a thread."""
    cdef Py_ssize_t GH = 4 * H, t, b, k_item, item, p0, p1, n_panels = (H + u - 1) // u, j
    cdef Py_ssize_t n_sums = 2 * GH + 2 * H
    cdef floating* slot = slots + tid * (n_sums + 2 * H)
    cdef long phase
    cdef int team = fastrnn_team_size()
    cdef Py_ssize_t own = tid * n_items // team, mine = (tid + 1) * n_items // team - own
    cdef floating acc[ROW_BLOCK * 64]
    cdef _SignalClock clock = [0, 1, 1]
    for t in range(T - 1, -1, -1):
        for phase in range(2 * (T - 1 - t), 2 * (T - 1 - t) + 2):
            if not fastrnn_steps_wait(steps, phase):
                return
            for k_item in range(n_items):
                item = (own + k_item if k_item < mine
                        else (own - 1 - (k_item - mine) + n_items) % n_items)
                if not fastrnn_steps_claim(steps, item, phase):
                    continue
                if phase % 2 == 0:
                    for b in range(item * B // n_items, (item + 1) * B // n_items):
                        _ln_row_backward(t, b, B, H, lengths, gh, gc, c0, cs, gates, h_hat,
                                         rstd_h, c_hat, rstd_c, d_out, da, dah, dh, dc,
                                         slot + n_sums, slot)
                else:  # dh's columns of panels p0..p1-1, every row
                    p0 = item * n_panels // n_items
                    p1 = (item + 1) * n_panels // n_items
                    if p1 > p0:
                        _packed_product(dah + t * B * GH, GH, B, P_hh + p0 * GH * u, GH,
                                        min(H, p1 * u) - p0 * u, u, work + p0 * u, H, False,
                                        acc)
                        for b in range(B):
                            if t < lengths[b]:
                                for j in range(p0 * u, min(H, p1 * u)):
                                    dh[b * H + j] = work[b * H + j]
                fastrnn_steps_done(steps)
        if tid == 0 and _check_now(&clock) and _interrupted():
            fastrnn_steps_abort(steps)
            return


def layernorm_backward(const floating[:, ::1] x2d, const floating[:, ::1] W_ih,
                       const floating[:, ::1] W_hh, const floating[::1] gamma_i,
                       const floating[::1] gamma_h, const floating[::1] gamma_c,
                       const floating[:, ::1] h0, const floating[:, ::1] c0,
                       const floating[:, :, ::1] out, const floating[:, :, ::1] c,
                       const floating[:, :, ::1] gates, const floating[:, :, ::1] i_hat,
                       const floating[:, ::1] rstd_i, const floating[:, :, ::1] h_hat,
                       const floating[:, ::1] rstd_h, const floating[:, :, ::1] c_hat,
                       const floating[:, ::1] rstd_c, const floating[:, :, ::1] d_out,
                       const int64_t[::1] lengths, int num_threads, floating[:, :, ::1] da,
                       floating[:, :, ::1] dah, floating[:, ::1] dx2d, floating[:, ::1] dh,
                       floating[:, ::1] dc, floating[:, ::1] dW_ih, floating[:, ::1] dW_hh,
                       floating[::1] dgamma_i, floating[::1] dbeta_i,
                       floating[::1] dgamma_h, floating[::1] dbeta_h,
                       floating[::1] dgamma_c, floating[::1] dbeta_c):
    """LayerNorm LSTM BPTT over a whole sequence (layernorm_numba.py's
    lstm_backward_steps and after_the_loop, in the engine's row split).

    Inputs:  x2d, W_ih, W_hh, the gammas, h0, c0, and what the training
             forward saved (T rows of steps); d_out (T, B, H); lengths;
             dh, dc (B, H) hold dL/dh_n, dL/dc_n.
    Work:    da, dah (T, B, 4H).
    Outputs (overwritten): dx2d (T*B, I), dh, dc (dL/dh0, dL/dc0), dW_ih,
             dW_hh, and each LayerNorm's gamma and beta gradients.
    """
    cdef Py_ssize_t T = out.shape[0], B = out.shape[1], H = out.shape[2], I = x2d.shape[1]
    cdef Py_ssize_t GH = 4 * H, R = T * B, grp, j, r, k, n_sums = 2 * GH + 2 * H
    cdef Py_ssize_t u = _lanes(<floating*>NULL) * 4  # as in layernorm_forward
    cdef int team = <int>max(1, min(num_threads, B)), pool = _pool_threads()
    cdef int wide = <int>max(1, num_threads)  # the passes over all T*B rows, and the GEMMs
    cdef Py_ssize_t groups = _row_groups(B, team)
    # or each step's product shared by columns, as in layernorm_forward
    cdef bint columns = _ln_share_columns(B, GH, H, team, sizeof(floating))
    cdef Py_ssize_t n_items = min(B, (H + u - 1) // u, 4 * <Py_ssize_t>team)
    cdef Py_ssize_t n_slots = max(groups, <Py_ssize_t>team)
    cdef fastrnn_steps shared
    cdef bint stopped = False
    cdef floating* P_hh = NULL
    # per group (or thread): its sums, its scratch row (2H); then a work (B, H)
    # and 2 * GH bias scratch
    cdef floating* spare = NULL
    cdef floating* work
    cdef long* claims = NULL
    dgamma_i[:] = 0
    dbeta_i[:] = 0
    dgamma_h[:] = 0
    dbeta_h[:] = 0
    dgamma_c[:] = 0
    dbeta_c[:] = 0
    if T == 0 or B == 0:
        dx2d[:, :] = 0
        dW_ih[:, :] = 0
        dW_hh[:, :] = 0
        return
    cdef bint solo = num_threads == 1 and pool > 1 and _blas_local != NULL
    spare = <floating*>calloc(n_slots * (n_sums + 2 * H) + B * H + 2 * GH, sizeof(floating))
    work = spare + n_slots * (n_sums + 2 * H)
    claims = <long*>malloc(max(1, n_items) * sizeof(long))
    if solo:
        _blas_local(1)
    try:
        with nogil:
            P_hh = _packed(&W_hh[0, 0], H, 1, GH, H, u)  # W_hh (4H, H) as panels
        if spare == NULL or P_hh == NULL or claims == NULL:
            raise MemoryError()
        with nogil:
            if columns:
                fastrnn_steps_init(&shared, n_items, claims)
                with parallel(num_threads=team):
                    _ln_backward_shared(&shared, threadid(), n_items, T, B, H, u, &lengths[0],
                                        P_hh, &gamma_h[0], &gamma_c[0], &c0[0, 0], &c[0, 0, 0],
                                        &gates[0, 0, 0], &h_hat[0, 0, 0], &rstd_h[0, 0],
                                        &c_hat[0, 0, 0], &rstd_c[0, 0], &d_out[0, 0, 0],
                                        &da[0, 0, 0], &dah[0, 0, 0], &dh[0, 0], &dc[0, 0], work,
                                        spare)
            else:
                fastrnn_steps_init(&shared, 0, NULL)
                for grp in prange(groups, schedule="dynamic", num_threads=team):
                    _ln_backward_rows(0, T, grp * B // groups, (grp + 1) * B // groups, B, H, u,
                                      &lengths[0], P_hh, &gamma_h[0], &gamma_c[0], &c0[0, 0],
                                      &c[0, 0, 0], &gates[0, 0, 0], &h_hat[0, 0, 0],
                                      &rstd_h[0, 0], &c_hat[0, 0, 0], &rstd_c[0, 0],
                                      &d_out[0, 0, 0], &da[0, 0, 0], &dah[0, 0, 0], &dh[0, 0],
                                      &dc[0, 0], work, spare + grp * (n_sums + 2 * H) + n_sums,
                                      spare + grp * (n_sums + 2 * H), &shared, threadid() == 0)
            stopped = fastrnn_steps_aborted(&shared)
        if stopped:
            _raise_pending()
        with nogil:
            for grp in range(n_slots):
                k = grp * (n_sums + 2 * H)
                for j in range(GH):
                    dgamma_h[j] += spare[k + j]
                    dbeta_h[j] += spare[k + GH + j]
                for j in range(H):
                    dgamma_c[j] += spare[k + 2 * GH + j]
                    dbeta_c[j] += spare[k + 2 * GH + H + j]
            _ln_after_the_loop(x2d, W_ih, h0, out, &gamma_i[0], &i_hat[0, 0, 0], &rstd_i[0, 0],
                               &da[0, 0, 0], &dah[0, 0, 0], dx2d, dW_ih, dW_hh, &dgamma_i[0],
                               &dbeta_i[0], work + B * H, wide, pool)
    finally:
        free(P_hh)
        free(spare)
        free(claims)
        if solo:
            _blas_local(pool)
