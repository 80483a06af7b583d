"""Layers in PyTorch's layering, on the functional driver (no kernels of their own).

- a **direction**: one cell over a sequence (:func:`direction_forward`); the
  reverse direction reads each sequence backwards from its own last real step
  (the input is reversed within each length, run with the same lengths, and
  the output reversed back), so padded positions output zeros and its final
  state is the one at the sequence's start, as with PyTorch's packed sequences;
- a **stack** (:class:`_Recurrent`'s ``_stack_forward``): layers of one or two
  directions, the next layer reading their concatenated outputs, with dropout
  between layers in training;
- the **module shell** (:class:`_Module`): parameters under PyTorch's names,
  state dicts and files, train/eval, batch-first, the states as PyTorch takes
  and returns them (an array, or the LSTM's tuple (h, c)).

Inside, the state of a cell is always the tuple of its states in the order of
its spec (``fastrnn._spec``), so nothing here depends on which cell it is.
A call is checked once at the shell; the directions receive checked arrays.
"""
import inspect
import json
import warnings
from types import SimpleNamespace

import numpy as np

from . import _backends, _driver
from ._spec import CELLS
from ._validation import (Checked, as_generator, check_bool, check_compute_dtype, check_dtype,
                          check_lengths, check_low_precision_options, check_options,
                          check_positive_int, convert, given, is_number)
from .quantization import QuantizedWeight, quantize_weight

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "quantize_dynamic"]

# Every option keyword of any cell: a file saved by a layer of another version
# may list one its cell does not take.
_OPTION_KEYS = {key for spec in CELLS.values() for key in spec.options}


# A saved int8 layer's int8 weights and scales: entries named these + the weight's name.
_INT8, _INT8_SCALE = "__int8__", "__int8_scale__"


def _param_kind(name):
    """A weight's PyTorch name from its name in the functions: W_ih ->
    weight_ih, b_hh -> bias_hh, W_ch (the LSTM's peepholes) -> weight_ch;
    other names (a LayerNorm's gamma_i, a user cell's own) as they are."""
    if name[:2] in ("W_", "b_"):
        return {"W": "weight", "b": "bias"}[name[0]] + name[1:]
    return name


def _spec_of(cell):
    """What a layer's ``_cell`` is: a built-in cell's name (its entry in
    ``fastrnn._spec.CELLS``, run by the functional driver), or a cell that
    runs itself (:class:`DirectionCell`)."""
    return CELLS[cell] if isinstance(cell, str) else cell


class DirectionCell:
    """A cell that is not in ``fastrnn._spec.CELLS`` but runs in these layers
    (the layer-normalised cells, a user's cells): what a layer needs to know
    of it and how it runs one direction.  Subclasses set

    - ``states``, ``initial`` (``h0``...), ``upstream`` (``d_out``,
      ``d_h_n``...), ``G``, ``inputs`` (x, the initial states, then the
      weights in the order the forward takes them), ``options`` (keyword
      options of the forward, e.g. ``eps``);

    and define ``check_options(options)``, ``weight_shape(name, I, H, bias)``
    (None for a weight the layer does not have), ``init(name)`` ("uniform":
    as PyTorch, U(-1/sqrt(H), 1/sqrt(H)); "ones"; "zeros"), and
    ``forward(x, states, weights, lengths, options, training, backend)`` ->
    (out, finals, cache), ``backward(d_out, d_finals, cache)`` -> a tuple
    (dx, the initial states' gradients, the weights')."""

    options = ()


class _Fixed:
    """An attribute the constructor sets once: it fixes the parameters'
    shapes (or their dtype), so setting it on a built layer is an error, not
    a layer whose attributes disagree with its arrays."""

    def __set_name__(self, owner, name):
        self.name, self.key = name, "_fixed_" + name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        try:
            return obj.__dict__[self.key]
        except KeyError:
            raise AttributeError(self.name) from None

    def __set__(self, obj, value):
        if self.key in obj.__dict__:
            raise AttributeError(f"{self.name} is fixed when a {type(obj).__name__} is built: "
                                 f"build a new one")
        obj.__dict__[self.key] = value


def _check_dropout(p):
    """PyTorch's dropout argument: a number in [0, 1] (1 zeroes what passes)."""
    if not is_number(p) or not 0 <= p <= 1:
        raise ValueError(f"dropout must be a number in [0, 1], got {p!r}")
    return float(p)


# A bound on a stack's depth, so that a typo (10**8) is an error rather than a
# constructor that runs until memory runs out; deeper than any RNN in use.
MAX_LAYERS = 10_000


def _stack_states(per_slot):
    """[(h, c) of each layer and direction] -> (h (L*D, B, H), c (L*D, B, H)):
    np.stack, without its cost (a few microseconds) for the common single slot."""
    if len(per_slot) == 1:
        return tuple([s[None] for s in per_slot[0]])
    return tuple([np.stack(s) for s in zip(*per_slot)])


def reverse_within_lengths(a, lengths):
    """a (T, B, ...) with each sequence's first lengths[b] steps reversed and
    its padding left in place (None: every sequence reversed whole).  It is its
    own inverse."""
    if lengths is None:
        return a[::-1]
    T, B = a.shape[:2]
    t = np.arange(T)[:, None]
    src = np.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)  # (T, B)
    return a[src, np.arange(B)[None, :]]


# --- a direction: one cell over a sequence --------------------------------------


