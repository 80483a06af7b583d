"""GRU: the public functions that check, prepare and dispatch to a backend.

PyTorch's equations, gate order (r, z, n) and weight layout, with b_hn inside
the reset product, so the weights of a ``torch.nn.GRU`` layer work as they are.
"""
import numpy as np

from . import reference
from ._backends import kernels, resolve
from ._prepare import owned, state, steps, tuning, upstream
from ._types import ForwardCache, GRUGrads, make_grads
from ._validation import check_backward, check_forward


def _split_bias(b_ih, b_hh, H, dtype):
    """(bias (3H,), b_hn (H,)) as the kernels add them: b_ih + b_hh on the r and z
    blocks, b_ih alone on n; b_hn joins the recurrent term inside the r product."""
    bias = np.zeros(3 * H, dtype) if b_ih is None else np.array(b_ih, dtype, order="C")
    if b_hh is None:
        return bias, np.zeros(H, dtype)
    bias[:2 * H] += b_hh[:2 * H]
    return bias, np.ascontiguousarray(b_hh[2 * H:])


def gru_forward(x, h0, W_ih, W_hh, b_ih=None, b_hh=None, *, lengths=None, training=True,
                backend=None):
    """Run a GRU over a batch of sequences (PyTorch's ``nn.GRU`` equations).

    ``r = sigmoid(x_t W_ir^T + b_ir + h_{t-1} W_hr^T + b_hr)``, z likewise,
    ``n = tanh(x_t W_in^T + b_in + r * (h_{t-1} W_hn^T + b_hn))``,
    ``h_t = (1 - z) * n + z * h_{t-1}``.

    Parameters
    ----------
    x : ndarray, shape (T, B, I), float32 or float64
        Inputs, time-major.  Any strides; read-only arrays are fine.
    h0 : ndarray, shape (B, H), or None
        Initial state; None means zeros.
    W_ih : ndarray, shape (3*H, I)
        Input weights, gate blocks r, z, n (PyTorch's ``weight_ih_l0``).
    W_hh : ndarray, shape (3*H, H)
        Recurrent weights (``weight_hh_l0``).
    b_ih, b_hh : ndarray, shape (3*H,), or None
        Biases; None means no bias (and a None gradient).
    lengths, training, backend
        As in :func:`fastrnn.rnn_forward`.

    Returns
    -------
    out : ndarray, shape (T, B, H)
        h_t for every step (zero past a sequence's length); read-only when
        ``training``.
    h_n : ndarray, shape (B, H)
        Each sequence's state after its last step (h0 if its length is 0).
    cache : ForwardCache or None
        What :func:`gru_backward` needs.

    Raises as :func:`fastrnn.rnn_forward` does.
    """
    name = resolve(backend)
    if name == "numpy":
        return reference.gru_forward(x, h0, W_ih, W_hh, b_ih, b_hh, lengths=lengths,
                                     training=training)
    p = check_forward("gru", x, h0, None, W_ih, W_hh, b_ih, b_hh, lengths)
    k = kernels(name, "gru")
    T, B, I, H, dtype = p.T, p.B, p.I, p.H, p.dtype

    x = owned(p.x, training)
    W_ih = owned(p.W_ih, training)
    W_hh = owned(p.W_hh, training)
    h0 = state(p.h0, B, H, dtype, training)
    gates = np.empty((T, B, 3 * H), dtype)
    work = np.empty((B, 3 * H), dtype)
    hn = np.empty((T, B, H), dtype)
    out = np.empty((T, B, H), dtype)
    h_n = np.empty((B, H), dtype)
    k.forward(x.reshape(T * B, I), W_ih, *_split_bias(p.b_ih, p.b_hh, H, dtype), W_hh, h0,
              steps(p.lengths, T, B), *tuning(name, B, 3 * H, H), gates, work, hn, out, h_n)

    cache = None
    if training:
        cache = ForwardCache(
            cell="gru", backend=name, x=x, h0=h0, W_ih=W_ih, W_hh=W_hh,
            has_b_ih=p.b_ih is not None, has_b_hh=p.b_hh is not None, lengths=p.lengths,
            out=out, gates=gates, hn=hn)
        out = cache.read_only_out()
    return out, h_n, cache


def gru_backward(d_out, d_h_n, cache):
    """Backpropagate through time through the GRU forward that made ``cache``.

    Uses the backend of that forward.

    Parameters
    ----------
    d_out : ndarray, shape (T, B, H), or None
        dL/d out; None means zeros.  Rows past a sequence's length are ignored.
    d_h_n : ndarray, shape (B, H), or None
        dL/d h_n; None means zeros.
    cache : ForwardCache
        From :func:`gru_forward` with ``training=True``.

    Returns
    -------
    GRUGrads
        Named tuple ``(dx (T, B, I), dh0 (B, H), dW_ih (3H, I), dW_hh (3H, H),
        db_ih (3H,), db_hh (3H,))``; a bias that was None has gradient None.
        db_ih and db_hh differ in the n block (b_hn is multiplied by r).
    """
    g = check_backward("gru", cache, {"d_out": d_out, "d_h_n": d_h_n})
    if cache.backend == "numpy":
        return reference.gru_backward(d_out, d_h_n, cache)
    k = kernels(cache.backend, "gru")
    x, out = cache.x, cache.out
    T, B, I = x.shape
    H = out.shape[2]
    dtype = x.dtype

    da_x = np.empty((T, B, 3 * H), dtype)
    da_h = np.empty((T, B, 3 * H), dtype)
    work = np.empty((B, H), dtype)
    dx = np.empty((T, B, I), dtype)
    dh0 = np.empty((B, H), dtype)
    dW_ih = np.empty((3 * H, I), dtype)
    dW_hh = np.empty((3 * H, H), dtype)
    db_ih = np.empty(3 * H, dtype)
    db_hh = np.empty(3 * H, dtype)
    k.backward(x.reshape(T * B, I), cache.W_ih, cache.W_hh, cache.h0, out, cache.gates,
               cache.hn, upstream(g["d_out"], (T, B, H), dtype),
               upstream(g["d_h_n"], (B, H), dtype), steps(cache.lengths, T, B),
               *tuning(cache.backend, B, 3 * H, H), da_x, da_h, work, dx.reshape(T * B, I),
               dh0, dW_ih, dW_hh, db_ih, db_hh)
    return make_grads(GRUGrads, cache, dx, dh0, dW_ih, dW_hh, db_ih=db_ih, db_hh=db_hh)
