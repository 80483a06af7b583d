"""The layer-normalised cells' functional API: LayerNorm LSTM and LayerNorm GRU.

The cells of Ba, Kiros and Hinton (2016) in the form of PyTorch's benchmark
of custom cells (``benchmarks/fastrnns/custom_lstms.py``): each row of the
input product and of the recurrent product normalised over all its gate
columns, and the LSTM's cell state over its H units, each LayerNorm with its
own gain (``gamma_*``) and bias (``beta_*``); the equations are in
``fastrnn.reference`` ("Layer-normalised cells"), which has these functions
with the same signatures less ``backend``.

Backends: the LayerNorm LSTM ``"cython"`` (kernels/lstm_cython.pyx:
``layernorm_forward``/``layernorm_backward``, the batch split between
threads as the projection's kernels split it), ``"numba"``
(kernels/layernorm_numba.py: the products on BLAS, the LayerNorms and the
gate arithmetic fused into one pass over each row) and ``"numpy"`` (the
reference); the LayerNorm GRU likewise (kernels/gru_cython.pyx).
``backend=None`` takes the fastest of a cell's backends that works here.
"""
import threading

import numpy as np

from . import _backends, _tuning, reference
from ._threads import get_num_threads
from ._layernorm import (NORM_CELLS, LayerNormGRUGrads, LayerNormLSTMGrads, NormCache,
                         check_eps, check_norm_backward, check_norm_forward, filled_params,
                         given_params, make_norm_grads)
from .layers import DirectionCell, _Recurrent

__all__ = ["layernorm_lstm_forward", "layernorm_lstm_backward", "layernorm_gru_forward",
           "layernorm_gru_backward", "LayerNormLSTMGrads", "LayerNormGRUGrads", "NormCache",
           "LayerNormLSTM", "LayerNormGRU"]

# The backends that run each cell, fastest first, and the kernel module
# (fastrnn._backends.kernels(backend, module)) that holds its kernels.
NORM_BACKENDS = {"layernorm_lstm": ("cython", "numba", "numpy"),
                 "layernorm_gru": ("cython", "numba", "numpy")}
_MODULE = {("cython", "layernorm_lstm"): "lstm", ("numba", "layernorm_lstm"): "layernorm",
           ("cython", "layernorm_gru"): "gru", ("numba", "layernorm_gru"): "layernorm"}
# Rows (steps x batch) of one chunk: the input products of a chunk are one
# GEMM; an inference keeps a chunk's worth of the per-step arrays, and
# Ctrl-C lands between chunks.
CHUNK_ROWS = 512


def _backend(cell, backend):
    """The backend a call of ``cell`` runs on: the named one, or the fastest
    that works here."""
    if backend is not None:
        _backends._check_name(backend)
        if backend not in NORM_BACKENDS[cell]:
            raise ValueError(f"{cell} runs on backend {' or '.join(map(repr, NORM_BACKENDS[cell]))}"
                             f" (its {backend} kernels are not built yet), got backend={backend!r}")
        if backend != "numpy":
            _backends.kernels(backend, _MODULE[backend, cell])  # BackendUnavailableError, why
        return backend
    for name in NORM_BACKENDS[cell]:
        try:
            if name != "numpy":
                _backends.kernels(name, _MODULE[name, cell])
            return name
        except _backends.BackendUnavailableError:
            continue
    return "numpy"


def _kernels(cell, backend):
    return _backends.kernels(backend, _MODULE[backend, cell])


def _prepared(p):
    """The checked call's arrays as the kernels take them: C-contiguous,
    x as (T*B, I), the states as fresh arrays (zeros for None), lengths
    (B,) int64 (T for None), every LayerNorm parameter filled."""
    T, B, H, dtype = p.T, p.B, p.H, p.dtype
    x2d = np.ascontiguousarray(p.x).reshape(T * B, p.I)
    states = [np.zeros((B, H), dtype) if s is None else np.array(s, order="C")
              for s in p.states]
    lengths = np.full(B, T, np.int64) if p.lengths is None else p.lengths
    params = [np.ascontiguousarray(v) for v in filled_params(p)]
    return (x2d, np.ascontiguousarray(p.W_ih), np.ascontiguousarray(p.W_hh), states,
            lengths, params)


