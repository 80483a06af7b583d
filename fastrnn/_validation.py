"""Input checks, in one place, for every cell and every backend.

Everything a user passes is checked here before any kernel runs: ranks,
shapes (the message names the argument and the shape expected), dtypes
(float32 or float64, one dtype for all), lengths, the nonlinearity, and that
a cache came from a training-mode forward of the same cell.  Nothing here
copies or modifies the caller's arrays.
"""
from typing import NamedTuple, Optional

import numpy as np

from ._backends import BACKENDS
from ._spec import CELLS
from ._types import ForwardCache
from .quantization import QuantizedWeight, quantize_weight

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# How each cell's stacked weights are spelled in messages: (W_ih, W_hh, a bias).
_SPELLED = {}
for _name, _spec in CELLS.items():
    _rows = "H" if _spec.G == 1 else f"{_spec.G}*H"
    _SPELLED[_name] = (f"({_rows}, I)", f"({_rows}, H)", f"({_rows},)")


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


def given(value, arr):
    """What the user passed, for a message: "has dtype float64", or for a list
    and the like "is a list (NumPy reads it as float64)"."""
    if isinstance(value, np.ndarray):
        return f"has dtype {arr.dtype}"
    return f"is a {type(value).__name__} (NumPy reads it as {arr.dtype})"


def convert(value, name, dtype):
    """How to pass ``value`` (named ``name``) as an array of ``dtype``."""
    if isinstance(value, np.ndarray):
        return f"{name}.astype(np.{np.dtype(dtype)})"
    return f"np.asarray({name}, dtype=np.{np.dtype(dtype)})"


def _check_float(arr, name, dtype=None, value=None):
    """dtype None: arr must be float32/float64; otherwise it must be exactly
    dtype.  ``value``: what the user passed, where arr is its conversion."""
    value = arr if value is None else value
    if dtype is None:
        if arr.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be an array of dtype float32 or float64, "
                            f"got one that {given(value, arr)}")
    elif arr.dtype != dtype:
        raise TypeError(
            f"{name} {given(value, arr)} but x has dtype {dtype}; fastrnn does not cast "
            f"silently: pass arrays of one dtype (for example {convert(value, name, dtype)})")


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
    _check_float(arr, name, dtype, value)
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


def check_positive_int(value, name, least=1):
    """A constructor's size or count: a Python or NumPy integer (not a bool)
    of at least ``least`` (PyTorch's words: "greater than zero" for 1)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < least:
        bound = "greater than zero" if least == 1 else f"at least {least}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return int(value)


def is_number(value):
    """A real Python or NumPy number that is not a bool (NaN and inf included)."""
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)))


def check_bool(value, name):
    """A flag: True or False (Python's or NumPy's), never a truthy string or number."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def check_dtype(dtype):
    """A constructor's dtype argument: float32 or float64 (None is not float64)."""
    if dtype is None:
        raise TypeError("dtype must be float32 or float64, got None")
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    return dtype


def check_compute_dtype(compute_dtype, dtype):
    """The forward's ``compute_dtype``: "bfloat16" (bf16 products), "int8"
    (dynamically quantized products, inference only), or None for the
    products in x's own dtype (None, or that dtype named)."""
    if compute_dtype is None:
        return None
    name = compute_dtype if isinstance(compute_dtype, str) else (
        getattr(compute_dtype, "__name__", None) or getattr(compute_dtype, "name", None))
    if not isinstance(name, str):
        raise TypeError(f"compute_dtype must be None, 'bfloat16', 'int8' or the name of x's "
                        f"dtype, got {compute_dtype!r}")
    name = name.strip().lower()
    if name in ("bfloat16", "bf16", "int8"):
        name = "int8" if name == "int8" else "bfloat16"
        if dtype != np.float32:
            what = ("bf16 products, float32 accumulation" if name == "bfloat16"
                    else "int8 products, float32 scales")
            raise ValueError(f"compute_dtype={name!r} needs float32 arrays ({what}, "
                             f"float32 state and outputs), got {dtype}")
        return name
    if name == dtype.name:
        return None
    raise ValueError(f"compute_dtype must be None, 'bfloat16', 'int8' or {dtype.name!r} "
                     f"(x's dtype), got {compute_dtype!r}")


INT8_TRAINING = ("compute_dtype='int8' runs inference only (training=False): train in "
                 "float32 or bfloat16, then quantize (fastrnn.quantize_dynamic)")


