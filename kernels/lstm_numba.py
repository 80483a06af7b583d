"""LSTM kernels, Numba backend: forward recurrence, then BPTT.

These kernels trust their inputs: ``fastrnn._driver`` has checked shapes and
dtypes, made every array C-contiguous and of one float dtype, allocated the
outputs and workspace, and chosen ``use_blas`` (see ``fastrnn._tuning``).
Shape letters: T steps, B batch, I input features, H hidden units; the gate
blocks of width H are i, f, g, o (PyTorch's order); the peephole weights
W_ch (3H,) have blocks i, f, o (zeros when the cell has none: the same
loops run either way).  With a projection (``proj``: W_hr (P, H), PyTorch's
proj_size) h has P columns: each step's m = o * tanh(c_t) (B, H) goes
through one more product, h_t = m W_hr^T; without one P = H and W_hr has
no rows.

Read side by side with ``fastrnn/reference.py`` (the specification) and
``kernels/lstm_cython.pyx`` (the same loops in Cython).

The kernels take ``bf16`` (bfloat16 products) to match the Cython kernels'
signatures; it is always False here: the driver sends bf16 compute to the
Cython engine only.
"""
import numpy as np

from ._numba_util import (backward_product, fast_tanh, in_chunks, jit, project_inputs,
                          recurrent_product, sigmoid, transposed_for_loops, weight_gradients)


def forward(x2d, W_ih, bias, W_hh, W_ch, W_hr, h0, c0, lengths, peephole, proj, bf16, use_blas,
            num_threads, gates, work, m, c, out, h_n, c_n):
    """LSTM forward over a whole sequence.

    Inputs:  x2d (T*B, I), W_ih (4H, I), bias (4H,) = b_ih + b_hh (zeros if none),
             W_hh (4H, P), W_ch (3H,) the peepholes (zeros if none), W_hr
             (P, H) the projection (read when ``proj``), h0 (B, P),
             c0 (B, H), lengths (B,) int64, peephole, use_blas, num_threads
             (unused, as in the Elman kernels).
    Work:    work (B, 4H), m (B, H) (o * tanh(c_t) before the projection).
    Outputs (overwritten): gates (T, B, 4H) the activated gates i, f, g, o of
             each step (zero past a sequence's length), c (T, B, H) the cell
             state c_t (frozen past the length), out (T, B, P) h_t (zero past
             the length), h_n (B, P) and c_n (B, H) the states after each
             sequence's last step.
    """
    W_hhT = transposed_for_loops(W_hh, use_blas)
    W_hrT = transposed_for_loops(W_hr, use_blas)
    h_n[:] = h0
    c_n[:] = c0
    in_chunks(lambda t0, t1: forward_steps(x2d, W_ih, bias, W_hh, W_hhT, W_ch, W_hr, W_hrT,
                                           peephole, proj, lengths, use_blas, gates, work, m, c,
                                           out, h_n, c_n, t0, t1),
              x2d, W_hh, out)


@jit
def forward_steps(x2d, W_ih, bias, W_hh, W_hhT, W_ch, W_hr, W_hrT, peephole, proj, lengths,
                  use_blas, gates, work, m, c, out, h_n, c_n, t0, t1):
    """Steps t0 .. t1-1 of the forward, from the states h_n, c_n (those of step t0-1)."""
    T, B, P = out.shape
    H = c.shape[2]
    # The steps' input terms in one GEMM, into gates, which each step then
    # overwrites with its activated gates.
    project_inputs(x2d, W_ih, bias, gates.reshape(T * B, 4 * H), t0 * B, t1 * B)
    for t in range(t0, t1):
        # One product for all four gates: work = h_{t-1} W_hh^T.
        recurrent_product(h_n, W_hh, W_hhT, lengths, t, use_blas, work)
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    c_prev = c_n[b, j]
                    ai = gates[t, b, j] + work[b, j]
                    af = gates[t, b, H + j] + work[b, H + j]
                    ao = gates[t, b, 3 * H + j] + work[b, 3 * H + j]
                    if peephole:  # loop-invariant: LLVM keeps a plain loop beside this one
                        ai += W_ch[j] * c_prev
                        af += W_ch[H + j] * c_prev
                    i = sigmoid(ai)
                    f = sigmoid(af)
                    g = fast_tanh(gates[t, b, 2 * H + j] + work[b, 2 * H + j])
                    cj = f * c_prev + i * g
                    if peephole:
                        ao += W_ch[2 * H + j] * cj
                    o = sigmoid(ao)
                    hj = o * fast_tanh(cj)
                    gates[t, b, j] = i
                    gates[t, b, H + j] = f
                    gates[t, b, 2 * H + j] = g
                    gates[t, b, 3 * H + j] = o
                    c[t, b, j] = cj
                    c_n[b, j] = cj
                    if proj:  # loop-invariant, as peephole
                        m[b, j] = hj
                    else:
                        out[t, b, j] = hj
                        h_n[b, j] = hj
            else:
                for j in range(4 * H):
                    gates[t, b, j] = 0
                for j in range(H):
                    c[t, b, j] = c_n[b, j]
        if proj:
            # The projection, the step's second product: h_t = m W_hr^T.
            recurrent_product(m, W_hr, W_hrT, lengths, t, use_blas, out[t])
        for b in range(B):
            if t < lengths[b]:
                if proj:
                    for j in range(P):
                        h_n[b, j] = out[t, b, j]
            else:
                for j in range(P):
                    out[t, b, j] = 0


