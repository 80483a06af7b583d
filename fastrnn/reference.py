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

The gated cells follow PyTorch's equations and gate order (weights stacked
by gate, two bias vectors):

    LSTM  [i, f, g, o] = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh   (B, 4H), split in 4
          i, f, o = sigmoid(.), g = tanh(.)
          c_t = f * c_{t-1} + i * g,   h_t = o * tanh(c_t)
          with peepholes W_ch = [p_i, p_f, p_o] (3H,) (ONNX's P), the gates also
          see the cell state: i = sigmoid(. + p_i * c_{t-1}), f likewise,
          o = sigmoid(. + p_o * c_t)
          with a projection W_hr (P, H) (PyTorch's proj_size), h has P columns:
          h_t = (o * tanh(c_t)) W_hr^T, and W_hh is (4H, P)
    GRU   [xr, xz, xn] = x_t W_ih^T + b_ih,  [hr, hz, hn] = h_{t-1} W_hh^T + b_hh
          r = sigmoid(xr + hr), z = sigmoid(xz + hz), n = tanh(xn + r * hn)
          h_t = (1 - z) * n + z * h_{t-1}
          with reset_after=False (Keras's reset_after=False, ONNX's
          linear_before_reset=0) the reset comes before the n block's product:
          n = tanh(xn + (r * h_{t-1}) W_hn^T + b_hn)

bfloat16 compute (``compute_dtype="bfloat16"``, float32 arrays): every
product reads its operands rounded to bfloat16 (round to nearest even:
``round_bf16``), x_t, h_{t-1} and the weights, and accumulates in float32;
the bias, the gates, c and every result stay float32.  Its backward rounds
the same way for its products (da_t W_hh, da_t W_ih, da_t^T x_t,
da_t^T h_{t-1}: da_t, x_t, h_{t-1} and the weights rounded) and sums the
bias gradients from da_t as it is.  The kernels round at exactly these
places.

int8 compute (``compute_dtype="int8"``, float32 arrays, inference only):
every product of the forward is ``fastrnn.quantization.int8_matmul`` (the
weights quantized per row, x_t and h_{t-1} per row at each product, exact
integer sums rescaled to float32); the kernels' integer sums and rescaled
products are these, bit for bit.

The fast backends have the same signatures: ``from fastrnn import rnn_forward``
replaces ``from fastrnn.reference import rnn_forward``.
"""
import numpy as np

from ._layernorm import (NORM_CELLS, NormCache, check_norm_backward, check_norm_forward,
                         filled_params, given_params, make_norm_grads)
from ._types import ForwardCache, make_grads
from ._validation import check_backward, check_forward_compute
from .quantization import int8_matmul

__all__ = [
    "rnn_forward", "rnn_backward", "lstm_forward", "lstm_backward", "gru_forward",
    "gru_backward", "layernorm_lstm_forward", "layernorm_lstm_backward",
    "layernorm_gru_forward", "layernorm_gru_backward", "layer_norm", "layer_norm_backward",
    "sigmoid", "round_bf16",
]


def round_bf16(a):
    """float32 values rounded to the nearest bfloat16 (ties to even), as float32.

    bfloat16 is float32's top 16 bits: add half of the dropped part (less
    one, plus the kept part's lowest bit: ties go to the even neighbour) and
    clear it.  Overflow rounds to inf; NaN stays NaN.
    """
    a = np.asarray(a, np.float32)
    bits = a.view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) & np.uint32(0xFFFF0000)
    rounded = np.where(np.isnan(a), bits | np.uint32(0x00400000), rounded)
    return rounded.astype(np.uint32).view(np.float32).reshape(a.shape)


def _same(a):
    return a


def _operands(bf16):
    """What a product does to its operands: round them to bfloat16, or nothing."""
    return round_bf16 if bf16 else _same


def _forward_products(compute, W_ih, W_hh):
    """The forward's weights as its products read them, and the product
    ``mm(a, W) = a @ W.T`` in the compute's precision: bf16 operands, int8
    (W a QuantizedWeight: fastrnn.quantization.int8_matmul), or as they are."""
    if compute == "int8":
        return W_ih, W_hh, int8_matmul
    op = _operands(compute == "bfloat16")
    return op(W_ih), op(W_hh), lambda a, W: op(a) @ W.T


def sigmoid(x):
    """1 / (1 + exp(-x)) without overflow for large |x|: scipy.special.expit,
    imported on first use (importing scipy.special with fastrnn took 0.36 s,
    more than doubling ``import fastrnn``)."""
    from scipy.special import expit

    return expit(x)


def _zeros_if_none(arr, shape, dtype):
    return np.zeros(shape, dtype) if arr is None else arr


def _own(arr):
    """The cache's own C-contiguous copy."""
    return np.array(arr, order="C")


def rnn_forward(x, h0, W_ih, W_hh, b_ih=None, b_hh=None, *, nonlinearity="tanh",
                lengths=None, training=True, compute_dtype=None):
    """Elman RNN over a sequence: the reference for ``fastrnn.rnn_forward``.

    Same parameters and results as :func:`fastrnn.rnn_forward`, without ``backend``.
    """
    p, compute = check_forward_compute("rnn", x, (h0,), W_ih, W_hh, b_ih, b_hh, lengths,
                                       {"nonlinearity": nonlinearity}, compute_dtype,
                                       training=training)
    relu = nonlinearity == "relu"
    T, B, H, dtype = p.T, p.B, p.H, p.dtype
    x, W_ih, W_hh, lengths = p.x, p.W_ih, p.W_hh, p.lengths
    b = _zeros_if_none(p.b_ih, H, dtype) + _zeros_if_none(p.b_hh, H, dtype)
    Wi, Wh, mm = _forward_products(compute, W_ih, W_hh)  # mm(a, W) = a @ W.T

    h = _zeros_if_none(p.states[0], (B, H), dtype).copy()
    h0 = h.copy()
    out = np.zeros((T, B, H), dtype)
    for t in range(T):
        a = mm(x[t], Wi) + mm(h, Wh) + b
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
            "rnn", "numpy", lengths=lengths, has_b_ih=p.b_ih is not None,
            has_b_hh=p.b_hh is not None, options={"nonlinearity": nonlinearity},
            compute=compute,
            arrays=dict(x=_own(x), h0=h0, W_ih=_own(W_ih), W_hh=_own(W_hh), out=out))
        out = cache.read_only_out()
    return out, h, cache


def rnn_backward(d_out, d_h_n, cache):
    """BPTT through an Elman RNN: the reference for ``fastrnn.rnn_backward``."""
    d_out, d_h_n = check_backward("rnn", cache, (d_out, d_h_n))
    x, h0, W_ih, W_hh, out, lengths = (cache.x, cache.h0, cache.W_ih, cache.W_hh,
                                       cache.out, cache.lengths)
    relu = cache.nonlinearity == "relu"
    T, B, H = out.shape
    dtype = x.dtype
    d_out = _zeros_if_none(d_out, (T, B, H), dtype)
    op = _operands(cache.compute is not None)  # the products' operands
    Wi, Wh = op(W_ih), op(W_hh)

    dx = np.zeros_like(x)
    dW_ih = np.zeros_like(W_ih)
    dW_hh = np.zeros_like(W_hh)
    db = np.zeros(H, dtype)
    dh = _zeros_if_none(d_h_n, (B, H), dtype).copy()  # dL/dh_t, carried backwards
    for t in reversed(range(T)):
        h = out[t]
        h_prev = out[t - 1] if t > 0 else h0
        dh_total = dh + d_out[t]
        da = dh_total * ((h > 0) if relu else (1 - h * h))
        if lengths is not None:
            running = (t < lengths)[:, None]
            da = np.where(running, da, 0)
        da_op = op(da)  # the products' da; the bias sums read da as it is
        dW_ih += da_op.T @ op(x[t])
        dW_hh += da_op.T @ op(h_prev)
        db += da.sum(axis=0)
        dx[t] = da_op @ Wi
        dh_prev = da_op @ Wh
        dh = dh_prev if lengths is None else np.where(running, dh_prev, dh)

    return make_grads(cache, dx, dh, dW_ih, dW_hh, db_ih=db, db_hh=db)  # dh is now dL/dh0


def _running(t, lengths, B):
    """(B, 1) mask of the sequences still running at step t."""
    return np.ones((B, 1), bool) if lengths is None else (t < lengths)[:, None]


def lstm_forward(x, h0, c0, W_ih, W_hh, b_ih=None, b_hh=None, *, W_ch=None, W_hr=None,
                 lengths=None, training=True, compute_dtype=None):
    """LSTM over a sequence: the reference for ``fastrnn.lstm_forward``.

    Returns ``out (T, B, P), h_n (B, P), c_n (B, H), cache`` (P = H without W_hr).
    """
    p, compute = check_forward_compute("lstm", x, (h0, c0), W_ih, W_hh, b_ih, b_hh, lengths,
                                       {}, compute_dtype, (W_ch, W_hr), training=training)
    T, B, H, P, dtype = p.T, p.B, p.H, p.P, p.dtype
    W_ch, W_hr = p.extras
    p_i, p_f, p_o = np.split(_zeros_if_none(W_ch, 3 * H, dtype), 3)  # peepholes
    x, W_ih, W_hh, lengths = p.x, p.W_ih, p.W_hh, p.lengths
    b = _zeros_if_none(p.b_ih, 4 * H, dtype) + _zeros_if_none(p.b_hh, 4 * H, dtype)
    Wi, Wh, mm = _forward_products(compute, W_ih, W_hh)  # mm(a, W) = a @ W.T

    h = _zeros_if_none(p.states[0], (B, P), dtype).copy()
    c = _zeros_if_none(p.states[1], (B, H), dtype).copy()
    h0, c0 = h.copy(), c.copy()
    out = np.zeros((T, B, P), dtype)
    gates = np.zeros((T, B, 4 * H), dtype)  # i, f, g, o after their activations
    cs = np.zeros((T, B, H), dtype)  # c_t
    for t in range(T):
        a = mm(x[t], Wi) + mm(h, Wh) + b
        i, f = sigmoid(a[:, :H] + p_i * c), sigmoid(a[:, H:2 * H] + p_f * c)
        g = np.tanh(a[:, 2 * H:3 * H])
        c_new = f * c + i * g
        o = sigmoid(a[:, 3 * H:] + p_o * c_new)
        h_new = o * np.tanh(c_new)
        if W_hr is not None:
            h_new = h_new @ W_hr.T
        running = _running(t, lengths, B)
        h, c = np.where(running, h_new, h), np.where(running, c_new, c)
        out[t] = np.where(running, h_new, 0)
        gates[t] = np.concatenate([i, f, g, o], axis=1)
        cs[t] = c

    cache = None
    if training:
        cache = ForwardCache(
            "lstm", "numpy", lengths=lengths, has_b_ih=p.b_ih is not None,
            has_b_hh=p.b_hh is not None, options={}, compute=compute,
            arrays=dict(x=_own(x), h0=h0, c0=c0, W_ih=_own(W_ih), W_hh=_own(W_hh), out=out,
                        gates=gates, c=cs, **({} if W_ch is None else {"W_ch": _own(W_ch)}),
                        **({} if W_hr is None else {"W_hr": _own(W_hr)})))
        out = cache.read_only_out()
    return out, h, c, cache


def lstm_backward(d_out, d_h_n, d_c_n, cache):
    """BPTT through an LSTM: the reference for ``fastrnn.lstm_backward``.

    Carries dL/dh and dL/dc backwards; per step, with dh = dL/dh_t + d_out_t:

        do = dh * tanh(c_t)               dc = dL/dc_t + dh * o * (1 - tanh(c_t)^2)
        di = dc * g,  df = dc * c_{t-1},  dg = dc * i,   dL/dc_{t-1} = dc * f
        da = [di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)],   dL/dh_{t-1} = da W_hh

    With peepholes, c_t also reaches o and c_{t-1} reaches i and f:
    dc += da_o p_o before di, df, dg are formed, dL/dc_{t-1} += da_i p_i +
    da_f p_f, and dW_ch = sum over steps and rows of [da_i c_{t-1}, da_f
    c_{t-1}, da_o c_t].

    With a projection, h_t = m_t W_hr^T (m_t = o * tanh(c_t)): dh (width P)
    first becomes dm = dh W_hr, which takes dh's place above, and
    dW_hr = sum over steps of dh^T m_t.
    """
    d_out, d_h_n, d_c_n = check_backward("lstm", cache, (d_out, d_h_n, d_c_n))
    x, W_ih, W_hh, out, lengths = cache.x, cache.W_ih, cache.W_hh, cache.out, cache.lengths
    T, B, P = out.shape
    H = W_hh.shape[0] // 4
    dtype = x.dtype
    d_out = _zeros_if_none(d_out, (T, B, P), dtype)
    op = _operands(cache.compute is not None)
    Wi, Wh = op(W_ih), op(W_hh)
    W_ch, W_hr = cache.arrays.get("W_ch"), cache.arrays.get("W_hr")
    p_i, p_f, p_o = np.split(_zeros_if_none(W_ch, 3 * H, dtype), 3)

    dx = np.zeros_like(x)
    dW_ih = np.zeros_like(W_ih)
    dW_hh = np.zeros_like(W_hh)
    db = np.zeros(4 * H, dtype)
    dW_ch = np.zeros(3 * H, dtype)
    dW_hr = None if W_hr is None else np.zeros_like(W_hr)
    dh = _zeros_if_none(d_h_n, (B, P), dtype).copy()
    dc = _zeros_if_none(d_c_n, (B, H), dtype).copy()
    for t in reversed(range(T)):
        i, f, g, o = np.split(cache.gates[t], 4, axis=1)
        c = cache.c[t]
        h_prev, c_prev = (out[t - 1], cache.c[t - 1]) if t > 0 else (cache.h0, cache.c0)
        dh_total = dh + d_out[t]
        tc = np.tanh(c)
        running = _running(t, lengths, B)
        if W_hr is not None:  # h_t = m_t W_hr^T
            dW_hr += np.where(running, dh_total, 0).T @ (o * tc)
            dh_total = dh_total @ W_hr
        da_o = dh_total * tc * o * (1 - o)
        dc_total = dc + dh_total * o * (1 - tc * tc) + da_o * p_o
        da_i, da_f = dc_total * g * i * (1 - i), dc_total * c_prev * f * (1 - f)
        da = np.concatenate([da_i, da_f, dc_total * i * (1 - g * g), da_o], axis=1)
        da = np.where(running, da, 0)
        dW_ch += np.concatenate([(da[:, :H] * c_prev).sum(axis=0),
                                 (da[:, H:2 * H] * c_prev).sum(axis=0),
                                 (da[:, 3 * H:] * c).sum(axis=0)])
        da_op = op(da)  # the products' da; the bias sums read da as it is
        dW_ih += da_op.T @ op(x[t])
        dW_hh += da_op.T @ op(h_prev)
        db += da.sum(axis=0)
        dx[t] = da_op @ Wi
        dh = np.where(running, da_op @ Wh, dh)
        dc = np.where(running, dc_total * f + da_i * p_i + da_f * p_f, dc)

    return make_grads(cache, dx, dh, dc, dW_ih, dW_hh, db_ih=db, db_hh=db,
                      extras=(dW_ch, dW_hr))


def gru_forward(x, h0, W_ih, W_hh, b_ih=None, b_hh=None, *, reset_after=True, lengths=None,
                training=True, compute_dtype=None):
    """GRU over a sequence: the reference for ``fastrnn.gru_forward``.

    Returns ``out (T, B, H), h_n (B, H), cache``.
    """
    p, compute = check_forward_compute("gru", x, (h0,), W_ih, W_hh, b_ih, b_hh, lengths,
                                       {"reset_after": reset_after}, compute_dtype,
                                       training=training)
    reset_after = p.options["reset_after"]
    T, B, H, dtype = p.T, p.B, p.H, p.dtype
    x, W_ih, W_hh, lengths = p.x, p.W_ih, p.W_hh, p.lengths
    b_ih = _zeros_if_none(p.b_ih, 3 * H, dtype)
    b_hh = _zeros_if_none(p.b_hh, 3 * H, dtype)
    Wi, Wh, mm = _forward_products(compute, W_ih, W_hh)  # mm(a, W) = a @ W.T

    h = _zeros_if_none(p.states[0], (B, H), dtype).copy()
    h0 = h.copy()
    out = np.zeros((T, B, H), dtype)
    gates = np.zeros((T, B, 3 * H), dtype)  # r, z, n after their activations
    hns = np.zeros((T, B, H), dtype)  # h_{t-1} W_hn^T + b_hn, or r * h_{t-1} (reset before)
    for t in range(T):
        xr, xz, xn = np.split(mm(x[t], Wi) + b_ih, 3, axis=1)
        if reset_after:
            hr, hz, hn = np.split(mm(h, Wh) + b_hh, 3, axis=1)
            r, z = sigmoid(xr + hr), sigmoid(xz + hz)
            n = np.tanh(xn + r * hn)
        else:
            hr, hz = np.split(mm(h, Wh[:2 * H]) + b_hh[:2 * H], 2, axis=1)
            r, z = sigmoid(xr + hr), sigmoid(xz + hz)
            hn = r * h  # saved for the backward: what W_hn multiplies
            n = np.tanh(xn + mm(hn, Wh[2 * H:]) + b_hh[2 * H:])
        h_new = (1 - z) * n + z * h
        running = _running(t, lengths, B)
        h = np.where(running, h_new, h)
        out[t] = np.where(running, h_new, 0)
        gates[t] = np.concatenate([r, z, n], axis=1)
        hns[t] = hn

    cache = None
    if training:
        cache = ForwardCache(
            "gru", "numpy", lengths=lengths, has_b_ih=p.b_ih is not None,
            has_b_hh=p.b_hh is not None, options=p.options,
            compute=compute,
            arrays=dict(x=_own(x), h0=h0, W_ih=_own(W_ih), W_hh=_own(W_hh), out=out,
                        gates=gates, hn=hns))
        out = cache.read_only_out()
    return out, h, cache


def gru_backward(d_out, d_h_n, cache):
    """BPTT through a GRU: the reference for ``fastrnn.gru_backward``.

    Per step, with dh = dL/dh_t + d_out_t:

        dz = dh * (h_{t-1} - n),  dn = dh * (1 - z) (1 - n^2),  dr = dn * hn
        da_x = [dr r(1-r), dz z(1-z), dn]       (the gradient of x_t W_ih^T + b_ih)
        da_h = [dr r(1-r), dz z(1-z), dn * r]   (the gradient of h_{t-1} W_hh^T + b_hh)
        dL/dh_{t-1} = dh * z + da_h W_hh

    With the reset before the product (``reset_after=False``), n's
    recurrent term is (r * h_{t-1}) W_hn^T + b_hn, so its gradient dn reaches
    r * h_{t-1} through W_hn first:

        drh = dn W_hn,  dr = drh * h_{t-1}
        da_x = [dr r(1-r), dz z(1-z), dn],  db_hh's n block sums dn too
        dW_hh = [dr r(1-r), dz z(1-z)]^T h_{t-1} on the r, z blocks, dn^T (r * h_{t-1}) on n
        dL/dh_{t-1} = dh * z + drh * r + [dr r(1-r), dz z(1-z)] W_h[rz]
    """
    d_out, d_h_n = check_backward("gru", cache, (d_out, d_h_n))
    x, W_ih, W_hh, out, lengths = cache.x, cache.W_ih, cache.W_hh, cache.out, cache.lengths
    reset_after = cache.reset_after
    T, B, H = out.shape
    dtype = x.dtype
    d_out = _zeros_if_none(d_out, (T, B, H), dtype)
    op = _operands(cache.compute is not None)
    Wi, Wh = op(W_ih), op(W_hh)

    dx = np.zeros_like(x)
    dW_ih = np.zeros_like(W_ih)
    dW_hh = np.zeros_like(W_hh)
    db_ih = np.zeros(3 * H, dtype)
    db_hh = np.zeros(3 * H, dtype)
    dh = _zeros_if_none(d_h_n, (B, H), dtype).copy()
    for t in reversed(range(T)):
        r, z, n = np.split(cache.gates[t], 3, axis=1)
        hn = cache.hn[t]
        h_prev = out[t - 1] if t > 0 else cache.h0
        dh_total = dh + d_out[t]
        dn = dh_total * (1 - z) * (1 - n * n)
        dz = dh_total * (h_prev - n) * z * (1 - z)
        running = _running(t, lengths, B)
        if reset_after:
            dr = dn * hn * r * (1 - r)
            da_x = np.where(running, np.concatenate([dr, dz, dn], axis=1), 0)
            da_h = np.where(running, np.concatenate([dr, dz, dn * r], axis=1), 0)
            da_x_op, da_h_op = op(da_x), op(da_h)  # the products'; the bias sums read them as they are
            dW_hh += da_h_op.T @ op(h_prev)
            dh_prev = dh_total * z + da_h_op @ Wh
        else:
            dn = np.where(running, dn, 0)
            drh = op(dn) @ Wh[2 * H:]
            dr = drh * h_prev * r * (1 - r)
            da_x = np.where(running, np.concatenate([dr, dz, dn], axis=1), 0)
            da_h = da_x
            da_x_op = op(da_x)
            dW_hh[:2 * H] += da_x_op[:, :2 * H].T @ op(h_prev)
            dW_hh[2 * H:] += op(dn).T @ op(hn)
            dh_prev = dh_total * z + drh * r + da_x_op[:, :2 * H] @ Wh[:2 * H]
        dW_ih += da_x_op.T @ op(x[t])
        db_ih += da_x.sum(axis=0)
        db_hh += da_h.sum(axis=0)
        dx[t] = da_x_op @ Wi
        dh = np.where(running, dh_prev, dh)

    return make_grads(cache, dx, dh, dW_ih, dW_hh, db_ih=db_ih, db_hh=db_hh)


# ---- Layer-normalised cells ------------------------------------------------
#
# Ba, Kiros and Hinton (2016), in the form of PyTorch's benchmark of custom
# cells (benchmarks/fastrnns/custom_lstms.py, LayerNormLSTMCell), where
# LN(a) = (a - mean(a)) / sqrt(var(a) + eps) * gamma + beta over each row
# (var the biased one, eps 1e-5 as in torch.nn.LayerNorm):
#
#   LayerNorm LSTM  [i, f, g, o] = LN_i(x_t W_ih^T) + LN_h(h_{t-1} W_hh^T)   each LN over 4H
#                   i, f, o = sigmoid(.), g = tanh(.)
#                   c_t = LN_c(f * c_{t-1} + i * g)                            LN over H
#                   h_t = o * tanh(c_t)
#   LayerNorm GRU   [xr, xz, xn] = LN_i(x_t W_ih^T),  [hr, hz, hn] = LN_h(h_{t-1} W_hh^T)  over 3H
#                   r = sigmoid(xr + hr), z = sigmoid(xz + hz), n = tanh(xn + r * hn)
#                   h_t = (1 - z) * n + z * h_{t-1}
#
# The products have no bias: each LayerNorm's beta is one (the GRU's beta_h
# n block sits inside the reset product, where PyTorch's GRU has b_hn).  A
# gamma or beta given as None is a LayerNorm without that learned part
# (gain 1, bias 0), and its gradient comes back None.


def layer_norm(a, gamma, beta, eps):
    """LN over the last axis: ``(y, a_hat, rstd)``, y = a_hat * gamma + beta,
    a_hat = (a - mean) * rstd, rstd = 1 / sqrt(var + eps) (keepdims)."""
    centred = a - a.mean(axis=-1, keepdims=True)
    rstd = 1 / np.sqrt((centred * centred).mean(axis=-1, keepdims=True) + eps)
    a_hat = centred * rstd
    return a_hat * gamma + beta, a_hat, rstd


def layer_norm_backward(dy, a_hat, rstd, gamma):
    """dL/da of ``layer_norm`` from dL/dy: with g = dy * gamma,
    ``rstd * (g - mean(g) - a_hat * mean(g * a_hat))`` over the last axis."""
    g = dy * gamma
    return rstd * (g - g.mean(axis=-1, keepdims=True)
                   - a_hat * (g * a_hat).mean(axis=-1, keepdims=True))


def _norm_forward_setup(cell, x, states, W_ih, W_hh, params, lengths, eps, training):
    p = check_norm_forward(cell, x, states, W_ih, W_hh, params, lengths, eps, training)
    states = [_zeros_if_none(s, (p.B, p.H), p.dtype).copy() for s in p.states]
    return p, states, filled_params(p)


def _norm_cache(p, states0, params, saved):
    spec = NORM_CELLS[p.cell]
    return NormCache(p.cell, "numpy", lengths=p.lengths, eps=p.eps, given=given_params(p),
                     arrays=dict(x=_own(p.x), **dict(zip(spec.initial, states0)),
                                 W_ih=_own(p.W_ih), W_hh=_own(p.W_hh),
                                 **{n: _own(v) for n, v in zip(spec.params, params)}, **saved))


def layernorm_lstm_forward(x, h0, c0, W_ih, W_hh, gamma_i=None, beta_i=None, gamma_h=None,
                           beta_h=None, gamma_c=None, beta_c=None, *, eps=1e-5, lengths=None,
                           training=True):
    """LayerNorm LSTM over a sequence: the reference for
    ``fastrnn.layernorm_lstm_forward``.  Returns ``out (T, B, H), h_n, c_n
    (B, H), cache``."""
    p, (h, c), params = _norm_forward_setup(
        "layernorm_lstm", x, (h0, c0), W_ih, W_hh,
        (gamma_i, beta_i, gamma_h, beta_h, gamma_c, beta_c), lengths, eps, training)
    gamma_i, beta_i, gamma_h, beta_h, gamma_c, beta_c = params
    T, B, H, dtype = p.T, p.B, p.H, p.dtype
    h0, c0 = h.copy(), c.copy()
    out = np.zeros((T, B, H), dtype)
    gates = np.zeros((T, B, 4 * H), dtype)
    cs = np.zeros((T, B, H), dtype)
    i_hat, h_hat = np.zeros((T, B, 4 * H), dtype), np.zeros((T, B, 4 * H), dtype)
    c_hat = np.zeros((T, B, H), dtype)
    rstd_i, rstd_h, rstd_c = (np.zeros((T, B), dtype) for _ in range(3))
    for t in range(T):
        yi, ai_hat, ri = layer_norm(p.x[t] @ p.W_ih.T, gamma_i, beta_i, p.eps)
        yh, ah_hat, rh = layer_norm(h @ p.W_hh.T, gamma_h, beta_h, p.eps)
        a = yi + yh
        i, f = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H])
        g, o = np.tanh(a[:, 2 * H:3 * H]), sigmoid(a[:, 3 * H:])
        c_new, cp_hat, rc = layer_norm(f * c + i * g, gamma_c, beta_c, p.eps)
        h_new = o * np.tanh(c_new)
        running = _running(t, p.lengths, B)
        h, c = np.where(running, h_new, h), np.where(running, c_new, c)
        out[t] = np.where(running, h_new, 0)
        gates[t] = np.concatenate([i, f, g, o], axis=1)
        cs[t] = c
        i_hat[t], h_hat[t], c_hat[t] = ai_hat, ah_hat, cp_hat
        rstd_i[t], rstd_h[t], rstd_c[t] = ri[:, 0], rh[:, 0], rc[:, 0]

    cache = None
    if training:
        cache = _norm_cache(p, (h0, c0), params, dict(
            out=out, gates=gates, c=cs, i_hat=i_hat, rstd_i=rstd_i, h_hat=h_hat,
            rstd_h=rstd_h, c_hat=c_hat, rstd_c=rstd_c))
        out = cache.read_only_out()
    return out, h, c, cache