def direction_forward(cell, x, states, weights, lengths, options, training, backend, *,
                      reverse=False, copy_x=True, compute=None):
    """Run ``cell`` over x (T, B, I) from ``states`` (a tuple of (B, H) or None).

    ``weights`` is (W_ih, W_hh, b_ih, b_hh, *extras) (biases and the
    spec's extra weights may be None); every argument has been checked and
    ``backend`` resolved; ``compute``: the products' precision (``compute_dtype``).
    Returns ``(out (T, B, H), finals (tuple of (B, H)), cache)``.
    """
    if reverse:
        x = reverse_within_lengths(x, lengths)
    if not isinstance(cell, str):  # a DirectionCell: it runs itself
        out, finals, cache = cell.forward(x, states, weights, lengths, options, training,
                                          backend)
        return (reverse_within_lengths(out, lengths) if reverse else out), finals, cache
    W_ih, W_hh, b_ih, b_hh, *extras = weights
    p = Checked.trusted(cell, x, states, W_ih, W_hh, b_ih, b_hh, lengths, options, tuple(extras))
    out, *finals, cache = _driver.forward(p, training, backend, copy_x=copy_x, compute=compute)
    return (reverse_within_lengths(out, lengths) if reverse else out), finals, cache


def direction_backward(cell, d_out, d_finals, cache, lengths, *, reverse=False):
    """Backpropagate through :func:`direction_forward`: returns (dx, grads)."""
    if reverse:
        d_out = reverse_within_lengths(d_out, lengths)
    if isinstance(cell, str):
        grads = _driver.backward(cell, (d_out, *d_finals), cache)
    else:
        grads = cell.backward(d_out, d_finals, cache)
    return (reverse_within_lengths(grads[0], lengths) if reverse else grads[0]), grads


# --- the module shell ------------------------------------------------------------


