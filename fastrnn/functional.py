"""The functional API: forward and backward of each cell, in every backend.

Each function checks its arguments once (``fastrnn._validation``) and hands
them to the one driver (``fastrnn._driver``), which prepares and dispatches
for every cell alike; what a cell is (its
gates, states, options, kernel arguments) is its entry in ``fastrnn._spec``.
The NumPy specification of each function is in ``fastrnn.reference``, with
the same signature less ``backend``.
"""
from . import _driver
from ._validation import check_backward, check_forward_compute

__all__ = [
    "rnn_forward", "rnn_backward", "lstm_forward", "lstm_backward", "gru_forward",
    "gru_backward",
]


def rnn_forward(x, h0, W_ih, W_hh, b_ih=None, b_hh=None, *, nonlinearity="tanh",
                lengths=None, training=True, backend=None, compute_dtype=None):
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
    compute_dtype : None, "bfloat16" or "int8"
        The precision of the products.  None: x's dtype.  ``"bfloat16"``
        (float32 arrays; the Cython backend and the reference): the products
        read x, the weights and h_{t-1} rounded to bfloat16 (nearest even) and
        accumulate in float32; the bias, the gates, the states and every
        result stay float32.  The backward of such a forward does the same
        for its products (the gradients of the pre-activations rounded).  On CPUs with
        AVX512_BF16 the products run on its units; elsewhere the bf16 values
        are widened to float32 (half the weight traffic).  The error this
        adds is documented in docs/precision.md.  Arrays of
        ``ml_dtypes.bfloat16`` are taken too (widened to float32, exactly),
        and then the products run in bfloat16 unless this says otherwise.
        ``"int8"`` (float32 arrays, ``training=False``; the Cython backend
        and the reference): dynamic quantization, as ONNX Runtime's
        quantized LSTM does it: W_ih and W_hh quantized per row
        (``fastrnn.quantize_weight``; pass its ``QuantizedWeight``s as W_ih
        and W_hh to quantize once), x_t and h_{t-1} per row at each product,
        the products summed in int32 (AVX512_VNNI where the CPU has it) and
        rescaled to float32; the rest is float32 (``fastrnn.quantization``,
        docs/precision.md).

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
    p, compute = check_forward_compute("rnn", x, (h0,), W_ih, W_hh, b_ih, b_hh, lengths,
                                    {"nonlinearity": nonlinearity}, compute_dtype,
                                    training=training)
    return _driver.forward(p, training, backend, compute=compute)


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
    return _driver.backward("rnn", check_backward("rnn", cache, (d_out, d_h_n)), cache)


def lstm_forward(x, h0, c0, W_ih, W_hh, b_ih=None, b_hh=None, *, W_ch=None, W_hr=None,
                 lengths=None, training=True, backend=None, compute_dtype=None):
    """Run an LSTM over a batch of sequences.

    ``[i, f, g, o] = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh`` split into
    four blocks of H; ``i, f, o = sigmoid(.)``, ``g = tanh(.)``;
    ``c_t = f * c_{t-1} + i * g``; ``h_t = o * tanh(c_t)``.  With peepholes
    ``W_ch = [p_i, p_f, p_o]``: ``i = sigmoid(. + p_i * c_{t-1})``, f
    likewise, ``o = sigmoid(. + p_o * c_t)`` (ONNX's LSTM with input P).
    With a projection ``W_hr`` (P, H) (PyTorch's ``proj_size``),
    ``h_t = (o * tanh(c_t)) W_hr^T`` has P columns, and so have h0, out,
    h_n and W_hh; c keeps H.

    Parameters
    ----------
    x : ndarray, shape (T, B, I), float32 or float64
        Inputs, time-major.  Any strides; read-only arrays are fine.
    h0 : ndarray, shape (B, H) ((B, P) with W_hr), or None
        Initial hidden state; None means zeros.
    c0 : ndarray, shape (B, H), or None
        Initial cell state; None means zeros.
    W_ih : ndarray, shape (4*H, I)
        Input weights, gate blocks i, f, g, o (PyTorch's ``weight_ih_l0``).
    W_hh : ndarray, shape (4*H, H) ((4*H, P) with W_hr)
        Recurrent weights (``weight_hh_l0``).
    b_ih, b_hh : ndarray, shape (4*H,), or None
        Biases; None means no bias (and a None gradient).
    W_ch : ndarray, shape (3*H,), or None
        Peephole weights, blocks i, f, o (each (H,), one per unit); None
        means no peepholes (and a None gradient ``dW_ch``).  ONNX's P is
        this with its blocks in the order i, o, f.
    W_hr : ndarray, shape (P, H), or None
        The projection of h (PyTorch's ``weight_hr_l0``, any P >= 1); None
        means none (and a None gradient ``dW_hr``).  Not with bfloat16
        compute (yet).
    lengths : array of int, shape (B,), or None
        Steps of each sequence, ``0 <= lengths[b] <= T``.  Past its length a
        sequence's states are frozen and its output rows are zero.  None: all T.
    training : bool
        When False nothing is saved for backward and ``cache`` is None.
    backend : {"numpy", "numba", "cython"} or None
        None uses the default (``fastrnn.get_default_backend()``).
    compute_dtype : None, "bfloat16" or "int8"
        The precision of the products, as in :func:`fastrnn.rnn_forward`.

    Returns
    -------
    out : ndarray, shape (T, B, H) ((T, B, P) with W_hr)
        h_t for every step (zero past a sequence's length); read-only when
        ``training``.
    h_n, c_n : ndarray, shape (B, H) (h_n (B, P) with W_hr)
        Each sequence's states after its last step (h0, c0 if its length is 0).
    cache : ForwardCache or None
        What :func:`lstm_backward` needs.

    Raises as :func:`fastrnn.rnn_forward` does (TypeError for dtypes,
    ValueError naming the argument and the expected shape).
    """
    p, compute = check_forward_compute("lstm", x, (h0, c0), W_ih, W_hh, b_ih, b_hh, lengths, {},
                                    compute_dtype, (W_ch, W_hr), training=training)
    return _driver.forward(p, training, backend, compute=compute)