def check_options(cell, options):
    """The keyword options of ``cell`` (its spec's ``options``, e.g. the Elman
    cell's nonlinearity): each one of its choices, an absent one its default
    (the first).  Returns them as a new dict."""
    checked = {}
    for key, (choices, _) in CELLS[cell].options.items():
        value = options.get(key, choices[0])
        if choices == (True, False):
            value = check_bool(value, key)
        elif not isinstance(value, str) or value not in choices:
            raise ValueError(f"{key} must be one of {choices}, got {value!r}")
        checked[key] = value
    return checked


def as_generator(seed):
    """A numpy Generator from an int, None or a Generator (used as it is)."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


class Checked(NamedTuple):
    """The arguments of a forward call of ``cell`` after ``check_forward``:
    arrays as given (not copied), None where the caller passed None, and the
    sizes.  ``Checked.trusted`` makes one without checking, for callers that
    have checked the arrays themselves (a layer, for its own weights)."""

    cell: str
    x: np.ndarray
    states: tuple  # the initial states, each (B, H) or None
    W_ih: np.ndarray
    W_hh: np.ndarray
    b_ih: Optional[np.ndarray]
    b_hh: Optional[np.ndarray]
    extras: tuple  # the spec's extra weights, each an array or None (absent)
    lengths: Optional[np.ndarray]  # int64 copy
    options: dict  # the cell's options, e.g. {"nonlinearity": "tanh"}
    T: int
    B: int
    I: int
    H: int
    G: int
    dtype: np.dtype
    P: int  # the width of h: H, or the projection's P

    @classmethod
    def trusted(cls, cell, x, states, W_ih, W_hh, b_ih, b_hh, lengths, options, extras=()):
        T, B, I = x.shape  # noqa: E741
        GH, P = W_hh.shape
        G = CELLS[cell].G
        extras = extras or (None,) * len(CELLS[cell].extras)
        return cls._make((cell, x, states, W_ih, W_hh, b_ih, b_hh, extras, lengths, options,
                          T, B, I, GH // G, G, x.dtype, P))


def _extra_shape(shape, H, P):
    """An extra weight's shape template (``_spec``: letters H, H3, P) at H units."""
    return tuple({"H": H, "H3": 3 * H, "P": P}[d] for d in shape)


def _spelled(shape):
    """A shape template in a message: ("H3",) -> "(3*H,)", ("P", "H") -> "(P, H)"."""
    dims = [d.replace("H3", "3*H") for d in shape]
    return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"


def _state_shapes(spec, B, H, P):
    """The shapes of the cell's states in order, with their spellings: h (B, P)
    where the cell projects (P = H otherwise), the others (B, H)."""
    h = ((B, P), "(B, P)") if spec.proj and P != H else ((B, H), "(B, H)")
    return [h] + [((B, H), "(B, H)")] * (len(spec.states) - 1)


