"""GRU kernels, Numba backend: forward recurrence, then BPTT.

These kernels trust their inputs: ``fastrnn._driver`` has checked shapes and
dtypes, made every array C-contiguous and of one float dtype, allocated the
outputs and workspace, and chosen ``use_blas`` (see ``fastrnn._tuning``).
Shape letters: T steps, B batch, I input features, H hidden units; the gate
blocks of width H are r, z, n (PyTorch's order), and b_hn stays inside the
reset product: n = tanh(x W_in^T + b_in + r * (h W_hn^T + b_hn)).  With
``reset_before`` (the option reset_after=False) r comes first and b_hn is
added after: n = tanh(x W_in^T + b_in + (r * h) W_hn^T + b_hn), two products
a step (``*_reset_before``).

Read side by side with ``fastrnn/reference.py`` (the specification) and
``kernels/gru_cython.pyx`` (the same loops in Cython).

The kernels take ``bf16`` (bfloat16 products) to match the Cython kernels'
signatures; it is always False here: the driver sends bf16 compute to the
Cython engine only.
"""
import numpy as np

from ._numba_util import (backward_product, fast_tanh, in_chunks, jit, project_inputs,
                          recurrent_product, sigmoid, transposed_for_loops, weight_gradients)


def forward(x2d, W_ih, bias, b_hn, W_hh, h0, lengths, reset_before, bf16, use_blas, num_threads,
            gates, work, hn, out, h_n):
    """GRU forward over a whole sequence.

    Inputs:  x2d (T*B, I), W_ih (3H, I), bias (3H,) = b_ih + (b_hr, b_hz, 0),
             b_hn (H,) (zeros if there is no b_hh), W_hh (3H, H), h0 (B, H),
             lengths (B,) int64, use_blas, num_threads (unused).
    Work:    work (B, 3H).
    Outputs (overwritten): gates (T, B, 3H) the activated gates r, z, n of each
             step (zero past a sequence's length), hn (T, B, H) the term
             h_{t-1} W_hn^T + b_hn that r multiplies (reset_before: r * h_{t-1}),
             out (T, B, H) h_t (zero past the length), h_n (B, H) the state
             after each sequence's last step.
    """
    W_hhT = transposed_for_loops(W_hh, use_blas)
    h_n[:] = h0
    steps = forward_steps_reset_before if reset_before else forward_steps
    in_chunks(lambda t0, t1: steps(x2d, W_ih, bias, b_hn, W_hh, W_hhT, lengths, use_blas,
                                   gates, work, hn, out, h_n, t0, t1),
              x2d, W_hh, out)


@jit
def forward_steps(x2d, W_ih, bias, b_hn, W_hh, W_hhT, lengths, use_blas, gates, work, hn, out,
                  h_n, t0, t1):
    """Steps t0 .. t1-1 of the forward, from the state h_n (h_{t0-1})."""
    T, B, H = out.shape
    one = out.dtype.type(1)
    project_inputs(x2d, W_ih, bias, gates.reshape(T * B, 3 * H), t0 * B, t1 * B)
    for t in range(t0, t1):
        # One product for all three gates: work = h_{t-1} W_hh^T.
        recurrent_product(h_n, W_hh, W_hhT, lengths, t, use_blas, work)
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    r = sigmoid(gates[t, b, j] + work[b, j])
                    z = sigmoid(gates[t, b, H + j] + work[b, H + j])
                    hnj = work[b, 2 * H + j] + b_hn[j]
                    n = fast_tanh(gates[t, b, 2 * H + j] + r * hnj)
                    hj = (one - z) * n + z * h_n[b, j]
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