def backward(x2d, W_ih, W_hh, W_ch, W_hr, h0, c0, out, c, gates, d_out, d_h_n, d_c_n, lengths,
             peephole, proj, bf16, use_blas, num_threads, da, work, m, dhp, dx2d, dh0, dc0, dW_ih,
             dW_hh, db, dW_ch, dW_hr):
    """LSTM BPTT over a whole sequence.

    Inputs:  x2d (T*B, I), W_ih (4H, I), W_hh (4H, P), W_ch (3H,), W_hr (P, H),
             h0 (B, P), c0 (B, H), and from the forward out (T, B, P), c
             (T, B, H) and gates (T, B, 4H); d_out (T, B, P), d_h_n (B, P),
             d_c_n (B, H), lengths (B,), peephole, proj, use_blas, num_threads
             (unused).
    Work:    da (T, B, 4H) the gradients of the gates' pre-activations, work
             (B, P); with ``proj`` m (T, B, H) each step's dL/dm = dh W_hr,
             then m = o * tanh(c_t), and dhp (T, B, P) each step's dL/dh_t
             (zero past the length), whose product is dW_hr.
    Outputs (overwritten): dx2d (T*B, I), dh0 (B, P), dc0 (B, H), dW_ih (4H, I),
             dW_hh (4H, P), db (4H,) (the gradient of b_ih and of b_hh alike),
             dW_ch (3H,) (zeros without peepholes), dW_hr (P, H).
    """
    # dh0, dc0: the running dL/dh_t and dL/dc_t; after step 0 they are dL/dh0, dL/dc0
    dh0[:] = d_h_n
    dc0[:] = d_c_n
    dW_ch[:] = 0
    in_chunks(lambda t0, t1: backward_steps(W_hh, W_ch, W_hr, peephole, proj, c0, out, c, gates,
                                            d_out, lengths, use_blas, da, work, m, dhp, dh0, dc0,
                                            dW_ch, t0, t1),
              x2d, W_hh, out, reverse=True)
    weight_gradients(x2d, W_ih, h0, out, da, da, dx2d, dW_ih, dW_hh, db, db)
    if proj:
        projection_gradient(dhp, m, dW_hr)


@jit
def projection_gradient(dhp, m, dW_hr):
    """dW_hr (P, H) = sum over steps of dL/dh_t^T m_t, one GEMM over all T*B rows."""
    T, B, P = dhp.shape
    np.dot(dhp.reshape(T * B, P).T, m.reshape(T * B, m.shape[2]), dW_hr)


@jit
def backward_steps(W_hh, W_ch, W_hr, peephole, proj, c0, out, c, gates, d_out, lengths, use_blas,
                   da, work, m, dhp, dh, dc, dW_ch, t0, t1):
    """Steps t1-1 down to t0 of BPTT, from dh, dc = dL/dh_{t1-1}, dL/dc_{t1-1}
    (left as those of step t0-1); adds the steps' share of dW_ch."""
    T, B, P = out.shape
    H = c.shape[2]
    one = out.dtype.type(1)
    for t in range(t1 - 1, t0 - 1, -1):
        if proj:
            # dL/dh_t, then dL/dm_t = dL/dh_t W_hr (the projection's product)
            for b in range(B):
                for j in range(P):
                    dhp[t, b, j] = dh[b, j] + d_out[t, b, j] if t < lengths[b] else 0
            backward_product(dhp[t], W_hr, lengths, t, use_blas, m[t])
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    i = gates[t, b, j]
                    f = gates[t, b, H + j]
                    g = gates[t, b, 2 * H + j]
                    o = gates[t, b, 3 * H + j]
                    c_prev = c[t - 1, b, j] if t > 0 else c0[b, j]
                    tc = fast_tanh(c[t, b, j])
                    if proj:
                        dhj = m[t, b, j]
                        m[t, b, j] = o * tc  # m_t, for dW_hr
                    else:
                        dhj = dh[b, j] + d_out[t, b, j]
                    dao = dhj * tc * o * (one - o)
                    dcj = dc[b, j] + dhj * o * (one - tc * tc)
                    if peephole:  # loop-invariant, as in the forward
                        dcj += dao * W_ch[2 * H + j]
                    dai = dcj * g * i * (one - i)
                    daf = dcj * c_prev * f * (one - f)
                    da[t, b, j] = dai
                    da[t, b, H + j] = daf
                    da[t, b, 2 * H + j] = dcj * i * (one - g * g)
                    da[t, b, 3 * H + j] = dao
                    dcj = dcj * f  # dL/dc_{t-1}
                    if peephole:
                        dcj += dai * W_ch[j] + daf * W_ch[H + j]
                        dW_ch[j] += dai * c_prev
                        dW_ch[H + j] += daf * c_prev
                        dW_ch[2 * H + j] += dao * c[t, b, j]
                    dc[b, j] = dcj
            else:
                # A frozen step is the identity on (h, c): dh and dc pass through.
                for j in range(4 * H):
                    da[t, b, j] = 0
                if proj:
                    for j in range(H):
                        m[t, b, j] = 0
        # dh_{t-1} = da_t @ W_hh, all gates at once.
        backward_product(da[t], W_hh, lengths, t, use_blas, work)
        for b in range(B):
            if t < lengths[b]:
                for j in range(P):
                    dh[b, j] = work[b, j]