def check_forward(cell, x, states, W_ih, W_hh, b_ih, b_hh, lengths, options, extras=()):
    """Check a forward call of ``cell`` (a name in ``_spec.CELLS``).

    ``states`` are the initial states in the spec's order, e.g. (h0, c0)
    (None means zeros); ``options`` the cell's keyword options; ``extras``
    its extra weights (``_spec``'s ``extras``) in order, each None when
    absent (an empty tuple: all absent).  Returns a :class:`Checked` with
    lengths as a fresh int64 array (or None).
    """
    spec = CELLS[cell]
    G = spec.G
    x_given = x
    if type(x) is not np.ndarray or x.dtype not in FLOAT_DTYPES:  # the common case: neither
        x = _as_array(x, "x")
        _check_float(x, "x", value=x_given)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (T, B, I) (time-major; rank 3), got shape {x.shape}")
    T, B, I = x.shape
    if I < 1:  # T = 0 steps or B = 0 sequences are empty work, as in PyTorch
        raise ValueError(f"x must have I >= 1 features, got shape (T, B, I) = {x.shape}")
    if T * B >= 2**31:
        # The kernels hand T*B to BLAS as a 32-bit int (scipy's cython_blas).
        raise ValueError(f"x must have T * B < 2**31 rows (BLAS takes 32-bit sizes), "
                         f"got T * B = {T * B}; split the batch or the sequence")
    dtype = x.dtype

    if type(W_hh) is not np.ndarray or W_hh.dtype != dtype:
        W_hh_given, W_hh = W_hh, _as_array(W_hh, "W_hh")
        if (not isinstance(x_given, np.ndarray) and W_hh.dtype in FLOAT_DTYPES
                and W_hh.dtype != dtype):
            # x, not the weights, is what to change: the weights set the dtype.
            raise TypeError(f"x {given(x_given, x)} but W_hh has dtype {W_hh.dtype}; "
                            f"pass {convert(x_given, 'x', W_hh.dtype)}")
        _check_float(W_hh, "W_hh", dtype, W_hh_given)
    spelled_ih, spelled_hh, spelled_bias = _SPELLED[cell]
    if spec.extras:
        extras = extras or (None,) * len(spec.extras)
    projected = spec.proj is not None and extras[list(spec.extras).index(spec.proj)] is not None
    if W_hh.ndim != 2 or W_hh.shape[1] < 1 or (
            W_hh.shape[0] != G * W_hh.shape[1] if not projected
            else W_hh.shape[0] < G or W_hh.shape[0] % G):
        if projected:
            spelled_hh = spelled_hh.replace(", H)", ", P)")
        raise ValueError(f"W_hh must have shape {spelled_hh} with H >= 1"
                         + (f" (P columns: {spec.proj} is given)" if projected else "")
                         + f", got {W_hh.shape}")
    H, P = W_hh.shape[0] // G, W_hh.shape[1]
    gate_vector = (G * H,)
    checked = []  # a loop, not a comprehension: its frame cost 0.45 us of a 9 us call
    for value, name, (shape, spelled) in zip(states, spec.initial,
                                             _state_shapes(spec, B, H, P)):
        checked.append(_optional(value, name, shape, spelled, dtype))
    if spec.extras:
        extras = tuple([_optional(value, name, _extra_shape(shape, H, P),
                                  _spelled(shape), dtype)
                        for value, (name, (shape, _)) in zip(extras, spec.extras.items())])
    return Checked._make((  # _make: a third of the cost of Checked(...) (~0.3 against 0.9 us)
        cell, x, checked,
        _required(W_ih, "W_ih", (G * H, I), spelled_ih, dtype), W_hh,
        _optional(b_ih, "b_ih", gate_vector, spelled_bias, dtype),
        _optional(b_hh, "b_hh", gate_vector, spelled_bias, dtype),
        extras,
        None if lengths is None else check_lengths(lengths, T, B),
        check_options(cell, options) if spec.options else options,
        T, B, I, H, G, dtype, P))


def _is_bfloat16(value):
    return isinstance(value, np.ndarray) and value.dtype.name == "bfloat16"


_ZERO32 = np.zeros(1, np.float32)  # read-only: the int8 checks' stand-in weights view it
_ZERO32.flags.writeable = False
_standins = {}  # shape: a float32 view of one zero of that shape


def _standin(shape):
    """A read-only float32 array of ``shape`` that views one zero, made once
    per shape: what check_forward checks in place of a QuantizedWeight
    (np.broadcast_to took 3.3 us a weight, a quarter of an int8 call's fixed
    cost; a fresh view each call 0.7 us)."""
    found = _standins.get(shape)
    if found is None:
        if len(_standins) > 256:
            _standins.clear()
        found = _standins[shape] = np.ndarray(shape, np.float32, _ZERO32, 0, (0,) * len(shape))
    return found