class _Module:
    """Parameters under PyTorch's names, training/eval modes, state dicts and
    .npz files, and the states as PyTorch passes them: what the layers and the
    cells share."""

    _cell = None  # the spec name: "rnn", "lstm" or "gru"
    # The gated cells' candidate is tanh; the Elman cell's option overrides this.
    nonlinearity = "tanh"
    input_size, hidden_size, bias, dtype = _Fixed(), _Fixed(), _Fixed(), _Fixed()

    def _init_module(self, hidden_size, *, options, dtype, backend, seed, compute_dtype,
                     extras=None):
        """``extras``: {name: bool}, which of the spec's extra weights the
        module has (e.g. the LSTM's W_ch: ``peepholes``)."""
        self._spec = _spec_of(self._cell)
        self._has = {"b_ih": self.bias, "b_hh": self.bias, **(extras or {})}
        # As PyTorch: a layer needs hidden_size >= 1, a cell may have none.
        self.hidden_size = check_positive_int(hidden_size, "hidden_size",
                                              least=0 if self._kind == "cell" else 1)
        self._options = (check_options(self._cell, options) if isinstance(self._cell, str)
                         else self._spec.check_options(options))
        for key, value in self._options.items():
            setattr(self, key, value)  # e.g. RNN.nonlinearity, as PyTorch names it
        if backend is not None:
            _backends.resolve(backend)  # a ValueError naming the choices
        self.dtype = check_dtype(dtype)
        self._int8 = None  # {name: QuantizedWeight} once quantize_dynamic made it
        self.compute_dtype = compute_dtype
        self.backend = backend
        self.training = True
        self.grads = {}
        self._rng = as_generator(seed)
        # PyTorch's initialisation: every parameter uniform(-1/sqrt(H), 1/sqrt(H)).
        k = 1.0 / np.sqrt(max(self.hidden_size, 1))
        inits = {}
        if not isinstance(self._cell, str):
            for names in self._slot_names():
                inits.update(zip(names, map(self._spec.init, self._weight_names)))
        self._params = {}
        for name, shape in self._shapes().items():
            how = inits.get(name, "uniform")
            value = (self._rng.uniform(-k, k, shape) if how == "uniform" else
                     np.ones(shape) if how == "ones" else np.zeros(shape))
            self._params[name] = value.astype(self.dtype)

    @property
    def compute_dtype(self):
        """The precision of the products: None (the module's dtype) or
        "bfloat16" (float32 modules: bf16 operands, float32 accumulation, as
        ``fastrnn.lstm_forward``'s ``compute_dtype``).  May be changed."""
        return self._compute_dtype

    @compute_dtype.setter
    def compute_dtype(self, value):
        compute = check_compute_dtype(value, self.dtype)
        if compute is not None and not isinstance(self._cell, str):
            raise ValueError(f"a {type(self).__name__} computes in its dtype: compute_dtype "
                             f"must be None, got {value!r}")
        if compute is not None:
            check_low_precision_options(self._cell, self._options,
                                        [name for name, has in self._has.items() if has],
                                        compute)
        if compute != "int8" and getattr(self, "_int8", None):
            # Back to float compute: the dequantized weights become the
            # layer's own, writable again.
            self._int8 = None
            self._params = {name: p.copy() for name, p in self._params.items()}
        self._compute_dtype = compute

    def _run_weights(self, names):
        """One slot's weights (``names``: W_ih, W_hh, b_ih, b_hh, extras) as
        the forward takes them.  int8 compute takes W_ih and W_hh as
        QuantizedWeights: the layer's own, quantized once by
        :func:`quantize_dynamic`, or else quantized now from its float
        weights; and runs inference only."""
        weights = tuple(map(self._params.get, names))
        if self._compute_dtype != "int8":
            return weights
        if self.training:
            raise ValueError(f"{type(self).__name__} has compute_dtype='int8', which runs "
                             f"inference only: call .eval() first; to train, train in "
                             f"float32 or bfloat16 and quantize (fastrnn.quantize_dynamic)")
        frozen = self._int8 or {}
        quantized = tuple(frozen[name] if name in frozen else quantize_weight(w)
                          for name, w in zip(names[:2], weights[:2]))
        return quantized + weights[2:]

    def _slot_names(self):
        """The weight names of each layer and direction (a cell: its one slot)."""
        return self._slots if hasattr(self, "_slots") else [self._slot]

    def _freeze_int8(self, quantized=None):
        """Make the layer's W_ih and W_hh int8 for good: ``quantized`` {name:
        QuantizedWeight} (a file's), or each quantized now.  The float
        weights become their dequantized values, read-only, so that they say
        what the layer computes and cannot drift from it."""
        names = [name for slot in self._slot_names() for name in slot[:2]]
        quantized = quantized or {name: quantize_weight(self._params[name]) for name in names}
        for name in names:
            w = quantized[name].dequantize()
            w.flags.writeable = False
            self._params[name] = w
        self._int8 = dict(quantized)

    @property
    def _weight_names(self):
        """One layer's weights as the functions name them: W_ih, W_hh, b_ih,
        b_hh, then the spec's extra weights (the LSTM's W_ch)."""
        spec = _spec_of(self._cell)
        return spec.inputs[1 + len(spec.states):]

    @property
    def _out_size(self):
        """The width of h and of each direction's output: the LSTM's
        proj_size where it projects, else hidden_size."""
        return getattr(self, "proj_size", 0) or self.hidden_size

    def _weight_shapes(self, I):  # noqa: E741
        """The shapes of one layer's weights (``_weight_names``) for input
        size I, None for those the module does not have (biases without
        bias, peepholes without peepholes, no projection without proj_size)."""
        H, P = self.hidden_size, self._out_size
        if not isinstance(self._cell, str):
            return tuple(self._spec.weight_shape(name, I, H, self.bias)
                         for name in self._weight_names)
        GH = self._spec.G * H
        shapes = {"W_ih": (GH, I), "W_hh": (GH, P), "b_ih": (GH,), "b_hh": (GH,),
                  **{name: tuple({"H": H, "H3": 3 * H, "P": P}[d] for d in shape)
                     for name, (shape, _) in self._spec.extras.items()}}
        return tuple(shapes[name] if self._has.get(name, name not in self._spec.extras)
                     else None for name in self._weight_names)

    # --- states as PyTorch passes them --------------------------------------------

    def _hx_names(self, names):
        """The states' names in messages: PyTorch calls a single state hx."""
        return names if len(names) > 1 else ("hx",)

    def _from_hx(self, hx, names):
        """hx as PyTorch passes it (None, an array, or for a cell with several
        states a tuple of them, e.g. the LSTM's (h, c)) -> the tuple of the
        cell's states (each None when hx is None)."""
        n = len(self._spec.states)
        if hx is None:
            return (None,) * n
        if n == 1:
            return (hx,)
        if not isinstance(hx, (tuple, list)) or len(hx) != n:
            raise TypeError(f"hx of an {type(self).__name__} must be a tuple "
                            f"({', '.join(names)}) or None")
        return tuple(hx)

    @staticmethod
    def _as_hx(states):
        """The tuple of the cell's states -> PyTorch's form: the one array, or the tuple."""
        return states if len(states) > 1 else states[0]

    def _own_states(self, values, names):
        """Upstream gradients as the public backward takes them, e.g. (d_h_n,
        d_c_n) -> those of this cell's states; the others must be None."""
        n = len(self._spec.states)
        for name, value in zip(names[n:], values[n:]):
            if value is not None:
                raise TypeError(f"{name} is the gradient of a cell state; a "
                                f"{type(self).__name__} has no cell state")
        return values[:n]

    def _check_array(self, value, name, shape, spelled):
        """value (None allowed) of the module's dtype and ``shape`` (``spelled`` in letters)."""
        if value is None:
            return None
        arr = self._as_array(value, name)
        if arr.shape != shape:
            raise ValueError(f"{name} must have shape {spelled} = {shape}, got {arr.shape}")
        return arr

    def _as_array(self, value, name):
        """value as an array of the module's dtype (a TypeError naming what was passed)."""
        arr = np.asarray(value)
        if arr.dtype != self.dtype:
            raise TypeError(f"{name} {given(value, arr)} but the {self._kind} has dtype "
                            f"{self.dtype}; pass {convert(value, name, self.dtype)}")
        return arr

    def _check_x(self, x, spelled, ndim):
        if x.ndim != ndim or x.shape[-1] != self.input_size:
            raise ValueError(f"x must have shape {spelled} with I = input_size = "
                             f"{self.input_size}, got {x.shape}")
        return x

    # --- parameters ---------------------------------------------------------

    @classmethod
    def _config_keys(cls):
        """The constructor arguments ``save`` writes (``_config``'s keys)."""
        return set(cls._CONFIG) | set(_spec_of(cls._cell).options)

    def _config(self):
        """The constructor arguments that rebuild this module (``save`` writes them)."""
        config = {name: getattr(self, name) for name in self._CONFIG}
        return {**config, **self._options, "dtype": self.dtype.name,
                "compute_dtype": self.compute_dtype}

    def __repr__(self):
        """As PyTorch writes a module: the sizes, then what differs from the
        defaults, e.g. ``LSTM(8, 32, num_layers=2, bidirectional=True)``."""
        defaults = {name: p.default for name, p in inspect.signature(type(self)).parameters.items()}
        config = {**self._config(), "backend": self.backend}
        parts = [str(config.pop("input_size")), str(config.pop("hidden_size"))]
        for key, value in config.items():
            default = defaults.get(key)
            if key == "dtype":
                default = np.dtype(default).name
            if value != default:
                parts.append(f"{key}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"

    def named_parameters(self):
        """[(name, array)] in PyTorch's order; the arrays are the layer's own."""
        return list(self._params.items())

    def parameters(self):
        return list(self._params.values())

    def state_dict(self):
        """{name: copy of the parameter}, PyTorch's names."""
        return {name: p.copy() for name, p in self._params.items()}

    def load_state_dict(self, state):
        """Load parameters from a mapping of array-likes (a PyTorch state_dict
        converted with ``.numpy()`` loads as it is).  Values must be real
        numbers, floating point or integer, that fit the layer's dtype; they
        are converted to it.  Missing, unexpected or mis-shaped entries, other
        kinds of values (complex, bool, strings, dates) and values beyond the
        dtype's range raise a ValueError or TypeError naming them; nothing is
        changed then."""
        if not hasattr(state, "keys"):
            raise TypeError(f"state_dict must be a mapping of names to arrays, got "
                            f"{type(state).__name__}")
        shapes = self._shapes()
        missing = [n for n in shapes if n not in state]
        unexpected = [n for n in state if n not in shapes]
        if missing or unexpected:
            raise ValueError(f"state_dict does not match this {type(self).__name__}: "
                             f"missing {missing}, unexpected {unexpected}")
        loaded = {}
        for name, shape in shapes.items():
            try:
                value = np.asarray(state[name])
            except (TypeError, ValueError) as exc:
                raise TypeError(f"state_dict[{name!r}] must be an array of numbers") from exc
            if value.dtype.kind not in "fiu":
                raise TypeError(f"state_dict[{name!r}] must hold real numbers (floating point "
                                f"or integer), got dtype {value.dtype}")
            if value.shape != shape:
                raise ValueError(f"state_dict[{name!r}] must have shape {shape}, "
                                 f"got {value.shape}")
            with np.errstate(over="ignore"):
                arr = np.array(value, dtype=self.dtype, order="C")
            if value.dtype.kind == "f" and not np.array_equal(np.isinf(arr), np.isinf(value)):
                raise ValueError(f"state_dict[{name!r}] has values beyond {self.dtype}'s range "
                                 f"(they would become inf)")
            loaded[name] = arr
        self._params.update(loaded)
        if self._int8:
            self._freeze_int8()  # the new weights, quantized

    def save(self, path):
        """Parameters and constructor arguments to a ``.npz`` file; a layer
        made by :func:`quantize_dynamic` also its int8 weights and their
        scales, which load back as they are."""
        int8 = {}
        for name, w in (self._int8 or {}).items():
            int8[_INT8 + name], int8[_INT8_SCALE + name] = w.q, w.scale
        np.savez(path, __config__=np.array(json.dumps({"class": type(self).__name__,
                                                        **self._config()})),
                 **self._params, **int8)

    @classmethod
    def load(cls, path, *, backend=None):
        """A layer saved by :meth:`save`.  A file that is not one (empty,
        truncated, another format, another class, edited entries) raises a
        ValueError naming the file and what is wrong; a missing file, the
        usual FileNotFoundError."""
        try:
            f = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise
        except Exception as exc:  # BadZipFile, EOFError, pickled data refused, ...
            raise ValueError(f"{path}: not a file saved by {cls.__name__}.save ({exc})") from exc
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise ValueError(f"{path}: a single array, not a file saved by {cls.__name__}.save")
        with f:
            if "__config__" not in f.files:
                raise ValueError(f"{path}: no __config__ entry, so not saved by "
                                 f"{cls.__name__}.save")
            try:
                config = json.loads(str(f["__config__"]))
                state = {k: f[k] for k in f.files if k != "__config__"}
            except Exception as exc:  # a truncated member, edited JSON
                raise ValueError(f"{path}: cannot be read back ({type(exc).__name__}: "
                                 f"{exc})") from exc
        if not isinstance(config, dict):
            raise ValueError(f"{path}: __config__ is not a mapping of constructor arguments")
        name = config.pop("class", None)
        if name != cls.__name__:
            raise ValueError(f"{path} holds a {name}, not a {cls.__name__}")
        for key in _OPTION_KEYS - set(_spec_of(cls._cell).options):
            config.pop(key, None)
        config.setdefault("compute_dtype", None)  # files saved before it existed
        if "reset_after" in _spec_of(cls._cell).options:
            config.setdefault("reset_after", True)  # likewise (a file without nonlinearity
            # is refused: it is as old as the RNN, so the key was lost, not never written)
        if "peepholes" in cls._CONFIG:
            config.setdefault("peepholes", False)  # likewise
        if "proj_size" in cls._CONFIG:
            config.setdefault("proj_size", 0)  # likewise
        expected = cls._config_keys()
        if set(config) != expected:
            raise ValueError(f"{path}: __config__ has {sorted(config)}, but a {cls.__name__} "
                             f"is saved with {sorted(expected)}")
        int8 = {}  # a saved int8 layer's {name: (int8 values, scales or None)}
        for key in [k for k in state if k.startswith(_INT8)]:
            name = key[len(_INT8):]
            int8[name] = state.pop(key), state.pop(_INT8_SCALE + name, None)
        try:
            layer = cls(**config, backend=backend)
            layer.load_state_dict(state)
            if int8:
                if config["compute_dtype"] != "int8" or any(s is None for _, s in int8.values()):
                    raise ValueError("its int8 weights are not those of an int8 layer")
                layer._freeze_int8({name: QuantizedWeight(q, s) for name, (q, s) in int8.items()})
                layer.eval()
        except (TypeError, ValueError, KeyError) as exc:
            raise ValueError(f"{path}: {exc}") from exc
        return layer

    # --- modes ----------------------------------------------------------------

    def train(self, mode=True):
        """Training mode (forward saves what backward needs, dropout is on)."""
        self.training = check_bool(mode, "mode")
        if not self.training:
            self._forget()
        return self

    def eval(self):
        """Inference mode: forward stores nothing and dropout is off."""
        return self.train(False)


class _Recurrent(_Module):
    """What RNN, LSTM and GRU share: the stack and the shell; see :class:`RNN`
    for the arguments."""

    _kind = "layer"
    _CONFIG = ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
               "bidirectional", "dtype", "compute_dtype")

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, options, dtype=np.float32,
                 backend=None, seed=None, compute_dtype=None, extras=None):
        self.input_size = check_positive_int(input_size, "input_size")
        self.num_layers = check_positive_int(num_layers, "num_layers")
        if self.num_layers > MAX_LAYERS:
            raise ValueError(f"num_layers must be at most {MAX_LAYERS}, got {num_layers}")
        self.dropout = dropout
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so "
                          "non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={dropout} and num_layers=1", UserWarning, stacklevel=3)
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self._tape = None
        # The parameter names of each (layer, direction), in the order of h_n's rows.
        self._slots = [self._names(layer, sfx)
                       for layer in range(self.num_layers) for sfx in self._suffixes()]
        self._init_module(hidden_size, options=options, dtype=dtype, backend=backend, seed=seed,
                          compute_dtype=compute_dtype, extras=extras)

    num_layers, batch_first, bidirectional = _Fixed(), _Fixed(), _Fixed()

    @property
    def dropout(self):
        """The probability of zeroing each value passed between layers in
        training mode, in [0, 1] (checked when set)."""
        return self._dropout

    @dropout.setter
    def dropout(self, p):
        self._dropout = _check_dropout(p)

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    def _suffixes(self):
        return ("", "_reverse")[:self.num_directions]

    def _names(self, layer, sfx):
        """PyTorch's names of one layer and direction: weight_ih, weight_hh,
        bias_ih, bias_hh (then the LSTM's weight_ch for its peepholes and
        weight_hr for its projection)."""
        return tuple(f"{_param_kind(name)}_l{layer}{sfx}" for name in self._weight_names)

    def _load_slots(self, weights):
        """Load (W_ih, W_hh, b_ih, b_hh[, W_ch, W_hr]) for each layer and direction
        in the order of ``_slots`` (None for what the layer does not have):
        the importers' way in (fastrnn.onnx, fastrnn.keras), through
        load_state_dict's checks."""
        self.load_state_dict({name: value for names, values in zip(self._slots, weights)
                              for name, value in zip(names, values) if value is not None})

    def _weights(self, i):
        """(W_ih, W_hh, b_ih, b_hh, *extras) of layer and direction i (None
        for those it does not have: the biases without bias, ...)."""
        return tuple(map(self._params.get, self._slots[i]))

    def _shapes(self):
        """Parameter name -> shape, in PyTorch's order."""
        shapes = {}
        for i, names in enumerate(self._slots):
            layer = i // self.num_directions
            I = self.input_size if layer == 0 else self._out_size * self.num_directions  # noqa
            shapes.update((name, shape) for name, shape in zip(names, self._weight_shapes(I))
                          if shape is not None)
        return shapes

    def _forget(self):
        self._tape = None

    def _per_slot(self, states, names, B):
        """The states (each (L*D, B, H) or None; h (L*D, B, P) with a
        projection), checked -> a tuple of (B, H) states for each layer and
        direction."""
        n = self.num_layers * self.num_directions
        widths = [(self._out_size, "P" if self._out_size != self.hidden_size else "H")]
        widths += [(self.hidden_size, "H")] * (len(states) - 1)
        states = [self._check_array(s, name, (n, B, width),
                                    f"(num_layers * num_directions, B, {letter})")
                  for s, name, (width, letter) in zip(states, names, widths)]
        return [tuple(None if s is None else s[i] for s in states) for i in range(n)]

    # --- forward and backward ---------------------------------------------------

    def forward(self, x, hx=None, lengths=None):
        """Run the layer.  x (T, B, I) ((B, T, I) with batch_first); hx (L*D, B, H)
        or None (LSTM: a tuple (h0, c0)); lengths (B,) or None.

        Returns ``(output, h_n)`` (LSTM: ``(output, (h_n, c_n))``) with PyTorch's
        shapes: output (T, B, D*H) ((B, T, D*H) with batch_first), zero past each
        sequence's length; h_n (L*D, B, H).
        """
        x = self._as_array(x, "x")
        if x.ndim == 2:  # unbatched (T, I), as PyTorch: a batch of one, squeezed out again
            return self._unbatched_forward(x, hx, lengths)
        x = self._check_x(x, "(B, T, I)" if self.batch_first else "(T, B, I)", 3)
        if self.batch_first:
            x = x.transpose(1, 0, 2)
        T, B, _ = x.shape
        lengths = check_lengths(lengths, T, B)
        if hx is None:  # the common case, without the checks' calls
            states = [(None,) * len(self._spec.states)] * len(self._slots)
        else:
            names = self._hx_names(self._spec.initial)
            states = self._per_slot(self._from_hx(hx, names), names, B)
        output, finals, tape = self._stack_forward(x, states, lengths)
        self._tape = tape if self.training else None
        output = output.transpose(1, 0, 2) if self.batch_first else output
        if not output.flags.writeable:  # the cache holds it: the caller gets a copy to change
            output = output.copy()
        return output, self._as_hx(_stack_states(finals))

    __call__ = forward

    def _unbatched_forward(self, x, hx, lengths):
        axis = 0 if self.batch_first else 1  # where the batch axis goes in
        states = self._from_hx(hx, self._hx_names(self._spec.initial))
        for s, name in zip(states, self._hx_names(self._spec.initial)):
            if s is not None and np.ndim(s) != 2:
                raise ValueError(f"for unbatched input x (T, I), {name} must be unbatched too: "
                                 f"(num_layers * num_directions, H), got shape {np.shape(s)}")
        batched = tuple(None if s is None else np.asarray(s)[:, None] for s in states)
        output, finals = self.forward(np.expand_dims(x, axis),
                                      None if hx is None else self._as_hx(batched), lengths)
        if self._tape is not None:
            self._tape["unbatched"] = True
        finals = finals if isinstance(finals, tuple) else (finals,)
        return (np.take(output, 0, axis=axis),
                self._as_hx(tuple(f[:, 0] for f in finals)))

    def _stack_forward(self, x, states, lengths):
        """The layers and directions over x (T, B, I), checked; states per slot.
        Returns (output (T, B, D*H), finals per slot, tape for backward)."""
        backend = _backends.resolve(self.backend)
        tape = {"caches": [], "masks": [], "lengths": lengths}
        finals = []
        inp = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(self.num_directions):
                i = layer * self.num_directions + d
                weights = self._run_weights(self._slots[i])
                out, fin, cache = direction_forward(
                    self._cell, inp, states[i], weights, lengths, self._options, self.training,
                    backend, reverse=d == 1, copy_x=layer == 0,
                    compute=self.compute_dtype)
                outs.append(out)
                finals.append(fin)
                tape["caches"].append(cache)
            inp = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=2)
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                keep = 1.0 - self.dropout
                mask = (np.zeros(inp.shape, self.dtype) if keep == 0 else  # p = 1: all dropped
                        (self._rng.random(inp.shape) < keep).astype(self.dtype)
                        / self.dtype.type(keep))
                tape["masks"].append(mask)
                inp = inp * mask
        return inp, finals, tape

    def backward(self, d_output, d_h_n=None, d_c_n=None):
        """Backpropagate through the last training-mode forward.

        d_output has the shape of that forward's output; d_h_n (and, for the
        LSTM, d_c_n) (L*D, B, H) or None.  Returns ``(dx, dhx)`` (LSTM:
        ``(dx, (dh0, dc0))``) and stores every parameter's gradient in
        ``self.grads`` under the parameter's name.  One backward per forward.
        """
        tape = self._tape
        if tape is None:
            raise RuntimeError("backward needs a training-mode forward first (and one backward "
                               "per forward): call layer.train() and run forward again")
        d_finals = self._own_states((d_h_n, d_c_n), ("d_h_n", "d_c_n"))
        if tape.get("unbatched"):  # the forward's batch of one, and back
            axis = 0 if self.batch_first else 1
            up = [None if d is None else np.expand_dims(np.asarray(d), 1)
                  for d in (d_h_n, d_c_n)]
            tape["unbatched"] = False
            dx, dhx = self.backward(np.expand_dims(np.asarray(d_output), axis), *up)
            dhx = dhx if isinstance(dhx, tuple) else (dhx,)
            return np.take(dx, 0, axis=axis), self._as_hx(tuple(d[:, 0] for d in dhx))
        T, B, _ = tape["caches"][0].x.shape
        D, H = self.num_directions, self._out_size
        d_output = np.asarray(d_output)
        expected = (B, T, D * H) if self.batch_first else (T, B, D * H)
        if d_output.dtype != self.dtype:
            raise TypeError(f"d_output has dtype {d_output.dtype} but the layer has dtype "
                            f"{self.dtype}")
        if d_output.shape != expected:
            raise ValueError(f"d_output must have the output's shape {expected}, "
                             f"got {d_output.shape}")
        d_inp = d_output.transpose(1, 0, 2) if self.batch_first else d_output
        if d_h_n is None and d_c_n is None:
            d_finals = [d_finals] * len(self._slots)
        else:
            d_finals = self._per_slot(d_finals, self._spec.upstream[1:], B)
        self._tape = None
        dx, d_states = self._stack_backward(d_inp, d_finals, tape)
        dx = dx.transpose(1, 0, 2) if self.batch_first else dx
        return dx, self._as_hx(_stack_states(d_states))

    def _stack_backward(self, d_inp, d_finals, tape):
        """Backpropagate through _stack_forward; stores self.grads and returns
        (dx (T, B, I), the initial states' gradients per slot)."""
        lengths, caches, masks = tape["lengths"], tape["caches"], tape["masks"]
        D, H = self.num_directions, self._out_size  # H: each direction's output width
        grads = dict.fromkeys(self._params)  # the parameters' order; filled below
        k = len(self._spec.states)
        d_states = [None] * len(caches)
        for layer in reversed(range(self.num_layers)):
            dx = None
            for d in range(D):
                i = layer * D + d
                d_out = d_inp if D == 1 else d_inp[:, :, d * H:(d + 1) * H]
                gx, g = direction_backward(self._cell, d_out, d_finals[i], caches[i], lengths,
                                           reverse=d == 1)
                dx = gx if dx is None else dx + gx
                d_states[i] = g[1:1 + k]  # dh0[, dc0]
                # g's fields after dx and the states' are the weights' gradients
                grads.update((name, grad) for name, grad in zip(self._slots[i], g[1 + k:])
                             if name in grads)
            if layer > 0:
                d_inp = dx * masks[layer - 1] if masks else dx
        self.grads = grads
        return dx, d_states


