"""The layer-normalised cells' checks, cache and gradient tuples, in one place
for the reference (``fastrnn.reference``) and the fast functions
(``fastrnn.layernorm``).

A layer-normalised cell (Ba, Kiros and Hinton 2016, in the form of
PyTorch's benchmark of custom cells, ``benchmarks/fastrnns/custom_lstms.py``)
normalises each row of its input product and of its recurrent product (over
all G*H gate columns together), and the LSTM also its cell state (over H),
each LayerNorm with its own gain ``gamma_*`` and bias ``beta_*``; the
products have no bias of their own (the betas are the biases).  What each
cell takes is in ``NORM_CELLS``; the equations are in ``fastrnn.reference``.
"""
from collections import namedtuple
from types import MappingProxyType

import numpy as np

from ._validation import _as_array, _check_float, _optional, _required, check_lengths


class NormCell:
    """One layer-normalised cell: its function names' stem (``name``), the
    plain cell whose gate arithmetic it normalises (``base``), its gates,
    states, and its LayerNorms ``{name: width}`` (width "GH": the G*H gate
    columns, "H": the state), each with the parameters gamma_<name>,
    beta_<name>."""

    def __init__(self, name, base, title, gates, states, norms, saved):
        self.name, self.base, self.title = name, base, title
        self.gates, self.G, self.states = gates, len(gates), states
        self.norms = norms
        self.params = tuple(f"{p}_{n}" for n in norms for p in ("gamma", "beta"))
        self.initial = tuple(s + "0" for s in states)
        self.inputs = ("x",) + self.initial + ("W_ih", "W_hh") + self.params
        self.grads = tuple("d" + n for n in self.inputs)
        self.saved = saved  # what the forward keeps for its backward, besides x, h0.., W_ih, W_hh


NORM_CELLS = {
    "layernorm_lstm": NormCell(
        "layernorm_lstm", "lstm", "LayerNorm LSTM", ("i", "f", "g", "o"), ("h", "c"),
        {"i": "GH", "h": "GH", "c": "H"},
        # gates: i, f, g, o activated; c: c_t (after its LayerNorm); *_hat and
        # rstd_*: each LayerNorm's normalised rows and 1 / sqrt(var + eps).
        ("out", "gates", "c", "i_hat", "rstd_i", "h_hat", "rstd_h", "c_hat", "rstd_c")),
    "layernorm_gru": NormCell(
        "layernorm_gru", "gru", "LayerNorm GRU", ("r", "z", "n"), ("h",),
        {"i": "GH", "h": "GH"},
        # hn: the recurrent product's n block after its LayerNorm (what r multiplies).
        ("out", "gates", "hn", "i_hat", "rstd_i", "h_hat", "rstd_h")),
}

GRADS = {}
for _name, _cell in NORM_CELLS.items():
    GRADS[_name] = namedtuple(_cell.title.replace(" ", "") + "Grads", _cell.grads,
                              module="fastrnn")
    GRADS[_name].__doc__ = (
        f"Gradients of the {_cell.title}, as ``{_name}_backward`` returns them: "
        f"{', '.join(_cell.grads)}, each shaped like the array it is the gradient of; a "
        "LayerNorm gain or bias that was None (no learned affine) has a None gradient.")
LayerNormLSTMGrads, LayerNormGRUGrads = GRADS["layernorm_lstm"], GRADS["layernorm_gru"]


class NormChecked:
    """A checked forward call: arrays as given (not copied; None where the
    caller passed None), the sizes and eps."""

    __slots__ = ("cell", "x", "states", "W_ih", "W_hh", "params", "lengths", "eps",
                 "T", "B", "I", "H", "G", "dtype")

    def __init__(self, **fields):
        for k, v in fields.items():
            setattr(self, k, v)


def check_eps(eps):
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, (int, float, np.floating,
                                                                 np.integer)):
        raise TypeError(f"eps must be a positive number, got {eps!r}")
    if not (eps > 0 and np.isfinite(eps)):
        raise ValueError(f"eps must be a positive, finite number, got {eps!r}")
    return float(eps)


def check_norm_forward(cell, x, states, W_ih, W_hh, params, lengths, eps, training):
    """Check a forward call of the layer-normalised ``cell``: x (T, B, I)
    float32 or float64, the states (B, H) or None, W_ih (G*H, I), W_hh
    (G*H, H), each LayerNorm's gamma and beta ((G*H,) or (H,)) or None,
    lengths, eps > 0; one dtype for every array (x's)."""
    spec = NORM_CELLS[cell]
    G = spec.G
    x_given = x
    x = _as_array(x, "x")
    _check_float(x, "x", value=x_given)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (T, B, I) (time-major; rank 3), got shape {x.shape}")
    T, B, I = x.shape  # noqa: E741
    if I < 1:
        raise ValueError(f"x must have I >= 1 features, got shape (T, B, I) = {x.shape}")
    dtype = x.dtype
    W_hh_given = W_hh
    if W_hh is None:
        raise TypeError("W_hh must be an array of floats, got None")
    W_hh = _as_array(W_hh, "W_hh")
    _check_float(W_hh, "W_hh", dtype, W_hh_given)
    if W_hh.ndim != 2 or W_hh.shape[1] < 1 or W_hh.shape[0] != G * W_hh.shape[1]:
        raise ValueError(f"W_hh must have shape ({G}*H, H) with H >= 1, got {W_hh.shape}")
    H = W_hh.shape[1]
    W_ih = _required(W_ih, "W_ih", (G * H, I), f"({G}*H, I)", dtype)
    states = tuple(_optional(s, name, (B, H), "(B, H)", dtype)
                   for s, name in zip(states, spec.initial))
    widths = {"GH": ((G * H,), f"({G}*H,)"), "H": ((H,), "(H,)")}
    checked_params = []
    for value, name in zip(params, spec.params):
        shape, spelled = widths[spec.norms[name.split("_", 1)[1]]]
        checked_params.append(_optional(value, name, shape, spelled, dtype))
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"training must be True or False, got {training!r}")
    return NormChecked(cell=cell, x=x, states=states, W_ih=W_ih, W_hh=W_hh,
                       params=tuple(checked_params),
                       lengths=None if lengths is None else check_lengths(lengths, T, B),
                       eps=check_eps(eps), T=T, B=B, I=I, H=H, G=G, dtype=dtype)