def check_forward_compute(cell, x, states, W_ih, W_hh, b_ih, b_hh, lengths, options,
                          compute_dtype, extras=(), training=False):
    """check_forward, and the products' precision: ``(Checked, compute)``,
    compute None, "bfloat16" or "int8".

    Arrays of ``ml_dtypes.bfloat16`` (the type JAX and TensorFlow use) are
    taken too: they widen to float32, which holds their values exactly, and
    then the products run in bfloat16 unless ``compute_dtype`` says
    otherwise.  Looked for only once check_forward has refused a dtype, so
    a float call pays nothing for it.

    int8: W_ih and W_hh may be ``QuantizedWeight``s (both, which select int8
    compute); float weights are quantized here.  In the Checked returned
    they are QuantizedWeights, whatever was passed.  ``training`` must be
    False."""
    # No comprehension, no import here: a float call pays two type checks
    # (a comprehension's frame cost 0.45 us of a 9 us call).
    quantized = type(W_ih) is QuantizedWeight or type(W_hh) is QuantizedWeight
    if quantized:
        if not (type(W_ih) is QuantizedWeight and type(W_hh) is QuantizedWeight):
            name = "W_ih" if type(W_hh) is QuantizedWeight else "W_hh"
            raise TypeError(f"{name} must be a QuantizedWeight too: pass both W_ih and W_hh "
                            f"quantized (fastrnn.quantize_weight), or both as float arrays")
        if compute_dtype is None:
            compute_dtype = "int8"
        if isinstance(x, np.ndarray) and x.dtype != np.float32:
            raise TypeError(f"x has dtype {x.dtype}, but int8 compute (QuantizedWeight W_ih "
                            f"and W_hh) takes float32 arrays: pass x.astype(np.float32)")
        qw = (W_ih, W_hh)
        # Checked against stand-ins of the dtype x will need (float32).
        W_ih, W_hh = _standin(W_ih.shape), _standin(W_hh.shape)
    try:
        p = check_forward(cell, x, states, W_ih, W_hh, b_ih, b_hh, lengths, options, extras)
    except TypeError:
        values = (x, *states, W_ih, W_hh, b_ih, b_hh, *extras)
        if not any(_is_bfloat16(v) for v in values):
            raise
        x, *rest = (v.astype(np.float32) if _is_bfloat16(v) else v for v in values)
        n = len(states)
        states, (W_ih, W_hh, b_ih, b_hh), extras = rest[:n], rest[n:n + 4], rest[n + 4:]
        p = check_forward(cell, x, tuple(states), W_ih, W_hh, b_ih, b_hh, lengths, options,
                          tuple(extras))
        if compute_dtype is None:
            compute_dtype = "bfloat16"
    compute = None if compute_dtype is None else check_compute_dtype(compute_dtype, p.dtype)
    if quantized and compute != "int8":
        raise ValueError(f"quantized weights (QuantizedWeight) run int8 compute only, "
                         f"got compute_dtype={compute_dtype!r}")
    if compute is not None:
        given = [name for name, value in zip(CELLS[cell].extras, p.extras) if value is not None]
        check_low_precision_options(cell, p.options, given, compute)
    if compute == "int8":
        if training is not False:
            raise ValueError(INT8_TRAINING)
        # (_make of the fields, not _replace: 0.5 against 1.3 us)
        qw = qw if quantized else (quantize_weight(p.W_ih), quantize_weight(p.W_hh))
        p = Checked._make(p[:3] + qw + p[5:])
    return p, compute


def check_low_precision_options(cell, options, given=(), compute="bfloat16"):
    """Refuse bfloat16 or int8 compute with what it does not run (the spec's
    ``no_low_precision``): an option value (the GRU's reset_after=False) or an
    extra weight among ``given``, those the call has (the LSTM's projection
    W_hr)."""
    spec = CELLS[cell]
    for key, value in spec.no_low_precision.items():
        if key in spec.extras:
            if key in given:
                what = " (its projection: proj_size)" if key == spec.proj else ""
                raise ValueError(f"compute_dtype={compute!r} does not run the {cell} cell with "
                                 f"{key}{what} (yet): use float32")
        elif options[key] == value:
            raise ValueError(f"compute_dtype={compute!r} does not run the {cell} cell with "
                             f"{key}={value!r} (yet): use float32, or {key}="
                             f"{spec.defaults[key]!r}")


def _cache_layout(spec):
    """(name, shape template) of every array a cell's cache holds, in letters
    T, B, I, H, GH; made once per cell."""
    shapes = {"x": ("T", "B", "I"), "W_ih": ("GH", "I"), "W_hh": ("GH", "P"),
              **{s: ("B", "H") for s in spec.initial}, spec.initial[0]: ("B", "P"),
              **{n: spec.forward.shapes.get(n, ("T", "B", "H")) for n in spec.saved}}
    shapes.update({name: shape for name, (shape, _) in spec.extras.items()})
    return tuple(shapes.items()), frozenset(spec.cached), frozenset(spec.options)


_CACHE_LAYOUTS = {name: _cache_layout(spec) for name, spec in CELLS.items()}