class RNN(_Recurrent):
    """An Elman RNN layer with ``torch.nn.RNN``'s arguments, names and shapes.

    ``RNN(input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, *, dtype=np.float32,
    backend=None, seed=None, compute_dtype=None)``; ``seed`` is an int, None or
    a ``numpy.random.Generator`` (initialisation and dropout masks);
    ``compute_dtype="bfloat16"`` runs the products in bfloat16 (float32
    layers; see ``fastrnn.rnn_forward``), forward and backward.
    """

    _cell = "rnn"

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, *, dtype=np.float32,
                 backend=None, seed=None, compute_dtype=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, options={"nonlinearity": nonlinearity}, dtype=dtype,
                         backend=backend, seed=seed, compute_dtype=compute_dtype)


class LSTM(_Recurrent):
    """An LSTM layer with ``torch.nn.LSTM``'s arguments, names and shapes.

    ``forward`` takes and returns the state as a tuple ``(h, c)``.
    ``proj_size=P`` (0 < P < hidden_size, as PyTorch's) projects h to P
    features (``fastrnn.lstm_forward``'s ``W_hr``): a parameter
    ``weight_hr_l{k}[_reverse]`` of shape (P, H) per layer and direction,
    ``weight_hh`` (4*H, P), h0 and h_n (L*D, B, P), the output (T, B, D*P),
    c0 and c_n still (L*D, B, H); exactly PyTorch's LSTM with ``proj_size``.
    ``peepholes=True`` adds ONNX's peepholes (``fastrnn.lstm_forward``'s
    ``W_ch``): a parameter ``weight_ch_l{k}[_reverse]`` of shape (3*H,) per
    layer and direction, blocks i, f, o, initialised like the others.
    PyTorch has no such LSTM, so such a layer has no ``torch.nn`` twin.
    """

    _cell = "lstm"
    _CONFIG = _Recurrent._CONFIG + ("proj_size", "peepholes")

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, *, peepholes=False,
                 dtype=np.float32, backend=None, seed=None, compute_dtype=None):
        self.peepholes = check_bool(peepholes, "peepholes")
        # PyTorch's checks and words
        proj_size = check_positive_int(proj_size, "proj_size", least=0)
        if proj_size and isinstance(hidden_size, (int, np.integer)) and proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        self.proj_size = proj_size
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, options={}, dtype=dtype, backend=backend, seed=seed,
                         compute_dtype=compute_dtype,
                         extras={"W_ch": self.peepholes, "W_hr": proj_size > 0})

    peepholes, proj_size = _Fixed(), _Fixed()