def layernorm_lstm_backward(d_out, d_h_n, d_c_n, cache):
    """BPTT through a LayerNorm LSTM: the reference for
    ``fastrnn.layernorm_lstm_backward``.

    Per step, with dh = dL/dh_t + d_out_t and each LayerNorm's backward
    ``layer_norm_backward``:

        do = dh * tanh(c_t)              dc_t = dL/dc_t + dh * o * (1 - tanh(c_t)^2)
        dp = LN_c'(dc_t)  (p = f * c_{t-1} + i * g)
        di = dp * g,  df = dp * c_{t-1},  dg = dp * i,   dL/dc_{t-1} = dp * f
        da = [di i(1-i), df f(1-f), dg (1-g^2), do o(1-o)]
        dL/dh_{t-1} = LN_h'(da) W_hh,   dx_t = LN_i'(da) W_ih

    and each gamma's gradient sums dy * a_hat, each beta's dy (dy: the
    gradient reaching that LayerNorm's output: da for LN_i and LN_h, dc_t
    for LN_c).
    """
    d_out, d_h_n, d_c_n = check_norm_backward("layernorm_lstm", cache, (d_out, d_h_n, d_c_n))
    A = cache.arrays
    x, W_ih, W_hh, out, lengths = A["x"], A["W_ih"], A["W_hh"], A["out"], cache.lengths
    T, B, H = out.shape
    dtype = x.dtype
    d_out = _zeros_if_none(d_out, (T, B, H), dtype)
    dx, dW_ih, dW_hh = np.zeros_like(x), np.zeros_like(W_ih), np.zeros_like(W_hh)
    d_params = {n: np.zeros_like(A[n]) for n in NORM_CELLS["layernorm_lstm"].params}
    dh = _zeros_if_none(d_h_n, (B, H), dtype).copy()
    dc = _zeros_if_none(d_c_n, (B, H), dtype).copy()
    for t in reversed(range(T)):
        i, f, g, o = np.split(A["gates"][t], 4, axis=1)
        c = A["c"][t]
        h_prev, c_prev = (out[t - 1], A["c"][t - 1]) if t > 0 else (A["h0"], A["c0"])
        running = _running(t, lengths, B)
        dh_total = np.where(running, dh + d_out[t], 0)
        tc = np.tanh(c)
        da_o = dh_total * tc * o * (1 - o)
        dc_t = np.where(running, dc + dh_total * o * (1 - tc * tc), 0)
        d_params["gamma_c"] += (dc_t * A["c_hat"][t]).sum(axis=0)
        d_params["beta_c"] += dc_t.sum(axis=0)
        dp = layer_norm_backward(dc_t, A["c_hat"][t], A["rstd_c"][t][:, None], A["gamma_c"])
        da = np.concatenate([dp * g * i * (1 - i), dp * c_prev * f * (1 - f),
                             dp * i * (1 - g * g), da_o], axis=1)
        for name, a_hat, rstd in (("i", A["i_hat"][t], A["rstd_i"][t]),
                                  ("h", A["h_hat"][t], A["rstd_h"][t])):
            d_params["gamma_" + name] += (da * a_hat).sum(axis=0)
            d_params["beta_" + name] += da.sum(axis=0)
        dai = layer_norm_backward(da, A["i_hat"][t], A["rstd_i"][t][:, None], A["gamma_i"])
        dah = layer_norm_backward(da, A["h_hat"][t], A["rstd_h"][t][:, None], A["gamma_h"])
        dW_ih += dai.T @ x[t]
        dW_hh += dah.T @ h_prev
        dx[t] = dai @ W_ih
        dh = np.where(running, dah @ W_hh, dh)
        dc = np.where(running, dp * f, dc)

    return make_norm_grads(cache, (dx, dh, dc, dW_ih, dW_hh),
                           [d_params[n] for n in NORM_CELLS["layernorm_lstm"].params])