def _check_cache(cell, cache):
    """What the kernels rely on in a cache, cheaply (no pass over the data but
    the lengths): every array the spec lists, of one float dtype,
    C-contiguous, with the shapes one forward gives; lengths in [0, T]; the
    options and flags of the cell.  A cache is read-only (ForwardCache), so
    this guards against one built by hand or arrays reshaped in place.
    Returns (T, B, H, P, dtype)."""
    layout, names, option_names = _CACHE_LAYOUTS[cell]
    arrays = cache.arrays
    extras = CELLS[cell].extras  # held only when the forward had them
    if arrays.keys() - extras.keys() != names or not arrays.keys() <= names | extras.keys():
        raise ValueError(f"cache does not hold a {cell} forward's arrays: it has "
                         f"{sorted(arrays)}, a {cell} cache has {sorted(names)}"
                         + (f" and maybe {sorted(extras)}" if extras else ""))
    x, W_hh = arrays["x"], arrays["W_hh"]
    if not (type(x) is np.ndarray and x.ndim == 3 and x.dtype in FLOAT_DTYPES
            and type(W_hh) is np.ndarray and W_hh.ndim == 2):
        raise ValueError("cache is damaged: x must be (T, B, I) and W_hh (G*H, H), float")
    G = CELLS[cell].G
    (T, B, I), H, P, dtype = x.shape, W_hh.shape[0] // G, W_hh.shape[1], x.dtype
    proj = CELLS[cell].proj
    if W_hh.shape[0] != G * H or H < 1 or (P != H and (proj is None or proj not in arrays)):
        raise ValueError(f"cache is damaged: W_hh has shape {W_hh.shape}")
    letters = {"T": T, "B": B, "I": I, "H": H, "P": P, "GH": G * H, "H3": 3 * H}
    for name, shape in layout:
        if name not in arrays:  # an extra weight the forward did not have
            continue
        a = arrays[name]
        if (type(a) is not np.ndarray or a.dtype != dtype or not a.flags.c_contiguous
                or a.shape != tuple([letters[d] for d in shape])):
            want = tuple(letters[d] for d in shape)
            got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
            raise ValueError(f"cache is damaged: {name} must be a C-contiguous {dtype} array of "
                             f"shape {want}, got {got}")
    lengths = cache.lengths
    if lengths is not None:
        if not (type(lengths) is np.ndarray and lengths.dtype == np.int64
                and lengths.shape == (B,) and lengths.flags.c_contiguous):
            raise ValueError(f"cache is damaged: lengths must be int64 of shape ({B},)")
        if B and (lengths.min() < 0 or lengths.max() > T):
            raise ValueError(f"cache is damaged: lengths must be in [0, T] = [0, {T}]")
    if type(cache.has_b_ih) is not bool or type(cache.has_b_hh) is not bool:
        raise ValueError("cache is damaged: has_b_ih and has_b_hh must be booleans")
    if cache.options.keys() != option_names:
        raise ValueError(f"cache is damaged: its options {sorted(cache.options)} are not "
                         f"the {cell} cell's {sorted(option_names)}")
    if option_names:
        check_options(cell, cache.options)
    if cache.backend not in BACKENDS:
        raise ValueError(f"cache is damaged: backend {cache.backend!r}")
    if cache.compute is not None and (cache.compute != "bfloat16" or dtype != np.float32):
        raise ValueError(f"cache is damaged: compute {cache.compute!r} with {dtype} arrays")
    return T, B, H, P, dtype


def check_backward(cell, cache, upstream):
    """Check a backward call: ``cache`` from a training forward of ``cell``;
    ``upstream`` the upstream gradients in the spec's order (d_out, d_h_n
    [, d_c_n]; None means zeros).  Returns them checked, as a tuple."""
    if cache is None:
        raise ValueError("cache is None: the forward ran with training=False, which saves "
                         "nothing for backward; run it with training=True")
    if not isinstance(cache, ForwardCache):
        raise TypeError(f"cache must be the cache returned by {cell}_forward, "
                        f"got {type(cache).__name__}")
    if cache.cell != cell:
        raise ValueError(f"cache comes from {cache.cell}_forward, not {cell}_forward")
    T, B, H, P, dtype = _check_cache(cell, cache)
    spec = CELLS[cell]
    states = _state_shapes(spec, B, H, P)
    checked = [_optional(upstream[0], "d_out", (T, B, P), states[0][1].replace("(B", "(T, B"),
                         dtype)]
    for value, name, (shape, spelled) in zip(upstream[1:], spec.upstream[1:], states):
        checked.append(_optional(value, name, shape, spelled, dtype))
    return checked
