"""Input checks, in one place, for every cell and every backend.

Everything a user passes is checked here before any kernel runs: ranks,
shapes (the message names the argument and the shape expected), dtypes
(float32 or float64, one dtype for all), lengths, the nonlinearity, and that
a cache came from a training-mode forward of the same cell.  Nothing here
copies or modifies the caller's arrays.
"""
from typing import NamedTuple, Optional

import numpy as np

from ._types import ForwardCache

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
NONLINEARITIES = ("tanh", "relu")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def _as_array(value, name):
    if isinstance(value, np.ndarray):
        return value
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be an array of floats, got {type(value).__name__}") from exc
    if arr.dtype == object:
        raise TypeError(f"{name} must be an array of floats, got {type(value).__name__}")
    return arr


def _check_float(arr, name, dtype=None):
    """dtype None: arr must be float32/float64; otherwise it must be exactly dtype."""
    if dtype is None:
        if arr.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must have dtype float32 or float64, got {arr.dtype}")
    elif arr.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {arr.dtype} but x has dtype {dtype}; fastrnn does not cast "
            f"silently: pass arrays of one dtype (for example {name}.astype(np.{dtype}))")


def _check_shape(arr, name, expected, spelled):
    """expected: tuple of ints; spelled: the same shape in letters, e.g. '(B, H)'."""
    if arr.shape != tuple(expected):
        raise ValueError(f"{name} must have shape {spelled} = {tuple(expected)}, got {arr.shape}")


def _optional(value, name, expected, spelled, dtype):
    if value is None:
        return None
    # The common case (an ndarray of the right dtype and shape) costs two comparisons.
    if type(value) is np.ndarray and value.dtype == dtype and value.shape == expected:
        return value
    arr = _as_array(value, name)
    _check_float(arr, name, dtype)
    _check_shape(arr, name, expected, spelled)
    return arr


def _required(value, name, expected, spelled, dtype):
    if value is None:
        raise TypeError(f"{name} must be an array of floats, got None")
    return _optional(value, name, expected, spelled, dtype)


def check_lengths(lengths, T, B):
    """Return lengths as a fresh int64 array of shape (B,), or None."""
    if lengths is None:
        return None
    arr = _as_array(lengths, "lengths")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"lengths must be an array of integers, got dtype {arr.dtype}")
    _check_shape(arr, "lengths", (B,), "(B,)")
    if arr.size and (arr.min() < 0 or arr.max() > T):
        raise ValueError(f"lengths must satisfy 0 <= lengths[b] <= T = {T}, "
                         f"got values from {arr.min()} to {arr.max()}")
    return arr.astype(np.int64, copy=True)


def check_positive_int(value, name):
    """A constructor's size or count: a Python or NumPy integer >= 1 (not a bool)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_dtype(dtype):
    """A constructor's dtype argument: float32 or float64."""
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def check_nonlinearity(nonlinearity):
    if not isinstance(nonlinearity, str) or nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be one of {NONLINEARITIES}, got {nonlinearity!r}")
    return nonlinearity


class Checked(NamedTuple):
    """The arguments of a forward call after ``check_forward``: arrays as given
    (not copied), None where the caller passed None, and the sizes."""

    x: np.ndarray
    h0: Optional[np.ndarray]
    c0: Optional[np.ndarray]
    W_ih: np.ndarray
    W_hh: np.ndarray
    b_ih: Optional[np.ndarray]
    b_hh: Optional[np.ndarray]
    lengths: Optional[np.ndarray]  # int64 copy
    T: int
    B: int
    I: int
    H: int
    G: int
    dtype: np.dtype


def check_forward(cell, x, h0, c0, W_ih, W_hh, b_ih, b_hh, lengths):
    """Check a forward call of ``cell`` ("rnn", "lstm", "gru").

    ``h0`` and ``c0`` are the initial states (None means zeros; ``c0`` is
    LSTM's cell state, None for the other cells).  Returns a :class:`Checked`
    with lengths as a fresh int64 array (or None).
    """
    G = GATES[cell]
    x = _as_array(x, "x")
    _check_float(x, "x")
    if x.ndim != 3:
        raise ValueError(f"x must have shape (T, B, I) (time-major; rank 3), got shape {x.shape}")
    T, B, I = x.shape
    if T < 1 or B < 1 or I < 1:
        raise ValueError(f"x must have T >= 1 steps, B >= 1 sequences and I >= 1 features, "
                         f"got shape (T, B, I) = {x.shape}")
    if T * B >= 2**31:
        # The kernels hand T*B to BLAS as a 32-bit int (scipy's cython_blas).
        raise ValueError(f"x must have T * B < 2**31 rows (BLAS takes 32-bit sizes), "
                         f"got T * B = {T * B}; split the batch or the sequence")
    dtype = x.dtype

    W_hh = _as_array(W_hh, "W_hh")
    _check_float(W_hh, "W_hh", dtype)
    gates = "H" if G == 1 else f"{G}*H"  # the rows of the gate-stacked weights
    if W_hh.ndim != 2 or W_hh.shape[1] < 1 or W_hh.shape[0] != G * W_hh.shape[1]:
        raise ValueError(f"W_hh must have shape ({gates}, H) with H >= 1, got {W_hh.shape}")
    H = W_hh.shape[1]
    gate_vector = (G * H,)
    state = (B, H)
    return Checked._make((  # _make: a third of the cost of Checked(...) (~0.3 against 0.9 us)
        x, _optional(h0, "h0", state, "(B, H)", dtype),
        _optional(c0, "c0", state, "(B, H)", dtype),
        _required(W_ih, "W_ih", (G * H, I), f"({gates}, I)", dtype), W_hh,
        _optional(b_ih, "b_ih", gate_vector, f"({gates},)", dtype),
        _optional(b_hh, "b_hh", gate_vector, f"({gates},)", dtype),
        check_lengths(lengths, T, B), T, B, I, H, G, dtype))


def check_backward(cell, cache, grads):
    """Check a backward call: ``cache`` from a training forward of ``cell``;
    ``grads`` maps each upstream-gradient name ("d_out", "d_h_n", "d_c_n") to
    its value (None means zeros)."""
    if cache is None:
        raise ValueError("cache is None: the forward ran with training=False, which saves "
                         "nothing for backward; run it with training=True")
    if not isinstance(cache, ForwardCache):
        raise TypeError(f"cache must be the cache returned by {cell}_forward, "
                        f"got {type(cache).__name__}")
    if cache.cell != cell:
        raise ValueError(f"cache comes from {cache.cell}_forward, not {cell}_forward")
    T, B, _ = cache.x.shape
    H = cache.W_hh.shape[1]
    dtype = cache.x.dtype
    shapes = {"d_out": ((T, B, H), "(T, B, H)")}
    checked = {}
    for name, value in grads.items():
        expected, spelled = shapes.get(name, ((B, H), "(B, H)"))
        checked[name] = _optional(value, name, expected, spelled, dtype)
    return checked
