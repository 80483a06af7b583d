"""The NumPy reference: the specification every fast kernel is tested against.

Readable first.  One step of the Elman RNN is

    a_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh        (B, H)
    h_t = act(a_t)                                          act = tanh or relu

and BPTT walks the steps backwards carrying dL/dh (min-char-rnn's ``dhnext``):

    da_t      = (dL/dh_t from above + d_out_t) * act'(a_t)  act' from h_t: 1 - h_t^2, or [h_t > 0]
    dh_{t-1}  = da_t W_hh
    dW_ih    += da_t^T x_t,  dW_hh += da_t^T h_{t-1},  db += sum_b da_t,  dx_t = da_t W_ih

Variable lengths: sequence b runs for ``lengths[b]`` steps.  After that its
state is frozen (h_n[b] is its last real state, h0 when the length is 0) and
its output rows are zero, so those steps pass no gradient to the weights and
hand dL/dh through unchanged.

The fast backends have the same signatures: ``from fastrnn import rnn_forward``
replaces ``from fastrnn.reference import rnn_forward``.
"""
import numpy as np

from ._types import ForwardCache, RNNGrads
from ._validation import check_backward, check_forward, check_nonlinearity


def _zeros_if_none(arr, shape, dtype):
    return np.zeros(shape, dtype) if arr is None else arr


def rnn_forward(x, h0, W_ih, W_hh, b_ih=None, b_hh=None, *, nonlinearity="tanh",
                lengths=None, training=True):
    """Elman RNN over a sequence: the reference for ``fastrnn.rnn_forward``.

    Same parameters and results as :func:`fastrnn.rnn_forward`, without ``backend``.
    """
    p = check_forward("rnn", x, h0, None, W_ih, W_hh, b_ih, b_hh, lengths)
    relu = check_nonlinearity(nonlinearity) == "relu"
    T, B, H, dtype = p.T, p.B, p.H, p.dtype
    x, W_ih, W_hh, lengths = p.x, p.W_ih, p.W_hh, p.lengths
    b = _zeros_if_none(p.b_ih, H, dtype) + _zeros_if_none(p.b_hh, H, dtype)

    h = _zeros_if_none(p.h0, (B, H), dtype).copy()
    h0 = h.copy()
    out = np.zeros((T, B, H), dtype)
    for t in range(T):
        a = x[t] @ W_ih.T + h @ W_hh.T + b
        h_new = np.maximum(a, 0) if relu else np.tanh(a)
        if lengths is None:
            h = h_new
        else:
            running = (t < lengths)[:, None]  # (B, 1)
            h = np.where(running, h_new, h)
            h_new = np.where(running, h_new, 0)
        out[t] = h_new

    cache = None
    if training:
        cache = ForwardCache(
            cell="rnn", backend="numpy", nonlinearity=nonlinearity,
            x=np.array(x, order="C"), h0=h0, W_ih=np.array(W_ih, order="C"),
            W_hh=np.array(W_hh, order="C"), has_b_ih=p.b_ih is not None,
            has_b_hh=p.b_hh is not None, lengths=lengths, out=out)
        out = cache.read_only_out()
    return out, h, cache


def rnn_backward(d_out, d_h_n, cache):
    """BPTT through an Elman RNN: the reference for ``fastrnn.rnn_backward``."""
    g = check_backward("rnn", cache, {"d_out": d_out, "d_h_n": d_h_n})
    x, h0, W_ih, W_hh, out, lengths = (cache.x, cache.h0, cache.W_ih, cache.W_hh,
                                       cache.out, cache.lengths)
    relu = cache.nonlinearity == "relu"
    T, B, H = out.shape
    dtype = x.dtype
    d_out = _zeros_if_none(g["d_out"], (T, B, H), dtype)

    dx = np.zeros_like(x)
    dW_ih = np.zeros_like(W_ih)
    dW_hh = np.zeros_like(W_hh)
    db = np.zeros(H, dtype)
    dh = _zeros_if_none(g["d_h_n"], (B, H), dtype).copy()  # dL/dh_t, carried backwards
    for t in reversed(range(T)):
        h = out[t]
        h_prev = out[t - 1] if t > 0 else h0
        dh_total = dh + d_out[t]
        da = dh_total * ((h > 0) if relu else (1 - h * h))
        if lengths is not None:
            running = (t < lengths)[:, None]
            da = np.where(running, da, 0)
        dW_ih += da.T @ x[t]
        dW_hh += da.T @ h_prev
        db += da.sum(axis=0)
        dx[t] = da @ W_ih
        dh_prev = da @ W_hh
        dh = dh_prev if lengths is None else np.where(running, dh_prev, dh)

    return RNNGrads.from_cache(cache, dx, dh, dW_ih, dW_hh, db)  # dh is now dL/dh0