_local = threading.local()
_WORKSPACE_KEPT = 8 << 20  # bytes: a larger workspace is not kept between calls


def _workspace(shape, dtype):
    """An array of ``shape`` for a backward's own use (the kernels write all
    of it before reading it), kept per thread for the next call of the same
    size, up to _WORKSPACE_KEPT bytes: fresh pages for it cost a (1, 64)
    training call a tenth of its time in page faults."""
    key = (shape, np.dtype(dtype))
    if np.prod(shape) * key[1].itemsize > _WORKSPACE_KEPT:
        return np.empty(shape, dtype)  # large: its faults are a small share, and not kept
    if getattr(_local, "key", None) != key:
        _local.key, _local.array = key, np.empty(shape, dtype)
    return _local.array


def _chunk(T, B):
    return max(1, min(T, CHUNK_ROWS // max(B, 1)))


def _cache(p, backend, states0, params, saved):
    spec = NORM_CELLS[p.cell]
    return NormCache(p.cell, backend, lengths=p.lengths, eps=p.eps, given=given_params(p),
                     arrays=dict(x=np.array(p.x, order="C"), **dict(zip(spec.initial, states0)),
                                 W_ih=np.array(p.W_ih, order="C"),
                                 W_hh=np.array(p.W_hh, order="C"),
                                 **{n: np.array(v) for n, v in zip(spec.params, params)},
                                 **saved))


def layernorm_lstm_forward(x, h0, c0, W_ih, W_hh, gamma_i=None, beta_i=None, gamma_h=None,
                           beta_h=None, gamma_c=None, beta_c=None, *, eps=1e-5, lengths=None,
                           training=True, backend=None):
    """Run a LayerNorm LSTM over a batch of sequences.

    ``[i, f, g, o] = LN_i(x_t W_ih^T) + LN_h(h_{t-1} W_hh^T)`` (each LayerNorm
    over the 4H gate columns of a row), ``i, f, o = sigmoid(.)``,
    ``g = tanh(.)``, ``c_t = LN_c(f * c_{t-1} + i * g)`` (over H),
    ``h_t = o * tanh(c_t)``, where ``LN(a) = (a - mean) / sqrt(var + eps) *
    gamma + beta`` over the row (the biased variance, as torch.nn.LayerNorm).

    Parameters
    ----------
    x : ndarray, shape (T, B, I), float32 or float64
    h0, c0 : ndarray, shape (B, H), or None (zeros)
    W_ih : ndarray, shape (4*H, I); W_hh : ndarray, shape (4*H, H)
        Gate blocks i, f, g, o, as PyTorch stacks them; no product biases
        (the LayerNorms' betas are the biases).
    gamma_i, beta_i, gamma_h, beta_h : ndarray, shape (4*H,), or None
        The gain and bias of the input product's and of the recurrent
        product's LayerNorm (PyTorch's ``layernorm_i``, ``layernorm_h``).
        None: none learned (gain 1, bias 0), and a None gradient.
    gamma_c, beta_c : ndarray, shape (H,), or None
        Those of the cell state's LayerNorm (``layernorm_c``).
    eps : float
        Added to the variance (1e-5, torch.nn.LayerNorm's default).
    lengths, training
        As in :func:`fastrnn.lstm_forward`: past its length a sequence's
        states are frozen and its outputs zero.
    backend : {"cython", "numba", "numpy"} or None
        None: the fastest of these that works here.

    Returns
    -------
    out : ndarray (T, B, H); h_n, c_n : ndarray (B, H); cache : NormCache or None

    Raises
    ------
    TypeError, ValueError
        As :func:`fastrnn.lstm_forward` does, naming the argument; also for
        an eps that is not a positive finite number, and backend="cython".
    """
    args = (x, (h0, c0), W_ih, W_hh, (gamma_i, beta_i, gamma_h, beta_h, gamma_c, beta_c),
            lengths, eps, training)
    backend = _backend("layernorm_lstm", backend)
    if backend == "numpy":
        return reference.layernorm_lstm_forward(
            x, h0, c0, W_ih, W_hh, gamma_i, beta_i, gamma_h, beta_h, gamma_c, beta_c, eps=eps,
            lengths=lengths, training=training)
    p = check_norm_forward("layernorm_lstm", *args)
    k = _kernels("layernorm_lstm", backend)
    x2d, Wi, Wh, (h, c), lens, params = _prepared(p)
    T, B, H, dtype = p.T, p.B, p.H, p.dtype
    h0_, c0_ = h.copy(), c.copy()
    chunk = _chunk(T, B)
    # Rows of steps kept: all T in training; in inference a chunk's input
    # products, and (Cython) one step of the rest (the fewer fresh pages, the
    # faster a short call).  Empty: the kernels write every row of a step
    # they run, and an inference's rows past its last step are never read.
    iring = T if training else chunk
    ring = T if training else (1 if backend == "cython" else chunk)
    out = np.empty((T, B, H), dtype)
    i_hat, rstd_i = np.empty((iring, B, 4 * H), dtype), np.empty((iring, B), dtype)
    gates, h_hat = np.empty((ring, B, 4 * H), dtype), np.empty((ring, B, 4 * H), dtype)
    cs, c_hat = np.empty((ring, B, H), dtype), np.empty((ring, B, H), dtype)
    rstd_h, rstd_c = np.empty((ring, B), dtype), np.empty((ring, B), dtype)
    if backend == "cython":
        threads = _tuning.engine_threads("cython", B, p.I, H, 4 * H, get_num_threads())
        k.layernorm_forward(x2d, Wi, Wh, *params, lens, p.eps, threads, h, c, out,
                            gates, cs, i_hat, rstd_i, h_hat, rstd_h, c_hat, rstd_c)
    elif B:
        for t0 in range(0, T, chunk):
            k.lstm_forward_steps(x2d, Wi, Wh, *params, lens, p.eps, t0, min(T, t0 + chunk),
                                 h, c, out, gates, cs, i_hat, rstd_i, h_hat, rstd_h, c_hat,
                                 rstd_c)
    cache = None
    if training:
        cache = _cache(p, backend, (h0_, c0_), params, dict(
            out=out, gates=gates, c=cs, i_hat=i_hat, rstd_i=rstd_i, h_hat=h_hat, rstd_h=rstd_h,
            c_hat=c_hat, rstd_c=rstd_c))
        out = cache.read_only_out()
    return out, h, c, cache


def _backward_setup(cell, cache, upstream):
    upstream = check_norm_backward(cell, cache, upstream)
    A = cache.arrays
    T, B, H = A["out"].shape
    dtype = A["x"].dtype
    d_out = (np.zeros((T, B, H), dtype) if upstream[0] is None
             else np.ascontiguousarray(upstream[0]))
    carried = [np.zeros((B, H), dtype) if u is None else np.array(u, order="C")
               for u in upstream[1:]]
    lengths = np.full(B, T, np.int64) if cache.lengths is None else cache.lengths
    return A, T, B, H, dtype, d_out, carried, lengths


def layernorm_lstm_backward(d_out, d_h_n, d_c_n, cache):
    """Backpropagate through time through the LayerNorm LSTM forward that
    made ``cache`` (on that forward's backend).

    ``d_out`` (T, B, H), ``d_h_n``, ``d_c_n`` (B, H): dL/d of each output, or
    None (zeros).  Returns a :class:`LayerNormLSTMGrads` ``(dx, dh0, dc0,
    dW_ih, dW_hh, dgamma_i, dbeta_i, dgamma_h, dbeta_h, dgamma_c,
    dbeta_c)``; a LayerNorm parameter that was None has gradient None.  The
    equations are in :func:`fastrnn.reference.layernorm_lstm_backward`.
    """
    if isinstance(cache, NormCache) and cache.backend == "numpy":
        return reference.layernorm_lstm_backward(d_out, d_h_n, d_c_n, cache)
    A, T, B, H, dtype, d_out, (dh, dc), lengths = _backward_setup(
        "layernorm_lstm", cache, (d_out, d_h_n, d_c_n))
    k = _kernels("layernorm_lstm", cache.backend)
    I = A["x"].shape[2]  # noqa: E741
    da, dah = _workspace((2, T, B, 4 * H), dtype)
    dgamma_h, dbeta_h = np.zeros(4 * H, dtype), np.zeros(4 * H, dtype)
    dgamma_c, dbeta_c = np.zeros(H, dtype), np.zeros(H, dtype)
    dgamma_i, dbeta_i = np.zeros(4 * H, dtype), np.zeros(4 * H, dtype)
    dx2d = np.empty((T * B, I), dtype)  # written whole (empty when T or B is 0)
    dW_ih, dW_hh = np.zeros_like(A["W_ih"]), np.zeros_like(A["W_hh"])
    if cache.backend == "cython":
        k.layernorm_backward(A["x"].reshape(T * B, I), A["W_ih"], A["W_hh"], A["gamma_i"],
                             A["gamma_h"], A["gamma_c"], A["h0"], A["c0"], A["out"], A["c"],
                             A["gates"], A["i_hat"], A["rstd_i"], A["h_hat"], A["rstd_h"],
                             A["c_hat"], A["rstd_c"], d_out, lengths,
                             _tuning.engine_threads("cython", B, I, H, 4 * H, get_num_threads()),
                             da, dah,
                             dx2d, dh, dc, dW_ih, dW_hh, dgamma_i, dbeta_i, dgamma_h, dbeta_h,
                             dgamma_c, dbeta_c)
    elif T and B:
        work, dp = np.zeros((B, H), dtype), np.zeros(H, dtype)
        chunk = _chunk(T, B)
        for t1 in range(T, 0, -chunk):
            k.lstm_backward_steps(A["W_hh"], A["gamma_h"], A["gamma_c"], A["c0"], A["out"],
                                  A["c"], A["gates"], A["h_hat"], A["rstd_h"], A["c_hat"],
                                  A["rstd_c"], d_out, lengths, max(0, t1 - chunk), t1, dh, dc,
                                  da, dah, work, dp, dgamma_h, dbeta_h, dgamma_c, dbeta_c)
        k.after_the_loop(A["x"].reshape(T * B, I), A["W_ih"], A["h0"], A["out"], A["gamma_i"],
                         A["i_hat"], A["rstd_i"], da, dah, dx2d, dW_ih, dW_hh, dgamma_i,
                         dbeta_i)
    return make_norm_grads(cache, (dx2d.reshape(T, B, I), dh, dc, dW_ih, dW_hh),
                           (dgamma_i, dbeta_i, dgamma_h, dbeta_h, dgamma_c, dbeta_c))


def layernorm_gru_forward(x, h0, W_ih, W_hh, gamma_i=None, beta_i=None, gamma_h=None,
                          beta_h=None, *, eps=1e-5, lengths=None, training=True, backend=None):
    """Run a LayerNorm GRU over a batch of sequences.

    ``[xr, xz, xn] = LN_i(x_t W_ih^T)``, ``[hr, hz, hn] = LN_h(h_{t-1} W_hh^T)``
    (each over the 3H gate columns of a row), ``r = sigmoid(xr + hr)``,
    ``z = sigmoid(xz + hz)``, ``n = tanh(xn + r * hn)``,
    ``h_t = (1 - z) * n + z * h_{t-1}``: PyTorch's GRU with each product
    layer-normalised (beta_h's n block sits inside the reset product, where
    PyTorch's GRU has b_hn).

    Parameters are those of :func:`layernorm_lstm_forward` less c0 and the
    cell state's LayerNorm, with 3*H gate rows (blocks r, z, n).

    Returns
    -------
    out : ndarray (T, B, H); h_n : ndarray (B, H); cache : NormCache or None
    """
    args = (x, (h0,), W_ih, W_hh, (gamma_i, beta_i, gamma_h, beta_h), lengths, eps, training)
    backend = _backend("layernorm_gru", backend)
    if backend == "numpy":
        return reference.layernorm_gru_forward(x, h0, W_ih, W_hh, gamma_i, beta_i, gamma_h,
                                               beta_h, eps=eps, lengths=lengths,
                                               training=training)
    p = check_norm_forward("layernorm_gru", *args)
    k = _kernels("layernorm_gru", backend)
    x2d, Wi, Wh, (h,), lens, params = _prepared(p)
    T, B, H, dtype = p.T, p.B, p.H, p.dtype
    h0_ = h.copy()
    chunk = _chunk(T, B)
    iring = T if training else chunk  # as in layernorm_lstm_forward
    ring = T if training else (1 if backend == "cython" else chunk)
    out = np.empty((T, B, H), dtype)
    i_hat, rstd_i = np.empty((iring, B, 3 * H), dtype), np.empty((iring, B), dtype)
    gates, h_hat = np.empty((ring, B, 3 * H), dtype), np.empty((ring, B, 3 * H), dtype)
    hn, rstd_h = np.empty((ring, B, H), dtype), np.empty((ring, B), dtype)
    if backend == "cython":
        threads = _tuning.engine_threads("cython", B, p.I, H, 3 * H, get_num_threads())
        k.layernorm_forward(x2d, Wi, Wh, *params, lens, p.eps, threads, h, out, gates, hn,
                            i_hat, rstd_i, h_hat, rstd_h)
    elif B:
        for t0 in range(0, T, chunk):
            k.gru_forward_steps(x2d, Wi, Wh, *params, lens, p.eps, t0, min(T, t0 + chunk), h,
                                out, gates, hn, i_hat, rstd_i, h_hat, rstd_h)
    cache = None
    if training:
        cache = _cache(p, backend, (h0_,), params, dict(out=out, gates=gates, hn=hn, i_hat=i_hat,
                                               rstd_i=rstd_i, h_hat=h_hat, rstd_h=rstd_h))
        out = cache.read_only_out()
    return out, h, cache


def layernorm_gru_backward(d_out, d_h_n, cache):
    """Backpropagate through time through the LayerNorm GRU forward that
    made ``cache``.  Returns a :class:`LayerNormGRUGrads` ``(dx, dh0, dW_ih,
    dW_hh, dgamma_i, dbeta_i, dgamma_h, dbeta_h)``; the equations are in
    :func:`fastrnn.reference.layernorm_gru_backward`."""
    if isinstance(cache, NormCache) and cache.backend == "numpy":
        return reference.layernorm_gru_backward(d_out, d_h_n, cache)
    A, T, B, H, dtype, d_out, (dh,), lengths = _backward_setup(
        "layernorm_gru", cache, (d_out, d_h_n))
    k = _kernels("layernorm_gru", cache.backend)
    I = A["x"].shape[2]  # noqa: E741
    da, dah = _workspace((2, T, B, 3 * H), dtype)
    dgamma_h, dbeta_h = np.zeros(3 * H, dtype), np.zeros(3 * H, dtype)
    dgamma_i, dbeta_i = np.zeros(3 * H, dtype), np.zeros(3 * H, dtype)
    dx2d = np.empty((T * B, I), dtype)  # written whole (empty when T or B is 0)
    dW_ih, dW_hh = np.zeros_like(A["W_ih"]), np.zeros_like(A["W_hh"])
    if cache.backend == "cython":
        k.layernorm_backward(A["x"].reshape(T * B, I), A["W_ih"], A["W_hh"], A["gamma_i"],
                             A["gamma_h"], A["h0"], A["out"], A["gates"], A["hn"], A["i_hat"],
                             A["rstd_i"], A["h_hat"], A["rstd_h"], d_out, lengths,
                             _tuning.engine_threads("cython", B, I, H, 3 * H, get_num_threads()),
                             da, dah, dx2d, dh, dW_ih, dW_hh, dgamma_i, dbeta_i, dgamma_h,
                             dbeta_h)
    elif T and B:
        work = np.zeros((B, H), dtype)
        chunk = _chunk(T, B)
        for t1 in range(T, 0, -chunk):
            k.gru_backward_steps(A["W_hh"], A["gamma_h"], A["h0"], A["out"], A["gates"],
                                 A["hn"], A["h_hat"], A["rstd_h"], d_out, lengths,
                                 max(0, t1 - chunk), t1, dh, da, dah, work, dgamma_h, dbeta_h)
        k.after_the_loop(A["x"].reshape(T * B, I), A["W_ih"], A["h0"], A["out"], A["gamma_i"],
                         A["i_hat"], A["rstd_i"], da, dah, dx2d, dW_ih, dW_hh, dgamma_i,
                         dbeta_i)
    return make_norm_grads(cache, (dx2d.reshape(T, B, I), dh, dW_ih, dW_hh),
                           (dgamma_i, dbeta_i, dgamma_h, dbeta_h))


# --- layers ------------------------------------------------------------------------


class _NormDirection(DirectionCell):
    """A layer-normalised cell as the layers (fastrnn.layers) run it: one
    direction is one call of ``{cell}_forward``."""

    options = ("eps",)

    def __init__(self, cell):
        spec = NORM_CELLS[cell]
        self.cell, self.spec, self.G = cell, spec, spec.G
        self.states, self.initial, self.inputs = spec.states, spec.initial, spec.inputs
        self.upstream = ("d_out",) + tuple(f"d_{s}_n" for s in spec.states)

    def check_options(self, options):
        unknown = sorted(set(options) - {"eps"})
        if unknown:
            raise TypeError(f"unexpected options {unknown}: a {self.spec.title} layer takes eps")
        return {"eps": check_eps(options.get("eps", 1e-5))}

    def weight_shape(self, name, I, H, bias):  # noqa: E741
        GH = self.G * H
        if name in ("W_ih", "W_hh"):
            return (GH, I if name == "W_ih" else H)
        return (GH,) if self.spec.norms[name.split("_", 1)[1]] == "GH" else (H,)

    def init(self, name):
        # torch.nn.LayerNorm's: gain 1, bias 0
        return {"gamma": "ones", "beta": "zeros"}.get(name.split("_", 1)[0], "uniform")

    def forward(self, x, states, weights, lengths, options, training, backend):
        forward = globals()[f"{self.cell}_forward"]
        out, *finals, cache = forward(x, *states, *weights, eps=options["eps"], lengths=lengths,
                                      training=training, backend=backend)
        return out, tuple(finals), cache

    def backward(self, d_out, d_finals, cache):
        return globals()[f"{self.cell}_backward"](d_out, *d_finals, cache)


class _LayerNormLayers(_Recurrent):
    """Layers of a layer-normalised cell, as fastrnn.LSTM's of the LSTM:
    ``num_layers``, ``bidirectional``, ``dropout`` between layers,
    ``batch_first``, lengths, state dicts and ``.npz`` files,
    ``forward(x, hx=None, lengths=None)`` and ``backward(d_output, ...)`` with
    the gradients in ``.grads``.  Parameters per layer and direction:
    ``weight_ih_l0``, ``weight_hh_l0`` (uniform(-1/sqrt(H), 1/sqrt(H)), as
    PyTorch's) and each LayerNorm's gain and bias ``gamma_i_l0``,
    ``beta_i_l0``, ... (1 and 0, as torch.nn.LayerNorm's); the products have
    no biases (the betas are)."""

    _CONFIG = ("input_size", "hidden_size", "num_layers", "batch_first", "dropout",
               "bidirectional", "dtype", "compute_dtype")

    def __init__(self, input_size, hidden_size, num_layers=1, batch_first=False, dropout=0.0,
                 bidirectional=False, *, eps=1e-5, dtype=np.float32, backend=None, seed=None,
                 compute_dtype=None):
        super().__init__(input_size, hidden_size, num_layers, True, batch_first, dropout,
                         bidirectional, options={"eps": eps}, dtype=dtype, backend=backend,
                         seed=seed, compute_dtype=compute_dtype)


class LayerNormLSTM(_LayerNormLayers):
    """Layers of the LayerNorm LSTM (``layernorm_lstm_forward``); see
    ``_LayerNormLayers``.  ``forward`` returns ``output, (h_n, c_n)``."""

    _cell = _NormDirection("layernorm_lstm")


class LayerNormGRU(_LayerNormLayers):
    """Layers of the LayerNorm GRU (``layernorm_gru_forward``); see
    ``_LayerNormLayers``.  ``forward`` returns ``output, h_n``."""

    _cell = _NormDirection("layernorm_gru")
