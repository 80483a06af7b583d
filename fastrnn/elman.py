"""Elman RNN: the public functions that check, prepare and dispatch to a backend.

The kernels in ``fastrnn.kernels`` trust their inputs.  Here every argument
is checked once (``_validation``), arrays are made C-contiguous (copied only
when they are not, or when the cache must own them), outputs and workspace
are allocated, and the backend's kernel is called.
"""
import numpy as np

from . import reference
from ._backends import kernels, resolve
from ._prepare import bias_sum, owned, state, steps, tuning, upstream
from ._types import ForwardCache, RNNGrads, make_grads
from ._validation import check_backward, check_forward, check_nonlinearity


def rnn_forward(x, h0, W_ih, W_hh, b_ih=None, b_hh=None, *, nonlinearity="tanh",
                lengths=None, training=True, backend=None):
    """Run an Elman RNN over a batch of sequences.

    ``h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`` for t = 0 .. T-1.

    Parameters
    ----------
    x : ndarray, shape (T, B, I), float32 or float64
        Inputs, time-major.  Any strides; read-only arrays are fine.
    h0 : ndarray, shape (B, H), or None
        Initial state; None means zeros.
    W_ih : ndarray, shape (H, I)
        Input-to-hidden weights (PyTorch's ``weight_ih_l0``).
    W_hh : ndarray, shape (H, H)
        Hidden-to-hidden weights (``weight_hh_l0``).
    b_ih, b_hh : ndarray, shape (H,), or None
        Biases; None means no bias (and a None gradient).
    nonlinearity : {"tanh", "relu"}
    lengths : array of int, shape (B,), or None
        Steps of each sequence, ``0 <= lengths[b] <= T``.  Past its length a
        sequence's state is frozen and its output rows are zero.  None: all T.
    training : bool
        When False nothing is saved for backward and ``cache`` is None.
    backend : {"numpy", "numba", "cython"} or None
        None uses the default (``fastrnn.get_default_backend()``).

    Returns
    -------
    out : ndarray, shape (T, B, H)
        h_t for every step (zero past a sequence's length).  Read-only when
        ``training`` (the cache refers to it); copy it to change it.
    h_n : ndarray, shape (B, H)
        Each sequence's state after its last step (h0 if its length is 0).
    cache : ForwardCache or None
        What :func:`rnn_backward` needs.

    All arrays have the dtype of ``x``; no input is modified.

    Raises
    ------
    TypeError
        An array that is not float32/float64, or whose dtype differs from x's;
        lengths that are not integers.
    ValueError
        A wrong rank or shape (the message names the argument and the shape
        expected), lengths out of range, an unknown nonlinearity or backend.
    fastrnn.BackendUnavailableError
        The named backend cannot load here (the message says why).

    See Also
    --------
    fastrnn.reference.rnn_forward : the NumPy specification of this function.
    """
    name = resolve(backend)
    if name == "numpy":
        return reference.rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh, nonlinearity=nonlinearity,
                                     lengths=lengths, training=training)
    p = check_forward("rnn", x, h0, None, W_ih, W_hh, b_ih, b_hh, lengths)
    relu = check_nonlinearity(nonlinearity) == "relu"
    k = kernels(name, "rnn")
    T, B, I, H, dtype = p.T, p.B, p.I, p.H, p.dtype

    x = owned(p.x, training)
    W_ih = owned(p.W_ih, training)
    W_hh = owned(p.W_hh, training)
    h0 = state(p.h0, B, H, dtype, training)
    out = np.empty((T, B, H), dtype)
    h_n = np.empty((B, H), dtype)
    work = np.empty((B, H), dtype)
    k.forward(x.reshape(T * B, I), W_ih, bias_sum(p.b_ih, p.b_hh, H, dtype), W_hh, h0,
              steps(p.lengths, T, B), relu, *tuning(name, B, H, H), work, out, h_n)

    cache = None
    if training:
        cache = ForwardCache(
            cell="rnn", backend=name, nonlinearity=nonlinearity, x=x, h0=h0, W_ih=W_ih,
            W_hh=W_hh, has_b_ih=p.b_ih is not None, has_b_hh=p.b_hh is not None,
            lengths=p.lengths, out=out)
        out = cache.read_only_out()
    return out, h_n, cache


def rnn_backward(d_out, d_h_n, cache):
    """Backpropagate through time through the forward that made ``cache``.

    Uses the backend of that forward.

    Parameters
    ----------
    d_out : ndarray, shape (T, B, H), or None
        dL/d out; None means zeros (a loss on h_n only).  Rows past a
        sequence's length are ignored (those outputs are constant zeros).
    d_h_n : ndarray, shape (B, H), or None
        dL/d h_n; None means zeros.
    cache : ForwardCache
        From :func:`rnn_forward` with ``training=True``.

    Returns
    -------
    RNNGrads
        Named tuple ``(dx (T, B, I), dh0 (B, H), dW_ih (H, I), dW_hh (H, H),
        db_ih (H,), db_hh (H,))``, new arrays of the forward's dtype; a bias
        that was None has gradient None.

    Raises
    ------
    TypeError
        A gradient whose dtype differs from the forward's, or a cache that is
        not a ForwardCache.
    ValueError
        A wrong shape, a cache of another cell, or ``cache=None`` (a forward
        run with ``training=False``).

    Notes
    -----
    ``da_t = (dL/dh_t + d_out_t) * act'(h_t)``, ``dL/dh_{t-1} = da_t W_hh``;
    ``dW_ih = sum_t da_t^T x_t``, ``dW_hh = sum_t da_t^T h_{t-1}``,
    ``db = sum_t sum_b da_t``, ``dx_t = da_t W_ih``.

    See Also
    --------
    fastrnn.reference.rnn_backward : the NumPy specification of this function.
    """
    g = check_backward("rnn", cache, {"d_out": d_out, "d_h_n": d_h_n})
    if cache.backend == "numpy":
        return reference.rnn_backward(d_out, d_h_n, cache)
    k = kernels(cache.backend, "rnn")
    x, out = cache.x, cache.out
    T, B, I = x.shape
    H = out.shape[2]
    dtype = x.dtype
    d_out = upstream(g["d_out"], (T, B, H), dtype)
    d_h_n = upstream(g["d_h_n"], (B, H), dtype)

    da = np.empty((T, B, H), dtype)
    work = np.empty((B, H), dtype)
    dx = np.empty((T, B, I), dtype)
    dh0 = np.empty((B, H), dtype)
    dW_ih = np.empty((H, I), dtype)
    dW_hh = np.empty((H, H), dtype)
    db = np.empty(H, dtype)
    k.backward(x.reshape(T * B, I), cache.W_ih, cache.W_hh, cache.h0, out, d_out, d_h_n,
               steps(cache.lengths, T, B), cache.nonlinearity == "relu",
               *tuning(cache.backend, B, H, H),
               da, work, dx.reshape(T * B, I), dh0, dW_ih, dW_hh, db)
    return make_grads(RNNGrads, cache, dx, dh0, dW_ih, dW_hh, db_ih=db, db_hh=db)
