"""Elman RNN kernels, Numba backend: forward recurrence, then BPTT.

These kernels trust their inputs: ``fastrnn._driver`` has checked shapes and
dtypes, made every array C-contiguous and of one float dtype, allocated the
outputs and workspace, and chosen ``use_blas`` (see ``fastrnn._tuning``).
Shape letters: T steps, B batch, I input features, H hidden units.

Read side by side with ``fastrnn/reference.py`` (the specification) and
``kernels/rnn_cython.pyx`` (the same loops in Cython).  The steps every
cell shares (input projection, recurrent product, weight gradients) are in
``_numba_util``.

The kernels take ``bf16`` (bfloat16 products) to match the Cython kernels'
signatures; it is always False here: the driver sends bf16 compute to the
Cython engine only.
"""
from ._numba_util import (backward_product, fast_tanh, in_chunks, jit, project_inputs,
                          recurrent_product, transposed_for_loops, weight_gradients)


@jit
def _act(a, relu, zero):
    # relu keeps NaN (NaN < 0 is False), as np.maximum does in the reference.
    # ``zero`` is typed like the data so float32 stays float32.
    if relu:
        return zero if a < 0 else a
    return fast_tanh(a)


@jit
def _act_grad(h, relu, zero, one):
    """d act / d a, written with the activation's output h (min-char-rnn's 1 - h*h)."""
    if relu:
        return one if h > 0 else zero
    return one - h * h


def forward(x2d, W_ih, bias, W_hh, h0, lengths, relu, bf16, use_blas, num_threads, work, out, h_n):
    """Elman forward over a whole sequence.

    Inputs:  x2d (T*B, I), W_ih (H, I), bias (H,) = b_ih + b_hh (zeros if none),
             W_hh (H, H), h0 (B, H), lengths (B,) int64, relu, use_blas,
             num_threads (unused: see _numba_util; BLAS threads carry the large sizes).
    Work:    work (B, H).
    Outputs (overwritten): out (T, B, H) the states h_t (zero past a sequence's
             length), h_n (B, H) each sequence's state after its last step.
    """
    W_hhT = transposed_for_loops(W_hh, use_blas)
    h_n[:] = h0
    in_chunks(lambda t0, t1: forward_steps(x2d, W_ih, bias, W_hh, W_hhT, lengths, relu,
                                           use_blas, work, out, h_n, t0, t1), x2d, W_hh, out)


@jit
def forward_steps(x2d, W_ih, bias, W_hh, W_hhT, lengths, relu, use_blas, work, out, h_n, t0, t1):
    """Steps t0 .. t1-1 of the forward, from the state h_n (h_{t0-1})."""
    T, B, H = out.shape
    zero = out.dtype.type(0)
    # Only the recurrence is sequential: the steps' input terms in one GEMM,
    # written straight into out, which later holds the states.
    project_inputs(x2d, W_ih, bias, out.reshape(T * B, H), t0 * B, t1 * B)
    for t in range(t0, t1):
        recurrent_product(h_n, W_hh, W_hhT, lengths, t, use_blas, work)
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    v = _act(out[t, b, j] + work[b, j], relu, zero)
                    out[t, b, j] = v
                    h_n[b, j] = v
            else:
                for j in range(H):
                    out[t, b, j] = 0


def backward(x2d, W_ih, W_hh, h0, out, d_out, d_h_n, lengths, relu, bf16, use_blas, num_threads,
             da, work, dx2d, dh0, dW_ih, dW_hh, db):
    """Elman BPTT over a whole sequence.

    Inputs:  x2d (T*B, I), W_ih (H, I), W_hh (H, H), h0 (B, H), out (T, B, H)
             the forward states, d_out (T, B, H), d_h_n (B, H), lengths (B,),
             relu, use_blas, num_threads (unused, as in forward).
    Work:    da (T, B, H) the pre-activation gradients, work (B, H).
    Outputs (overwritten): dx2d (T*B, I), dh0 (B, H), dW_ih (H, I),
             dW_hh (H, H), db (H,) (the gradient of b_ih and of b_hh alike).
    """
    dh0[:] = d_h_n  # the running dL/dh_t; what is left after step 0 is dL/dh0
    in_chunks(lambda t0, t1: backward_steps(W_hh, out, d_out, lengths, relu, use_blas, da, work,
                                            dh0, t0, t1), x2d, W_hh, out, reverse=True)
    weight_gradients(x2d, W_ih, h0, out, da, da, dx2d, dW_ih, dW_hh, db, db)


@jit
def backward_steps(W_hh, out, d_out, lengths, relu, use_blas, da, work, dh, t0, t1):
    """Steps t1-1 down to t0 of BPTT, from dh = dL/dh_{t1-1} (left as dL/dh_{t0-1})."""
    T, B, H = out.shape
    zero, one = out.dtype.type(0), out.dtype.type(1)
    for t in range(t1 - 1, t0 - 1, -1):
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    da[t, b, j] = (dh[b, j] + d_out[t, b, j]) * _act_grad(out[t, b, j], relu, zero, one)
            else:
                # A frozen step is the identity on h: dh passes through untouched.
                for j in range(H):
                    da[t, b, j] = 0
        # The only sequential product: dh_{t-1} = da_t @ W_hh.
        backward_product(da[t], W_hh, lengths, t, use_blas, work)
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    dh[b, j] = work[b, j]