def layernorm_gru_forward(x, h0, W_ih, W_hh, gamma_i=None, beta_i=None, gamma_h=None,
                          beta_h=None, *, eps=1e-5, lengths=None, training=True):
    """LayerNorm GRU over a sequence: the reference for
    ``fastrnn.layernorm_gru_forward``.  Returns ``out (T, B, H), h_n (B, H),
    cache``."""
    p, (h,), params = _norm_forward_setup(
        "layernorm_gru", x, (h0,), W_ih, W_hh, (gamma_i, beta_i, gamma_h, beta_h), lengths,
        eps, training)
    gamma_i, beta_i, gamma_h, beta_h = params
    T, B, H, dtype = p.T, p.B, p.H, p.dtype
    h0 = h.copy()
    out = np.zeros((T, B, H), dtype)
    gates = np.zeros((T, B, 3 * H), dtype)
    hns = np.zeros((T, B, H), dtype)
    i_hat, h_hat = np.zeros((T, B, 3 * H), dtype), np.zeros((T, B, 3 * H), dtype)
    rstd_i, rstd_h = np.zeros((T, B), dtype), np.zeros((T, B), dtype)
    for t in range(T):
        yi, ai_hat, ri = layer_norm(p.x[t] @ p.W_ih.T, gamma_i, beta_i, p.eps)
        yh, ah_hat, rh = layer_norm(h @ p.W_hh.T, gamma_h, beta_h, p.eps)
        r = sigmoid(yi[:, :H] + yh[:, :H])
        z = sigmoid(yi[:, H:2 * H] + yh[:, H:2 * H])
        hn = yh[:, 2 * H:]
        n = np.tanh(yi[:, 2 * H:] + r * hn)
        h_new = (1 - z) * n + z * h
        running = _running(t, p.lengths, B)
        h = np.where(running, h_new, h)
        out[t] = np.where(running, h_new, 0)
        gates[t] = np.concatenate([r, z, n], axis=1)
        hns[t] = hn
        i_hat[t], h_hat[t] = ai_hat, ah_hat
        rstd_i[t], rstd_h[t] = ri[:, 0], rh[:, 0]

    cache = None
    if training:
        cache = _norm_cache(p, (h0,), params, dict(
            out=out, gates=gates, hn=hns, i_hat=i_hat, rstd_i=rstd_i, h_hat=h_hat,
            rstd_h=rstd_h))
        out = cache.read_only_out()
    return out, h, cache