class GRU(_Recurrent):
    """A GRU layer with ``torch.nn.GRU``'s arguments, names and shapes.

    ``reset_after=False`` resets before the n block's product
    (``n = tanh(x W_in^T + b_in + (r * h) W_hn^T + b_hn)``): the GRU of
    Keras's ``GRU(reset_after=False)`` and of ONNX's GRU with
    ``linear_before_reset=0`` (see ``fastrnn.gru_forward``); the parameters
    are the same.  PyTorch has only the default form, so such a layer has
    no ``torch.nn`` twin.
    """

    _cell = "gru"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, reset_after=True, dtype=np.float32,
                 backend=None, seed=None, compute_dtype=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, options={"reset_after": reset_after}, dtype=dtype,
                         backend=backend, seed=seed, compute_dtype=compute_dtype)

    reset_after = _Fixed()


class _Cell(_Module):
    """What RNNCell, LSTMCell and GRUCell share: one step of the cell, the same
    equations and kernels as the layers (a sequence of length 1).

    In training mode each ``forward`` saves its step on a stack and each
    ``backward`` takes the latest one off it, so a custom loop runs forward
    over its steps and then backward over them in reverse order (backprop
    through time by hand).  Parameter gradients add up in ``self.grads``
    across backward calls until :meth:`zero_grad`.
    """

    _kind = "cell"
    _CONFIG = ("input_size", "hidden_size", "bias", "dtype", "compute_dtype")

    def __init__(self, input_size, hidden_size, bias=True, *, options, dtype=np.float32,
                 backend=None, seed=None, compute_dtype=None, extras=None):
        self.input_size = check_positive_int(input_size, "input_size")
        self.bias = bool(bias)
        self._steps = []
        # PyTorch's names: weight_ih, weight_hh, bias_ih, bias_hh (weight_ch)
        self._slot = tuple(_param_kind(name) for name in self._weight_names)
        self._init_module(hidden_size, options=options, dtype=dtype, backend=backend, seed=seed,
                          compute_dtype=compute_dtype, extras=extras)
        self.zero_grad()

    def _shapes(self):
        return {name: shape for name, shape in zip(self._slot,
                                                   self._weight_shapes(self.input_size))
                if shape is not None}

    def _forget(self):
        self._steps = []

    def zero_grad(self):
        """Set every accumulated parameter gradient to zero."""
        self.grads = {name: np.zeros_like(p) for name, p in self._params.items()}

    def forward(self, x, hx=None):
        """One step: x (B, I), hx (B, H) or None (LSTMCell: a tuple (h, c) or None).
        Returns h' (B, H) (LSTMCell: (h', c'))."""
        x = self._as_array(x, "x")
        unbatched = x.ndim == 1  # (I,), as PyTorch: a batch of one, squeezed out again
        names = self._hx_names(self._spec.states)
        if unbatched:
            passed = self._from_hx(hx, names)
            for v, name in zip(passed, names):
                if v is not None and np.ndim(v) != 1:
                    raise ValueError(f"for unbatched input x (I,), {name} must be (H,) too, "
                                     f"got shape {np.shape(v)}")
            x = x[None]
            hx = None if hx is None else self._as_hx(tuple(
                None if v is None else np.asarray(v)[None] for v in passed))
        x = self._check_x(x, "(B, I)", 2)
        B, H = x.shape[0], self.hidden_size
        states = tuple(self._check_array(s, name, (B, H), "(B, H)")
                       for s, name in zip(self._from_hx(hx, names), names))
        if H == 0:
            # torch.nn's cells allow this: empty states, and nothing to compute.
            finals, cache = [np.zeros((B, 0), x.dtype) for _ in names], _NoUnits(x[None])
        else:
            W_ih, W_hh, b_ih, b_hh, *extras = self._run_weights(self._slot)
            p = Checked.trusted(self._cell, x[None], states, W_ih, W_hh, b_ih, b_hh, None,
                                self._options, tuple(extras))
            _, *finals, cache = _driver.forward(p, self.training, self.backend,
                                                compute=self.compute_dtype)
        if self.training:
            self._steps.append((cache, unbatched))
        return self._as_hx(tuple(f[0] for f in finals) if unbatched else tuple(finals))

    __call__ = forward

    def backward(self, d_h, d_c=None):
        """Backpropagate through the latest step not yet backpropagated.  d_h (B, H)
        (LSTMCell also d_c, or None).  Returns (dx, dhx) (LSTMCell: (dx, (dh, dc)));
        adds the parameter gradients to ``self.grads``."""
        if not self._steps:
            raise RuntimeError("backward needs a training-mode forward step that has not been "
                               "backpropagated yet")
        names = ("d_h", "d_c")
        cache, unbatched = self._steps[-1]
        if unbatched:
            d_h, d_c = (None if d is None else np.asarray(d)[None] for d in (d_h, d_c))
        B, H = cache.x.shape[1], self.hidden_size
        d_h, *d_rest = [self._check_array(d, name, (B, H), "(B, H)")
                        for d, name in zip(self._own_states((d_h, d_c), names), names)]
        # The step is a sequence of length 1 whose output is h': d_h is its d_out.
        if isinstance(cache, _NoUnits):
            g = cache.backward(self._spec)
        else:
            g = _driver.backward(
                self._cell, (None if d_h is None else d_h[None], None, *d_rest), cache)
        self._steps.pop()
        for name, weight in zip(self._slot, self._weight_names):
            if name in self.grads:
                self.grads[name] += getattr(g, "d" + weight)
        d_states = tuple(getattr(g, name) for name in self._spec.state_grads)
        if unbatched:
            return g.dx[0, 0], self._as_hx(tuple(d[0] for d in d_states))
        return g.dx[0], self._as_hx(d_states)