def lstm_backward(d_out, d_h_n, d_c_n, cache):
    """Backpropagate through time through the LSTM forward that made ``cache``.

    Uses the backend of that forward.

    Parameters
    ----------
    d_out : ndarray, shape (T, B, H) ((T, B, P) with W_hr), or None
        dL/d out; None means zeros.  Rows past a sequence's length are ignored.
    d_h_n, d_c_n : ndarray, shape (B, H) (d_h_n (B, P) with W_hr), or None
        dL/d h_n and dL/d c_n; None means zeros.
    cache : ForwardCache
        From :func:`lstm_forward` with ``training=True``.

    Returns
    -------
    LSTMGrads
        Named tuple ``(dx (T, B, I), dh0 (B, H), dc0 (B, H), dW_ih (4H, I),
        dW_hh (4H, H), db_ih (4H,), db_hh (4H,), dW_ch (3H,), dW_hr (P, H))``
        (with W_hr, dh0 is (B, P) and dW_hh (4H, P)); a bias that was None has
        gradient None, and so have W_ch without peepholes and W_hr without
        a projection.
    """
    return _driver.backward("lstm", check_backward("lstm", cache, (d_out, d_h_n, d_c_n)), cache)


def gru_forward(x, h0, W_ih, W_hh, b_ih=None, b_hh=None, *, reset_after=True, lengths=None,
                training=True, backend=None, compute_dtype=None):
    """Run a GRU over a batch of sequences (PyTorch's ``nn.GRU`` equations).

    ``r = sigmoid(x_t W_ir^T + b_ir + h_{t-1} W_hr^T + b_hr)``, z likewise,
    ``n = tanh(x_t W_in^T + b_in + r * (h_{t-1} W_hn^T + b_hn))``,
    ``h_t = (1 - z) * n + z * h_{t-1}``.

    ``reset_after=False`` resets before the product instead:
    ``n = tanh(x_t W_in^T + b_in + (r * h_{t-1}) W_hn^T + b_hn)``, the GRU
    of Keras's ``GRU(reset_after=False)`` and of ONNX's GRU with its default
    ``linear_before_reset=0`` (``reset_after=True`` is PyTorch's GRU, Keras's
    default and ONNX's ``linear_before_reset=1``).  It costs a second
    recurrent product per step, after r; bfloat16 compute does not run it.

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
    reset_after : bool
        True (the default, PyTorch's GRU): r multiplies h_{t-1} W_hn^T + b_hn;
        False: r multiplies h_{t-1} before W_hn (see above).
    lengths, training, backend, compute_dtype
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
    p, compute = check_forward_compute("gru", x, (h0,), W_ih, W_hh, b_ih, b_hh, lengths,
                                    {"reset_after": reset_after}, compute_dtype,
                                    training=training)
    return _driver.forward(p, training, backend, compute=compute)


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
        db_ih and db_hh differ in the n block (b_hn is multiplied by r), but
        with ``reset_after=False``, where b_hn is added as b_in is.
    """
    return _driver.backward("gru", check_backward("gru", cache, (d_out, d_h_n)), cache)