def layernorm_gru_backward(d_out, d_h_n, cache):
    """BPTT through a LayerNorm GRU: the reference for
    ``fastrnn.layernorm_gru_backward``.

    Per step, with dh = dL/dh_t + d_out_t:

        dn = dh * (1 - z),  dz = dh * (h_{t-1} - n),  dL/dh_{t-1} = dh * z + ...
        da_n = dn * (1 - n^2),  dr = da_n * hn
        dxi = [dr r(1-r), dz z(1-z), da_n],  dhh = [dr r(1-r), dz z(1-z), da_n * r]
        dL/dh_{t-1} += LN_h'(dhh) W_hh,   dx_t = LN_i'(dxi) W_ih
    """
    d_out, d_h_n = check_norm_backward("layernorm_gru", cache, (d_out, d_h_n))
    A = cache.arrays
    x, W_ih, W_hh, out, lengths = A["x"], A["W_ih"], A["W_hh"], A["out"], cache.lengths
    T, B, H = out.shape
    dtype = x.dtype
    d_out = _zeros_if_none(d_out, (T, B, H), dtype)
    dx, dW_ih, dW_hh = np.zeros_like(x), np.zeros_like(W_ih), np.zeros_like(W_hh)
    d_params = {n: np.zeros_like(A[n]) for n in NORM_CELLS["layernorm_gru"].params}
    dh = _zeros_if_none(d_h_n, (B, H), dtype).copy()
    for t in reversed(range(T)):
        r, z, n = np.split(A["gates"][t], 3, axis=1)
        hn = A["hn"][t]
        h_prev = out[t - 1] if t > 0 else A["h0"]
        running = _running(t, lengths, B)
        dh_total = np.where(running, dh + d_out[t], 0)
        da_n = dh_total * (1 - z) * (1 - n * n)
        da_r = da_n * hn * r * (1 - r)
        da_z = dh_total * (h_prev - n) * z * (1 - z)
        dyi = np.concatenate([da_r, da_z, da_n], axis=1)
        dyh = np.concatenate([da_r, da_z, da_n * r], axis=1)
        for name, dy in (("i", dyi), ("h", dyh)):
            d_params["gamma_" + name] += (dy * A[name + "_hat"][t]).sum(axis=0)
            d_params["beta_" + name] += dy.sum(axis=0)
        dai = layer_norm_backward(dyi, A["i_hat"][t], A["rstd_i"][t][:, None], A["gamma_i"])
        dah = layer_norm_backward(dyh, A["h_hat"][t], A["rstd_h"][t][:, None], A["gamma_h"])
        dW_ih += dai.T @ x[t]
        dW_hh += dah.T @ h_prev
        dx[t] = dai @ W_ih
        dh = np.where(running, dh_total * z + dah @ W_hh, dh)

    return make_norm_grads(cache, (dx, dh, dW_ih, dW_hh),
                           [d_params[n] for n in NORM_CELLS["layernorm_gru"].params])