class NormCache:
    """What a training forward of a layer-normalised cell saves for its
    backward: ``cell``, ``backend``, ``lengths`` ((B,) int64 or None),
    ``eps``, ``given`` (the names of the LayerNorm parameters that were not
    None) and ``arrays`` (x, the initial states, W_ih, W_hh, every LayerNorm
    parameter (ones and zeros for those not given) and what
    ``NORM_CELLS[cell].saved`` names), each owned by the cache.  Read-only;
    arrays also read as attributes (``cache.out``)."""

    __slots__ = ("cell", "backend", "lengths", "eps", "given", "arrays")

    def __init__(self, cell, backend, *, lengths, eps, given, arrays):
        for name, value in (("cell", cell), ("backend", backend), ("lengths", lengths),
                            ("eps", eps), ("given", frozenset(given)),
                            ("arrays", MappingProxyType(dict(arrays)))):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"a NormCache is read-only (setting {name!r}): run the forward "
                             "again rather than editing its cache")

    def __getattr__(self, name):
        arrays = object.__getattribute__(self, "arrays")
        if name in arrays:
            return arrays[name]
        raise AttributeError(f"a {self.cell} cache has no {name!r}")

    def __reduce__(self):
        return (_rebuild, (self.cell, self.backend, self.lengths, self.eps, set(self.given),
                           dict(self.arrays)))

    def read_only_out(self):
        out = self.arrays["out"].view()
        out.flags.writeable = False
        return out

    def __repr__(self):
        T, B, _ = self.arrays["x"].shape
        return (f"NormCache(cell={self.cell!r}, backend={self.backend!r}, T={T}, B={B}, "
                f"H={self.arrays['W_hh'].shape[1]}, dtype={self.arrays['x'].dtype})")


def _rebuild(cell, backend, lengths, eps, given, arrays):
    return NormCache(cell, backend, lengths=lengths, eps=eps, given=given, arrays=arrays)


def filled_params(p):
    """Every LayerNorm parameter of the checked call ``p`` as an array of its
    dtype: a gamma that was None is ones, a beta zeros (a LayerNorm without
    a learned affine)."""
    spec = NORM_CELLS[p.cell]
    widths = {"GH": p.G * p.H, "H": p.H}
    filled = []
    for value, name in zip(p.params, spec.params):
        if value is None:
            width = widths[spec.norms[name.split("_", 1)[1]]]
            value = (np.ones if name.startswith("gamma") else np.zeros)(width, p.dtype)
        filled.append(value)
    return filled


def given_params(p):
    return {name for value, name in zip(p.params, NORM_CELLS[p.cell].params)
            if value is not None}


def check_norm_backward(cell, cache, upstream):
    """Check a backward call: ``cache`` from a training forward of ``cell``,
    the upstream gradients (d_out (T, B, H), d_h_n and for the LSTM d_c_n
    (B, H)), each None or of the forward's dtype and shape."""
    spec = NORM_CELLS[cell]
    if cache is None:
        raise ValueError(f"cache is None: {cell}_backward needs the cache of a forward run "
                         "with training=True")
    if not isinstance(cache, NormCache):
        raise TypeError(f"cache must be the cache a {cell}_forward returned, got "
                        f"{type(cache).__name__}")
    if cache.cell != cell:
        raise ValueError(f"cache is from {cache.cell}_forward, not {cell}_forward")
    x, out = cache.arrays["x"], cache.arrays["out"]
    T, B, H = out.shape
    names = ("d_out",) + tuple("d_" + s + "_n" for s in spec.states)
    shapes = [((T, B, H), "(T, B, H)")] + [((B, H), "(B, H)")] * len(spec.states)
    return tuple(_optional(u, name, shape, spelled, x.dtype)
                 for u, name, (shape, spelled) in zip(upstream, names, shapes))


def make_norm_grads(cache, arrays, param_grads):
    """The gradient tuple: ``arrays`` dx, d(states), dW_ih, dW_hh; then each
    LayerNorm parameter's gradient, None for one that was not given."""
    spec = NORM_CELLS[cache.cell]
    return GRADS[cache.cell](*arrays, *[d if name in cache.given else None
                                        for name, d in zip(spec.params, param_grads)])