class _NoUnits:
    """The saved step of a cell with hidden_size 0: its backward is zeros for
    x and empty for the states and weights (nothing depends on anything)."""

    def __init__(self, x):
        self.x = x  # (1, B, I)

    def backward(self, spec):
        B, dtype = self.x.shape[1], self.x.dtype
        empty = np.zeros((B, 0), dtype)
        return SimpleNamespace(dx=np.zeros_like(self.x),
                               **{name: 0 for name in spec.grads[1 + len(spec.states):]},
                               **{name: empty for name in spec.state_grads})


class RNNCell(_Cell):
    """One Elman step with ``torch.nn.RNNCell``'s arguments and parameter names.

    ``RNNCell(input_size, hidden_size, bias=True, nonlinearity="tanh", *,
    dtype=np.float32, backend=None, seed=None, compute_dtype=None)``.
    """

    _cell = "rnn"

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", *,
                 dtype=np.float32, backend=None, seed=None, compute_dtype=None):
        super().__init__(input_size, hidden_size, bias, options={"nonlinearity": nonlinearity},
                         dtype=dtype, backend=backend, seed=seed, compute_dtype=compute_dtype)


class LSTMCell(_Cell):
    """One LSTM step with ``torch.nn.LSTMCell``'s arguments and parameter
    names; ``peepholes=True`` adds ``weight_ch`` (3*H,), as in :class:`LSTM`.
    No ``proj_size``: ``torch.nn.LSTMCell`` has none (a projected step is
    ``fastrnn.lstm_forward`` with ``W_hr`` on a sequence of one step)."""

    _cell = "lstm"
    _CONFIG = _Cell._CONFIG + ("peepholes",)

    def __init__(self, input_size, hidden_size, bias=True, *, peepholes=False, dtype=np.float32,
                 backend=None, seed=None, compute_dtype=None):
        self.peepholes = check_bool(peepholes, "peepholes")
        super().__init__(input_size, hidden_size, bias, options={}, dtype=dtype, backend=backend,
                         seed=seed, compute_dtype=compute_dtype, extras={"W_ch": self.peepholes})

    peepholes = _Fixed()


