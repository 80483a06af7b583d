"""LSTM: the public functions that check, prepare and dispatch to a backend.

PyTorch's equations, gate order (i, f, g, o) and weight layout, so the
weights of a ``torch.nn.LSTM`` layer (``weight_ih_l0`` ...) work as they are.
"""
import numpy as np

from . import reference
from ._backends import kernels, resolve
from ._prepare import bias_sum, owned, state, steps, tuning, upstream
from ._types import ForwardCache, LSTMGrads, make_grads
from ._validation import check_backward, check_forward


def lstm_forward(x, h0, c0, W_ih, W_hh, b_ih=None, b_hh=None, *, lengths=None, training=True,
                 backend=None):
    """Run an LSTM over a batch of sequences.

    ``[i, f, g, o] = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh`` split into
    four blocks of H; ``i, f, o = sigmoid(.)``, ``g = tanh(.)``;
    ``c_t = f * c_{t-1} + i * g``; ``h_t = o * tanh(c_t)``.

    Parameters
    ----------
    x : ndarray, shape (T, B, I), float32 or float64
        Inputs, time-major.  Any strides; read-only arrays are fine.
    h0, c0 : ndarray, shape (B, H), or None
        Initial hidden and cell states; None means zeros.
    W_ih : ndarray, shape (4*H, I)
        Input weights, gate blocks i, f, g, o (PyTorch's ``weight_ih_l0``).
    W_hh : ndarray, shape (4*H, H)
        Recurrent weights (``weight_hh_l0``).
    b_ih, b_hh : ndarray, shape (4*H,), or None
        Biases; None means no bias (and a None gradient).
    lengths : array of int, shape (B,), or None
        Steps of each sequence, ``0 <= lengths[b] <= T``.  Past its length a
        sequence's states are frozen and its output rows are zero.  None: all T.
    training : bool
        When False nothing is saved for backward and ``cache`` is None.
    backend : {"numpy", "numba", "cython"} or None
        None uses the default (``fastrnn.get_default_backend()``).

    Returns
    -------
    out : ndarray, shape (T, B, H)
        h_t for every step (zero past a sequence's length); read-only when
        ``training``.
    h_n, c_n : ndarray, shape (B, H)
        Each sequence's states after its last step (h0, c0 if its length is 0).
    cache : ForwardCache or None
        What :func:`lstm_backward` needs.

    Raises as :func:`fastrnn.rnn_forward` does (TypeError for dtypes,
    ValueError naming the argument and the expected shape).
    """
    name = resolve(backend)
    if name == "numpy":
        return reference.lstm_forward(x, h0, c0, W_ih, W_hh, b_ih, b_hh, lengths=lengths,
                                      training=training)
    p = check_forward("lstm", x, h0, c0, W_ih, W_hh, b_ih, b_hh, lengths)
    k = kernels(name, "lstm")
    T, B, I, H, dtype = p.T, p.B, p.I, p.H, p.dtype

    x = owned(p.x, training)
    W_ih = owned(p.W_ih, training)
    W_hh = owned(p.W_hh, training)
    h0 = state(p.h0, B, H, dtype, training)
    c0 = state(p.c0, B, H, dtype, training)
    gates = np.empty((T, B, 4 * H), dtype)
    work = np.empty((B, 4 * H), dtype)
    c = np.empty((T, B, H), dtype)
    out = np.empty((T, B, H), dtype)
    h_n = np.empty((B, H), dtype)
    c_n = np.empty((B, H), dtype)
    k.forward(x.reshape(T * B, I), W_ih, bias_sum(p.b_ih, p.b_hh, 4 * H, dtype), W_hh, h0, c0,
              steps(p.lengths, T, B), *tuning(name, B, 4 * H, H), gates, work, c, out, h_n, c_n)

    cache = None
    if training:
        cache = ForwardCache(
            cell="lstm", backend=name, x=x, h0=h0, c0=c0, W_ih=W_ih, W_hh=W_hh,
            has_b_ih=p.b_ih is not None, has_b_hh=p.b_hh is not None, lengths=p.lengths,
            out=out, gates=gates, c=c)
        out = cache.read_only_out()
    return out, h_n, c_n, cache


def lstm_backward(d_out, d_h_n, d_c_n, cache):
    """Backpropagate through time through the LSTM forward that made ``cache``.

    Uses the backend of that forward.

    Parameters
    ----------
    d_out : ndarray, shape (T, B, H), or None
        dL/d out; None means zeros.  Rows past a sequence's length are ignored.
    d_h_n, d_c_n : ndarray, shape (B, H), or None
        dL/d h_n and dL/d c_n; None means zeros.
    cache : ForwardCache
        From :func:`lstm_forward` with ``training=True``.

    Returns
    -------
    LSTMGrads
        Named tuple ``(dx (T, B, I), dh0 (B, H), dc0 (B, H), dW_ih (4H, I),
        dW_hh (4H, H), db_ih (4H,), db_hh (4H,))``; a bias that was None has
        gradient None.
    """
    g = check_backward("lstm", cache, {"d_out": d_out, "d_h_n": d_h_n, "d_c_n": d_c_n})
    if cache.backend == "numpy":
        return reference.lstm_backward(d_out, d_h_n, d_c_n, cache)
    k = kernels(cache.backend, "lstm")
    x, out = cache.x, cache.out
    T, B, I = x.shape
    H = out.shape[2]
    dtype = x.dtype

    da = np.empty((T, B, 4 * H), dtype)
    work = np.empty((B, H), dtype)
    dx = np.empty((T, B, I), dtype)
    dh0 = np.empty((B, H), dtype)
    dc0 = np.empty((B, H), dtype)
    dW_ih = np.empty((4 * H, I), dtype)
    dW_hh = np.empty((4 * H, H), dtype)
    db = np.empty(4 * H, dtype)
    k.backward(x.reshape(T * B, I), cache.W_ih, cache.W_hh, cache.h0, cache.c0, out, cache.c,
               cache.gates, upstream(g["d_out"], (T, B, H), dtype),
               upstream(g["d_h_n"], (B, H), dtype), upstream(g["d_c_n"], (B, H), dtype),
               steps(cache.lengths, T, B), *tuning(cache.backend, B, 4 * H, H),
               da, work, dx.reshape(T * B, I), dh0, dc0, dW_ih, dW_hh, db)
    return make_grads(LSTMGrads, cache, dx, dh0, dc0, dW_ih, dW_hh, db_ih=db, db_hh=db)
