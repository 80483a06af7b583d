"""int8 dynamic quantization: the arithmetic, defined once in NumPy.

fastrnn's int8 compute (``compute_dtype="int8"``, inference only) follows
the scheme of ONNX Runtime's and PyTorch's dynamically quantized LSTMs:

weights
    quantized once, symmetric per row (one scale per gate unit):
    ``scale = max|W[r]| / 127``, ``q = rint(W[r] * (127 / max|W[r]|))`` in
    [-127, 127] (:func:`quantize_weight`, a :class:`QuantizedWeight`).
activations
    each row of a product's operand (x_t for the input term, h_{t-1} for the
    recurrent one) quantized the same way when the product reads it, with a
    scale of its own (:func:`quantize_rows`): dynamic, nothing to calibrate.
products
    the integer products summed exactly (in int32), then rescaled to
    float32 as ``(float32(sum) * s_a) * s_w`` (:func:`int8_matmul`).

Everything else (the bias, the gates, the LSTM's c, the outputs) is float32.
Every value is computed in float32 in exactly this order, rounding half to
even, so the kernels (``kernels/engine.h``: ``fastrnn_quantize_u8``,
``fastrnn_tile_s8``, ``fastrnn_rescale_s8``) give these products bit for
bit.  A row of zeros (or of values below 2**-120, 7.5e-37) has the scale 0
and quantizes to zeros; a row holding an inf or a NaN has the scale NaN, so
every product it enters is NaN (never a wrong finite number).
"""
import numpy as np

__all__ = ["QuantizedWeight", "quantize_weight", "quantize_rows", "int8_matmul"]

_127 = np.float32(127)
_TINY = np.float32(2.0 ** -120)


def _row_scales(a):
    """(amax, finite) of each row of the float32 matrix a."""
    amax = np.abs(a).max(axis=1, initial=np.float32(0))
    return amax, np.isfinite(amax)


def quantize_rows(a):
    """Rows of ``a`` (float32, (rows, K)) as ``(q, scale)``: q int8 (rows, K),
    scale float32 (rows,), with a[r] ~ q[r] * scale[r] (see the module)."""
    a = np.asarray(a, np.float32)
    if a.ndim != 2:
        raise ValueError(f"a must be a matrix (rows, K), got shape {a.shape}")
    amax, finite = _row_scales(a)
    usable = finite & (amax >= _TINY)  # below: 127 / amax would overflow; zeros
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(usable, _127 / np.where(usable, amax, 1), np.float32(0)).astype(np.float32)
        q = np.clip(np.rint(np.where(usable[:, None], a, 0) * inv[:, None]), -127, 127)
        scale = np.where(usable, amax / _127,
                         np.where(finite, np.float32(0), np.float32(np.nan))).astype(np.float32)
    return q.astype(np.int8), scale


class QuantizedWeight:
    """A weight matrix (rows, K) quantized symmetric per row: ``q`` int8
    (rows, K) and ``scale`` float32 (rows,), W[r] ~ q[r] * scale[r].

    Made by :func:`quantize_weight`; passed where a forward takes W_ih or
    W_hh, it selects int8 compute.  Immutable: its arrays live in read-only
    memory (which no flag makes writable) and cannot be rebound, so the
    kernels may keep their packed forms of it.
    """

    __slots__ = ("_q", "_scale", "_panels")

    def __init__(self, q, scale):
        q = np.array(q, order="C", copy=True)
        scale = np.array(scale, np.float32, order="C", copy=True)
        if q.dtype != np.int8 or q.ndim != 2:
            raise TypeError(f"q must be an int8 matrix (rows, K), got dtype {q.dtype}, "
                            f"shape {q.shape}")
        if scale.shape != q.shape[:1]:
            raise ValueError(f"scale must have shape (rows,) = {q.shape[:1]}, "
                             f"got {scale.shape}")
        if q.size and q.min() < -127:
            raise ValueError("q must lie in [-127, 127] (symmetric int8: -128 is not used)")
        self._q = _frozen(q)
        self._scale = _frozen(scale)
        self._panels = {}  # the kernels' packed forms of q, made on first use

    @property
    def q(self):
        """The int8 values (rows, K), read-only."""
        return self._q

    @property
    def scale(self):
        """The float32 scale of each row (rows,), read-only."""
        return self._scale

    @property
    def shape(self):
        return self.q.shape

    @property
    def ndim(self):
        return 2

    def dequantize(self):
        """The float32 matrix q * scale these values stand for."""
        return self.q.astype(np.float32) * self.scale[:, None]

    def __eq__(self, other):
        if not isinstance(other, QuantizedWeight):
            return NotImplemented
        return (np.array_equal(self.q, other.q)
                and np.array_equal(self.scale, other.scale, equal_nan=True))

    __hash__ = None

    def __reduce__(self):
        # Through __init__: a copy or an unpickled one has read-only arrays
        # again, and not the kernels' packed forms (made again on first use).
        return QuantizedWeight, (self.q, self.scale)

    def __repr__(self):
        return f"QuantizedWeight(shape={self.shape}, int8, per-row float32 scales)"


def _frozen(a):
    """A copy of ``a`` in read-only memory (a bytes object's), which no
    ``flags.writeable = True`` can make writable."""
    return np.frombuffer(a.tobytes(), a.dtype).reshape(a.shape)


def quantize_weight(W):
    """``W`` (rows, K), float32 or float64, quantized symmetric per row (its
    values rounded to float32 first): a :class:`QuantizedWeight`.  Rows
    holding an inf or a NaN are refused (a ValueError naming the row)."""
    if isinstance(W, QuantizedWeight):
        return W
    W = np.asarray(W)
    if W.dtype not in (np.float32, np.float64):
        raise TypeError(f"W must be an array of dtype float32 or float64, got {W.dtype}")
    if W.ndim != 2:
        raise ValueError(f"W must be a matrix (rows, K), got shape {W.shape}")
    if W.dtype == np.float64 and W.size:
        with np.errstate(invalid="ignore"):
            big = (np.abs(W).max(axis=1) > np.finfo(np.float32).max) & np.isfinite(W).all(axis=1)
        if big.any():
            raise ValueError(f"W must be finite in float32 to quantize: row "
                             f"{int(np.argmax(big))} holds values beyond float32's range")
    W = W.astype(np.float32)
    bad = ~np.isfinite(W).all(axis=1)
    if bad.any():
        raise ValueError(f"W must be finite to quantize: row {int(np.argmax(bad))} holds "
                         f"an inf or a NaN")
    return QuantizedWeight(*quantize_rows(W))


def int_products(qa, qw):
    """The exact integer products qa @ qw.T of two int8 matrices, as int64.
    (Summed in float64, whose 53 bits hold every such sum below 2**53 /
    127**2 = 5.6e11 terms exactly; the kernels sum in int32, exact below
    133,000 terms, more than any K fastrnn takes.)"""
    return (qa.astype(np.float64) @ qw.astype(np.float64).T).astype(np.int64)


def int8_matmul(a, W):
    """``a @ W.T`` in int8 compute: a (rows, K) float32 quantized per row,
    W a :class:`QuantizedWeight` (or a float matrix, quantized first);
    returns float32 (rows, W rows)."""
    W = quantize_weight(W)
    qa, sa = quantize_rows(a)
    sums = int_products(qa, W.q).astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):
        return (sums * sa[:, None]) * W.scale[None, :]