class GRUCell(_Cell):
    """One GRU step with ``torch.nn.GRUCell``'s arguments and parameter names;
    ``reset_after=False`` as in :class:`GRU`."""

    _cell = "gru"

    def __init__(self, input_size, hidden_size, bias=True, *, reset_after=True, dtype=np.float32,
                 backend=None, seed=None, compute_dtype=None):
        super().__init__(input_size, hidden_size, bias, options={"reset_after": reset_after},
                         dtype=dtype, backend=backend, seed=seed, compute_dtype=compute_dtype)

    reset_after = _Fixed()


def quantize_dynamic(module, dtype="int8"):
    """An int8 copy of a fastrnn layer or cell, for inference: PyTorch's and
    ONNX Runtime's dynamic quantization (``torch.ao.quantization.quantize_dynamic``,
    ``onnxruntime.quantization.quantize_dynamic``), fastrnn's kernels.

    The copy has ``compute_dtype="int8"`` and is in eval mode.  Its W_ih and
    W_hh (every layer and direction) are quantized once, symmetric per row
    (:func:`fastrnn.quantize_weight`); its float weights hold the
    dequantized values, read-only.  Each forward quantizes x_t and h_{t-1}
    per row as it reads them and sums the products in int32 (see
    ``fastrnn.quantization``); the biases, the gates and the states stay
    float32.  ``save`` writes the int8 weights and their scales and ``load``
    reads them back as they are.  A float64 module is quantized from its
    weights rounded to float32.  Training through the copy (a forward in
    training mode) raises a ValueError: train the float module, then
    quantize it again.  ``module`` itself is not changed.
    """
    if not isinstance(module, _Module):
        raise TypeError(f"quantize_dynamic takes a fastrnn layer or cell (fastrnn.LSTM, "
                        f"fastrnn.GRUCell, ...), got {type(module).__name__}; for a PyTorch "
                        f"model use fastrnn.torch.quantize_dynamic")
    if not (isinstance(dtype, str) and dtype == "int8") and dtype is not np.int8:
        raise ValueError(f"dtype must be 'int8' (the quantization fastrnn runs), got {dtype!r}")
    config = {**module._config(), "dtype": "float32", "compute_dtype": None}
    copy = type(module)(**config, backend=module.backend)
    with np.errstate(over="ignore"):
        copy.load_state_dict({name: w.astype(np.float32) for name, w in module._params.items()})
    copy.compute_dtype = "int8"  # refuses what int8 does not run (a projection, ...)
    copy._freeze_int8()
    return copy.eval()