@jit
def forward_steps_reset_before(x2d, W_ih, bias, b_hn, W_hh, W_hhT, lengths, use_blas, gates,
                               work, hn, out, h_n, t0, t1):
    """forward_steps with the reset before the n block's product."""
    T, B, H = out.shape
    one = out.dtype.type(1)
    project_inputs(x2d, W_ih, bias, gates.reshape(T * B, 3 * H), t0 * B, t1 * B)
    W_rz, W_n = W_hh[:2 * H], W_hh[2 * H:]
    W_rzT, W_nT = W_hhT[:, :2 * H], W_hhT[:, 2 * H:]
    flat = work.reshape(B * 3 * H)
    work_rz = flat[:2 * B * H].reshape(B, 2 * H)
    work_n = flat[2 * B * H:].reshape(B, H)
    rh = np.zeros((B, H), out.dtype)
    for t in range(t0, t1):
        # The r and z blocks' product, then r * h_{t-1}, then the n block's.
        recurrent_product(h_n, W_rz, W_rzT, lengths, t, use_blas, work_rz)
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    r = sigmoid(gates[t, b, j] + work_rz[b, j])
                    gates[t, b, j] = r
                    gates[t, b, H + j] = sigmoid(gates[t, b, H + j] + work_rz[b, H + j])
                    rh[b, j] = r * h_n[b, j]
        recurrent_product(rh, W_n, W_nT, lengths, t, use_blas, work_n)
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    z = gates[t, b, H + j]
                    n = fast_tanh(gates[t, b, 2 * H + j] + work_n[b, j] + b_hn[j])
                    hj = (one - z) * n + z * h_n[b, j]
                    gates[t, b, 2 * H + j] = n
                    hn[t, b, j] = rh[b, j]
                    out[t, b, j] = hj
                    h_n[b, j] = hj
            else:
                for j in range(3 * H):
                    gates[t, b, j] = 0
                for j in range(H):
                    hn[t, b, j] = 0
                    out[t, b, j] = 0


def backward(x2d, W_ih, W_hh, h0, out, gates, hn, d_out, d_h_n, lengths, reset_before, bf16,
             use_blas, num_threads, da_x, da_h, work, dx2d, dh0, dW_ih, dW_hh, db_ih, db_hh):
    """GRU BPTT over a whole sequence.

    Inputs:  x2d (T*B, I), W_ih (3H, I), W_hh (3H, H), h0 (B, H), and from the
             forward out, hn (T, B, H) and gates (T, B, 3H); d_out (T, B, H),
             d_h_n (B, H), lengths (B,), use_blas, num_threads (unused).
    Work:    da_x, da_h (T, B, 3H): the gradients of the input term
             x_t W_ih^T + b_ih and of the recurrent term h_{t-1} W_hh^T + b_hh
             (they differ in the n block by the factor r); work (B, H).
    Outputs (overwritten): dx2d (T*B, I), dh0 (B, H), dW_ih (3H, I),
             dW_hh (3H, H), db_ih, db_hh (3H,).
    """
    dh0[:] = d_h_n  # the running dL/dh_t; what is left after step 0 is dL/dh0
    steps = backward_steps_reset_before if reset_before else backward_steps
    in_chunks(lambda t0, t1: steps(W_hh, h0, out, gates, hn, d_out, lengths, use_blas,
                                   da_x, da_h, work, dh0, t0, t1),
              x2d, W_hh, out, reverse=True)
    weight_gradients(x2d, W_ih, h0, out, da_x, da_h, dx2d, dW_ih, dW_hh, db_ih, db_hh)
    if reset_before:
        n_block_gradients(da_x, hn, dW_hh, db_ih, db_hh)


@jit
def backward_steps(W_hh, h0, out, gates, hn, d_out, lengths, use_blas, da_x, da_h, work, dh,
                   t0, t1):
    """Steps t1-1 down to t0 of BPTT, from dh = dL/dh_{t1-1} (left as dL/dh_{t0-1})."""
    T, B, H = out.shape
    one = out.dtype.type(1)
    for t in range(t1 - 1, t0 - 1, -1):
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    r = gates[t, b, j]
                    z = gates[t, b, H + j]
                    n = gates[t, b, 2 * H + j]
                    h_prev = out[t - 1, b, j] if t > 0 else h0[b, j]
                    dhj = dh[b, j] + d_out[t, b, j]
                    dn = dhj * (one - z) * (one - n * n)
                    dr = dn * hn[t, b, j] * r * (one - r)
                    dz = dhj * (h_prev - n) * z * (one - z)
                    da_x[t, b, j] = dr
                    da_x[t, b, H + j] = dz
                    da_x[t, b, 2 * H + j] = dn
                    da_h[t, b, j] = dr
                    da_h[t, b, H + j] = dz
                    da_h[t, b, 2 * H + j] = dn * r
                    dh[b, j] = dhj * z  # the direct path; the product is added below
            else:
                # A frozen step is the identity on h: dh passes through untouched.
                for j in range(3 * H):
                    da_x[t, b, j] = 0
                    da_h[t, b, j] = 0
        # The only sequential product: dh_{t-1} += da_h_t @ W_hh, all gates at once.
        backward_product(da_h[t], W_hh, lengths, t, use_blas, work)
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    dh[b, j] += work[b, j]


@jit
def backward_steps_reset_before(W_hh, h0, out, gates, hn, d_out, lengths, use_blas, da_x, da_h,
                                work, dh, t0, t1):
    """backward_steps with the reset before the n block's product: dn reaches
    r * h_{t-1} through W_hn (drh) before dr can be formed.  da_h's n block is
    left zero (weight_gradients then leaves dW_hh's and db_hh's n blocks to
    n_block_gradients)."""
    T, B, H = out.shape
    one = out.dtype.type(1)
    W_n = W_hh[2 * H:]
    dn = np.zeros((B, H), out.dtype)
    drh = np.zeros((B, H), out.dtype)
    for t in range(t1 - 1, t0 - 1, -1):
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    z = gates[t, b, H + j]
                    n = gates[t, b, 2 * H + j]
                    h_prev = out[t - 1, b, j] if t > 0 else h0[b, j]
                    dhj = dh[b, j] + d_out[t, b, j]
                    dn[b, j] = dhj * (one - z) * (one - n * n)
                    dz = dhj * (h_prev - n) * z * (one - z)
                    da_x[t, b, H + j] = dz
                    da_x[t, b, 2 * H + j] = dn[b, j]
                    da_h[t, b, H + j] = dz
                    da_h[t, b, 2 * H + j] = 0
                    dh[b, j] = dhj * z  # the direct path; the products are added below
            else:
                for j in range(H):
                    dn[b, j] = 0
                for j in range(3 * H):
                    da_x[t, b, j] = 0
                    da_h[t, b, j] = 0
        # drh = dn W_hn: the gradient of r * h_{t-1}.
        backward_product(dn, W_n, lengths, t, use_blas, drh)
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    r = gates[t, b, j]
                    h_prev = out[t - 1, b, j] if t > 0 else h0[b, j]
                    dr = drh[b, j] * h_prev * r * (one - r)
                    da_x[t, b, j] = dr
                    da_h[t, b, j] = dr
                    dh[b, j] += drh[b, j] * r
        # dh_{t-1} += [dr, dz] W_h[rz] (da_h's n block is zero).
        backward_product(da_h[t], W_hh, lengths, t, use_blas, work)
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    dh[b, j] += work[b, j]


@jit
def n_block_gradients(da_x, hn, dW_hh, db_ih, db_hh):
    """With the reset before the product: dW_hn = sum dn^T (r * h_{t-1}) (hn
    holds r * h_{t-1}) and db_hn = db_in (both add into n's pre-activation)."""
    T, B, GH = da_x.shape
    H = GH // 3
    DN = np.ascontiguousarray(da_x.reshape(T * B, GH)[:, 2 * H:])
    dW_hh[2 * H:] = np.dot(DN.T, hn.reshape(T * B, H))
    db_hh[2 * H:] = db_ih[2 * H:]
