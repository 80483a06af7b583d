"""Cells written by the user: one step of one unit, forward and backward, as
plain Python functions; fastrnn runs them over whole sequences.

A cell has gates (each with an input term ``x[k]`` = (x_t W_ih^T + b_ih) of
its block and, for a recurrent cell, a recurrent term ``r[k]`` =
(h_{t-1} W_hh^T + b_hh) of its block), states (the first is h, the output,
the one W_hh multiplies; a second such as the LSTM's c is carried along),
and parameters of its own, one value per unit (peepholes, IndRNN's
recurrent weights).  The user writes, for one unit::

    forward(x, r, s, p)     -> the new states, a tuple like s
    backward(x, r, s, p, d) -> (dx, dr, ds, dp)

where x, r are tuples over the gates, s the states at t-1, p the unit's
parameters, d the gradients of the loss with respect to the new states, and
the backward returns the gradients of x, r, s and p (tuples of the same
lengths; r and dr are empty for a cell with ``recurrent=False``).  The
backward recomputes what it needs from the inputs, which the forward keeps.

From that one description :class:`Cell` gives:

- ``cell.forward`` / ``cell.backward``: the functional API of the built-in
  cells (``fastrnn.gru_forward``'s signature with the cell's own states and
  parameters), over whole sequences with lengths, initial states and
  inference without saving; ``backend="numpy"`` is the reference (the
  user's functions run once a step on (B, H) arrays), ``"numba"`` the
  compiled kernel (the functions compiled by Numba and inlined into a loop
  over the units, one BLAS product a step);
- ``cell.check_gradients()``: the user's backward against finite
  differences of the user's forward, which names the gate, state or
  parameter whose derivative is wrong;
- ``cell.layer(input_size, hidden_size, num_layers, ...)``: layers as
  ``fastrnn.GRU``'s (:class:`CellLayers`: stacks, both directions, dropout,
  files); ``fastrnn.torch.CellRNN`` is the PyTorch module.

The functions must work both on NumPy arrays (the reference runs them on
(B, H) arrays) and in Numba's nopython mode: write them with ``np.tanh``,
``np.exp``, ``np.maximum``, ``np.where`` and arithmetic, or with this
module's :func:`sigmoid` and :func:`tanh`, which are fast (a rational tanh
in float32) inside the compiled kernel.  ``docs/cells.md`` has a worked
example and explains where the speed comes from.
"""
import inspect
import keyword
import threading
from collections import namedtuple
from types import MappingProxyType

import numpy as np

from . import _backends
from ._validation import (_as_array, _check_float, _optional, _required, check_bool,
                          check_lengths)
from .layers import DirectionCell, _Recurrent

__all__ = ["Cell", "CellCache", "CellLayers", "CellCompileError", "GradientCheckError",
           "sigmoid", "tanh"]


def sigmoid(x):
    """1 / (1 + exp(-x)), on arrays or inside a compiled cell (where float32
    uses fastrnn's rational tanh: sigmoid(x) = (1 + tanh(x / 2)) / 2)."""
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def tanh(x):
    """np.tanh, on arrays or inside a compiled cell (float32: fastrnn's
    rational tanh, within 2 ulp of np.tanh's float32 value)."""
    return np.tanh(x)


class CellCompileError(TypeError):
    """Numba could not compile a cell's function; the message holds Numba's reason."""


class GradientCheckError(AssertionError):
    """A cell's backward disagrees with finite differences of its forward."""


def _names(value, what, allow_empty):
    if isinstance(value, str):
        value = (value,)
    try:
        value = tuple(value)
    except TypeError:
        raise TypeError(f"{what} must be a tuple of names, got {value!r}") from None
    if not value and not allow_empty:
        raise ValueError(f"{what} must name at least one, got ()")
    for name in value:
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise ValueError(f"{what} must be Python identifiers, got {name!r}")
    if len(set(value)) != len(value):
        raise ValueError(f"{what} must be distinct, got {value!r}")
    return value


class Cell:
    """A recurrent cell described by the arithmetic of one unit's step.

    Parameters
    ----------
    name : str
        The cell's name (in messages and reprs).
    gates : tuple of str
        The gate blocks of W_ih (and W_hh), in order: W_ih is (G*H, I).
    forward, backward : callables
        ``forward(x, r, s, p)`` returns the new states (a tuple of
        len(states)); ``backward(x, r, s, p, d)`` returns ``(dx, dr, ds,
        dp)``, tuples of len(gates), len(gates) (or 0 without
        recurrence), len(states) and len(params).  See the module's text.
    states : tuple of str
        The states, h first (the output, what W_hh multiplies).  Default ("h",).
    params : tuple of str
        Parameters of the cell's own with one value per unit, each (H,).
    recurrent : bool
        False for a cell without W_hh (minGRU, IndRNN): r and dr are empty
        and the functions take no W_hh and b_hh.
    """

    def __init__(self, name, *, gates, forward, backward, states=("h",), params=(),
                 recurrent=True):
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty string, got {name!r}")
        self.name = name
        self.gates = _names(gates, "gates", False)
        self.states = _names(states, "states", False)
        self.params = _names(params, "params", True)
        self.recurrent = check_bool(recurrent, "recurrent")
        taken = {"x", "W_ih", "W_hh", "b_ih", "b_hh"}
        clash = taken & set(self.params) | taken & {s + "0" for s in self.states}
        if clash:
            raise ValueError(f"params and states must not take the names {sorted(clash)}")
        for fn, what in ((forward, "forward"), (backward, "backward")):
            if not callable(fn):
                raise TypeError(f"{what} must be a function, got {type(fn).__name__}")
        self.forward_fn, self.backward_fn = forward, backward
        self.G, self.S, self.P = len(self.gates), len(self.states), len(self.params)
        self._probe()
        self.initial = tuple(s + "0" for s in self.states)
        self.weights = ("W_ih", "W_hh", "b_ih", "b_hh") if self.recurrent else ("W_ih", "b_ih")
        self.inputs = ("x",) + self.initial + self.weights + self.params
        self.Grads = namedtuple(f"{name.title().replace('_', '')}Grads",
                                tuple("d" + n for n in self.inputs), module="fastrnn.cells")
        self.Grads.__doc__ = f"Gradients of the cell {name!r}: {', '.join(self.Grads._fields)}."
        self._signature = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD)
             for n in ("x",) + self.initial + self.weights[:1 + self.recurrent]]
            + [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)
               for n in self.weights[1 + self.recurrent:] + self.params])
        self.Layer = _layer_class(self)
        self._required = 2 + self.S + self.recurrent  # x, the states, W_ih (, W_hh)
        self._numba = {}
        self._numba_lock = threading.Lock()

    def __repr__(self):
        return (f"Cell({self.name!r}, gates={self.gates}, states={self.states}, "
                f"params={self.params}, recurrent={self.recurrent})")

    # ---- the description, checked once on plain floats -------------------------------

    def _sizes(self):
        return self.G, self.G if self.recurrent else 0, self.S, self.P

    def _probe(self):
        """Run the functions once on Python floats: they must return tuples of
        the declared lengths, so that a mistake surfaces here, named, rather
        than as a typing error deep in a compiled kernel."""
        G, R, S, P = self._sizes()
        x, r, s, p = ((0.1 * (k + 1),) * n for k, n in enumerate((G, R, S, P)))
        new = self.forward_fn(x, r, s, p)
        _check_tuple(new, S, f"{self.name}: forward must return the new states {self.states}")
        out = self.backward_fn(x, r, s, p, (1.0,) * S)
        if not isinstance(out, tuple) or len(out) != 4:
            raise TypeError(f"{self.name}: backward must return a tuple (dx, dr, ds, dp), got "
                            f"{_spelled(out)}")
        for part, n, what in zip(out, (G, R, S, P), ("dx (one per gate)",
                                                     "dr (one per gate; () without recurrence)",
                                                     "ds (one per state)",
                                                     "dp (one per parameter)")):
            _check_tuple(part, n, f"{self.name}: backward's {what}")

    # ---- the functional API ---------------------------------------------------------

    def forward(self, *args, lengths=None, training=True, backend=None, **kwargs):
        """``out, *states_n, cache = cell.forward(x, h0, ..., W_ih, W_hh, b_ih=None,
        b_hh=None, <params>=None, *, lengths=None, training=True, backend=None)``

        x (T, B, I) float32 or float64; each initial state (B, H) or None
        (zeros); W_ih (G*H, I), W_hh (G*H, H); the biases (G*H,) and the
        parameters (H,) or None (zeros, gradient None); lengths (B,) or None.
        Returns out (T, B, H) (zero past a sequence's length), each state
        after each sequence's last step, and the cache for ``backward``
        (None with ``training=False``)."""
        p = self._check_forward(args, kwargs, lengths, training)
        backend = _cell_backend(backend, self)
        lengths = p.lengths if p.lengths is not None else np.full(p.B, p.T, np.int64)
        if backend == "cython" and (p.T == 0 or p.B == 0):
            backend = "numba"  # nothing for the engine to share out
        if backend == "cython":
            out, states_n, saved = _cython_forward(self, p, lengths, training)
        else:
            out, states_n, saved = _loops_forward(self, p, lengths, training, backend)
        cache = None
        if training:  # the caller gets a read-only view of what the backward reads
            cache = CellCache(self, backend, p, out=out, **saved)
            out = out.view()
            out.flags.writeable = False
        return (out, *states_n, cache)

    def backward(self, d_out, *d_states_n, cache):
        """``grads = cell.backward(d_out, d_h_n, ..., cache=cache)``: the
        gradients (``cell.Grads``: dx, d<state>0 ..., dW_ih, dW_hh, db_ih,
        db_hh, d<param> ...) of a training forward; the upstream gradients
        may be None (zeros).  A bias or parameter passed as None has a None
        gradient."""
        if cache is None:
            raise ValueError(f"cache is None: {self.name}.backward needs the cache of a forward "
                             "run with training=True")
        if not isinstance(cache, CellCache):
            raise TypeError(f"cache must be the cache {self.name}.forward returned, got "
                            f"{type(cache).__name__}")
        if cache.cell is not self:
            raise ValueError(f"cache is from the cell {cache.cell.name!r}, not {self.name!r}")
        if len(d_states_n) != self.S:
            raise TypeError(f"{self.name}.backward takes d_out, then one gradient per state "
                            f"({', '.join('d_' + s + '_n' for s in self.states)}), then "
                            f"cache=; got {1 + len(d_states_n)} gradients")
        a = cache.arrays
        T, B, H = a["out"].shape
        dtype = a["out"].dtype
        d_out = np.ascontiguousarray(_zeros_if_none(
            _optional(d_out, "d_out", (T, B, H), "(T, B, H)", dtype), (T, B, H), dtype))
        # The running gradients of the states, one fresh (B, H) array each.
        ds = np.array([_zeros_if_none(_optional(d, f"d_{s}_n", (B, H), "(B, H)", dtype),
                                      (B, H), dtype)
                       for d, s in zip(d_states_n, self.states)], dtype)
        lengths = cache.lengths if cache.lengths is not None else np.full(B, T, np.int64)
        if cache.backend == "cython":
            grads = _cython_backward(self, a, lengths, d_out, ds)
        else:
            grads = _loops_backward(self, cache.backend, a, lengths, d_out, ds)
        for i, s in enumerate(self.states):
            grads["d" + s + "0"] = ds[i]
        for name in cache.missing:
            grads["d" + name] = None
        return self.Grads(**grads)

    def _check_forward(self, args, kwargs, lengths, training):
        names = tuple(self._signature.parameters)
        if not kwargs and self._required <= len(args) <= len(names):  # the common call
            v = dict(zip(names, args))
        else:
            try:
                v = self._signature.bind(*args, **kwargs).arguments
            except TypeError as exc:
                raise TypeError(f"{self.name}.forward{self._signature}: {exc}") from None
        x = _as_array(v["x"], "x")
        _check_float(x, "x", value=v["x"])
        if x.ndim != 3 or x.shape[2] < 1:
            raise ValueError(f"x must have shape (T, B, I) (time-major; rank 3) with I >= 1, "
                             f"got shape {x.shape}")
        T, B, I = x.shape  # noqa: E741
        dtype, G = x.dtype, self.G
        W_ih = _as_array(v["W_ih"], "W_ih") if v["W_ih"] is not None else None
        if W_ih is None:
            raise TypeError("W_ih must be an array of floats, got None")
        _check_float(W_ih, "W_ih", dtype, v["W_ih"])
        if W_ih.ndim != 2 or W_ih.shape[0] % G or W_ih.shape[0] < G or W_ih.shape[1] != I:
            raise ValueError(f"W_ih must have shape ({G}*H, I) with I = {I} and H >= 1, got "
                             f"{W_ih.shape}")
        H = W_ih.shape[0] // G
        spelled = f"({G}*H,)" if G > 1 else "(H,)"
        arrays, missing = {}, []
        if self.recurrent:
            arrays["W_hh"] = _required(v["W_hh"], "W_hh", (G * H, H), f"({G}*H, H)", dtype)
        for name in self.weights[1 + self.recurrent:]:
            arrays[name] = _optional(v.get(name), name, (G * H,), spelled, dtype)
        for name in self.params:
            arrays[name] = _optional(v.get(name), name, (H,), "(H,)", dtype)
        for name, value in list(arrays.items()):
            if value is None:
                missing.append(name)
                arrays[name] = np.zeros(G * H if name.startswith("b_") else H, dtype)
        states = tuple(_zeros_if_none(_optional(v[name], name, (B, H), "(B, H)", dtype),
                                      (B, H), dtype) for name in self.initial)
        if not isinstance(training, (bool, np.bool_)):
            raise TypeError(f"training must be True or False, got {training!r}")
        contiguous = np.ascontiguousarray
        arrays = {n: contiguous(v) for n, v in arrays.items()}
        return _Checked(x=contiguous(x), W_ih=contiguous(W_ih), W_hh=arrays.get("W_hh"), b_ih=arrays["b_ih"],
                        b_hh=arrays.get("b_hh"),
                        params=np.array([arrays[n] for n in self.params], dtype).reshape(
                            self.P, H),
                        states=tuple(map(contiguous, states)), missing=tuple(missing),
                        lengths=check_lengths(lengths, T, B), T=T, B=B, I=I, H=H, G=G,
                        dtype=dtype)

    def _kernels(self, backend, dtype):
        """The compiled kernels for ``backend`` ("numba": the step loops,
        "cython": the engine's tile functions) and ``dtype``, compiled on
        first use (once per process)."""
        key = (backend, np.dtype(dtype))
        with self._numba_lock:
            kernels = self._numba.get(key)
            if kernels is None:
                from .kernels import cell_numba
                make = (cell_numba.CythonCellKernels if backend == "cython"
                        else cell_numba.NumbaCellKernels)
                kernels = self._numba[key] = make(self, dtype)
        return kernels

    # ---- the gradient check ---------------------------------------------------------

    def check_gradients(self, *, points=64, seed=0, scale=1.0, eps=1e-6, rtol=1e-4,
                        atol=1e-6):
        """Hold the backward to central differences of the forward, in
        float64, at ``points`` random inputs (normal, times ``scale``; the
        states and parameters too).  Raises :class:`GradientCheckError`
        naming the first input (the input or recurrent term of a gate, a
        state, a parameter) whose derivative is off by more than
        ``atol + rtol * |derivative|``; returns the largest error of each
        input otherwise."""
        rng = np.random.default_rng(seed)
        G, R, S, P = self._sizes()
        inputs = [tuple(scale * rng.standard_normal(points) for _ in range(n))
                  for n in (G, R, S, P)]
        d = tuple(rng.standard_normal(points) for _ in range(S))

        def loss(x, r, s, p):
            new = self.forward_fn(x, r, s, p)
            return sum(np.asarray(n, np.float64) * dn for n, dn in zip(new, d))

        analytic = [tuple(np.broadcast_to(np.asarray(g, np.float64), (points,)) for g in part)
                    for part in self.backward_fn(*inputs, d)]
        labels = (lambda k: f"the input term x[{k}] of gate {self.gates[k]!r}",
                  lambda k: f"the recurrent term r[{k}] of gate {self.gates[k]!r}",
                  lambda k: f"the state s[{k}] ({self.states[k]!r}, at t-1)",
                  lambda k: f"the parameter p[{k}] ({self.params[k]!r})")
        errors = {}
        for part in range(4):
            for k in range(len(inputs[part])):
                numeric = np.zeros(points)
                for sign in (1.0, -1.0):
                    moved = [list(t) for t in inputs]
                    moved[part][k] = inputs[part][k] + sign * eps
                    numeric += sign * loss(*map(tuple, moved)) / (2 * eps)
                got = analytic[part][k]
                bad = np.abs(got - numeric) > atol + rtol * np.abs(numeric)
                err = float(np.max(np.abs(got - numeric)))
                errors[labels[part](k)] = err
                if bad.any() or not np.all(np.isfinite(got)):
                    i = int(np.argmax(np.abs(got - numeric) + ~np.isfinite(got)))
                    raise GradientCheckError(
                        f"cell {self.name!r}: the backward's gradient of {labels[part](k)} "
                        f"disagrees with finite differences of the forward: "
                        f"{int(bad.sum())} of {points} points off, the worst by {err:.3g} "
                        f"(backward {got[i]:.6g}, finite differences {numeric[i]:.6g}, at "
                        f"x={_at(inputs[0], i)}, r={_at(inputs[1], i)}, "
                        f"s={_at(inputs[2], i)}, p={_at(inputs[3], i)})")
        return errors

    # ---- layers --------------------------------------------------------------------

    def layer(self, input_size, hidden_size, num_layers=1, **options):
        """Layers of this cell with fresh parameters (``self.Layer``, a
        :class:`CellLayers`; the options are fastrnn.GRU's)."""
        if self.Layer is None:
            raise TypeError(f"cell {self.name!r} has {self.S} states; layers carry at most two "
                            "(h, c): run it with cell.forward")
        return self.Layer(input_size, hidden_size, num_layers, **options)


def _check_tuple(value, n, what):
    if not isinstance(value, tuple) or len(value) != n:
        raise TypeError(f"{what}: a tuple of {n}, got {_spelled(value)}")


def _spelled(value):
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}"
    return f"a {type(value).__name__}"


def _at(values, i):
    return "(" + ", ".join(f"{v[i]:.4g}" for v in values) + ("," if len(values) == 1 else "") + ")"


def _zeros_if_none(arr, shape, dtype):
    return np.zeros(shape, dtype) if arr is None else arr


_loaded_backends = set()


def _cell_backend(backend, cell):
    """The backend a call of ``cell`` runs on.  Every backend but the
    reference compiles the cell with Numba; the Cython engine runs the
    recurrent cells of up to 4 gates (its tiles hold the sums of 1 to 4
    vectors of columns; a cell without W_hh has no product for it to share
    out): the others run on the Numba loops.  The cache says which ran."""
    backend = _backends.resolve(backend)
    if backend != "numpy" and not (backend == "cython" and cell.recurrent and cell.G <= 4
                                   and _loaded_backends >= {"numba", "cython"}):
        available = _backends.available_backends()
        _loaded_backends.update(available)  # a backend that loaded stays loaded
        if "numba" not in available:
            raise _backends.BackendUnavailableError(
                f"the cell {cell.name!r} needs Numba for the {backend} backend: "
                + "; ".join(_backends.unavailable_backends()))
        if backend == "cython" and (not cell.recurrent or cell.G > 4
                                    or "cython" not in available):
            backend = "numba"
    return backend


class _Checked:
    __slots__ = ("x", "W_ih", "W_hh", "b_ih", "b_hh", "params", "states", "missing", "lengths",
                 "T", "B", "I", "H", "G", "dtype")

    def __init__(self, **fields):
        for k, v in fields.items():
            setattr(self, k, v)


class CellCache:
    """What a training forward of a user cell keeps for its backward: the
    cell, the backend, lengths, the names of the biases and parameters
    passed as None (``missing``), and ``arrays``: x, the weights, the
    parameters (P, H), the initial states, XW (T, B, G*H) the input terms, R
    (T, B, G*H) the recurrent terms (bias included), seq (S-1, T, B, H) the
    states after h after each step, out.  Read-only."""

    __slots__ = ("cell", "backend", "lengths", "missing", "arrays")

    def __init__(self, cell, backend, p, **saved):
        arrays = dict(x=p.x.copy(), W_ih=p.W_ih.copy(), b_ih=p.b_ih.copy(), params=p.params,
                      states0=np.array(p.states), **saved)
        if cell.recurrent:
            arrays.update(W_hh=p.W_hh.copy(), b_hh=p.b_hh.copy())
        for name, value in (("cell", cell), ("backend", backend), ("lengths", p.lengths),
                            ("missing", p.missing), ("arrays", MappingProxyType(arrays))):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"a CellCache is read-only (setting {name!r})")

    def __getattr__(self, name):
        arrays = object.__getattribute__(self, "arrays")
        if name in arrays:
            return arrays[name]
        raise AttributeError(f"a CellCache has no {name!r}")

    def __repr__(self):
        T, B, H = self.arrays["out"].shape
        return (f"CellCache(cell={self.cell.name!r}, backend={self.backend!r}, T={T}, B={B}, "
                f"H={H}, dtype={self.arrays['out'].dtype})")


# ---- the runs: the reference and the Numba loops, then the Cython engine ------------

def _loops_forward(cell, p, lengths, training, backend):
    """The reference or the Numba loops: the input terms as one GEMM, then
    the steps."""
    GH, keep = p.G * p.H, p.T if training else 0
    XW = np.empty((p.T, p.B, GH), p.dtype)
    np.matmul(p.x.reshape(p.T * p.B, p.I), p.W_ih.T, out=XW.reshape(p.T * p.B, GH))
    XW += p.b_ih
    R = np.zeros((max(keep, 1) if cell.recurrent else 0, p.B, GH), p.dtype)
    run = np.array(p.states, p.dtype)  # (S, B, H): the running states, a fresh copy
    seq = np.empty((cell.S - 1, keep, p.B, p.H), p.dtype)
    out = np.empty((p.T, p.B, p.H), p.dtype)
    if backend == "numpy":
        _reference_forward(cell, p, XW, R, run, seq, out, lengths)
    else:
        cell._kernels("numba", p.dtype).steps_forward(p, XW, R, run, seq, out, lengths)
    return out, tuple(run), dict(XW=XW, R=R, seq=seq)


def _loops_backward(cell, backend, a, lengths, d_out, ds):
    T, B, H = a["out"].shape
    G, I, dtype = cell.G, a["x"].shape[2], a["out"].dtype
    DX = np.empty((T, B, G * H), dtype)
    DR = np.empty((T if cell.recurrent else 0, B, G * H), dtype)
    dP = np.zeros((cell.P, H), dtype)
    if backend == "numpy":
        _reference_backward(cell, a, lengths, d_out, ds, DX, DR, dP)
    else:
        cell._kernels("numba", dtype).steps_backward(a, lengths, d_out, ds, DX, DR, dP)
    # Everything not sequential: one GEMM each over all T*B rows.
    DX2 = DX.reshape(T * B, G * H)
    grads = {"dx": (DX2 @ a["W_ih"]).reshape(T, B, I),
             "dW_ih": DX2.T @ a["x"].reshape(T * B, I), "db_ih": DX2.sum(axis=0)}
    if cell.recurrent:
        DR2 = DR.reshape(T * B, G * H)
        h_prev = np.concatenate([a["states0"][0][None], a["out"][:-1]])[:T].reshape(T * B, H)
        grads["dW_hh"], grads["db_hh"] = DR2.T @ h_prev, DR2.sum(axis=0)
    grads.update(("d" + name, dP[k]) for k, name in enumerate(cell.params))
    return grads


def _cython_forward(cell, p, lengths, training):
    """The engine: its packed products and threads, the cell's tile functions
    in place of a built-in cell's gate arithmetic."""
    from . import _threads, _tuning
    tiles = cell._kernels("cython", p.dtype)
    engine = _backends.kernels("cython", "cell")
    GH, keep = p.G * p.H, p.T if training else 0
    gates = np.empty((_tuning.kept_steps("cython", training, p.T, p.B), p.B, GH), p.dtype)
    R = np.empty((keep, p.B, GH), p.dtype)
    run = np.array(p.states[1:], p.dtype).reshape(cell.S - 1, p.B, p.H)
    seq = np.empty((cell.S - 1, keep, p.B, p.H), p.dtype)
    out = np.empty((p.T, p.B, p.H), p.dtype)
    h_n = np.empty((p.B, p.H), p.dtype)
    threads = _tuning.engine_threads("cython", p.B, p.I, p.H, GH, _threads.get_num_threads())
    engine.forward(tiles.forward_address[training], (out, R, run, seq, p.b_hh, p.params),
                   np.array([p.T, p.B, p.H], np.int64), p.x.reshape(p.T * p.B, p.I),
                   p.W_ih, p.b_ih, p.W_hh, p.states[0], lengths, threads, gates, out, h_n)
    return out, (h_n, *run), dict(XW=gates, R=R, seq=seq)


def _cython_backward(cell, a, lengths, d_out, ds):
    from . import _threads, _tuning
    T, B, H = a["out"].shape
    G, I, dtype = cell.G, a["x"].shape[2], a["out"].dtype
    GH = G * H
    tiles = cell._kernels("cython", dtype)
    engine = _backends.kernels("cython", "cell")
    ring = _tuning.workspace_steps("cython", T, B)
    da_x, da_h = np.empty((ring, B, GH), dtype), np.empty((ring, B, GH), dtype)
    dP = np.zeros((cell.P, H), dtype)
    dh0, ds_rest = ds[0], ds[1:]  # updated in place: dL/dh_n, ... on entry, dL/dh0, ... after
    grads = {"dx": np.empty((T, B, I), dtype), "dW_ih": np.empty((GH, I), dtype),
             "dW_hh": np.empty((GH, H), dtype), "db_ih": np.empty(GH, dtype),
             "db_hh": np.empty(GH, dtype)}
    s0 = np.ascontiguousarray(a["states0"][1:])
    threads = _tuning.engine_threads("cython", B, I, H, GH, _threads.get_num_threads())
    engine.backward(tiles.backward_address,
                    (a["R"], a["seq"], a["out"], a["states0"][0], s0, ds_rest, a["params"], dP),
                    np.array([T, B, H], np.int64), a["x"].reshape(T * B, I), a["W_ih"],
                    a["W_hh"], a["states0"][0], a["out"], a["XW"], d_out, lengths, threads,
                    da_x, da_h, dh0, grads["dx"].reshape(T * B, I), grads["dW_ih"],
                    grads["dW_hh"], grads["db_ih"], grads["db_hh"])
    grads.update(("d" + name, dP[k]) for k, name in enumerate(cell.params))
    return grads


# ---- the reference: the user's functions on (B, H) arrays, once a step ----------------

def _blocks(a, n, H):
    return tuple(a[:, k * H:(k + 1) * H] for k in range(n))


def _reference_forward(cell, p, XW, R, run, seq, out, lengths):
    G, H = cell.G, p.H
    params = tuple(p.params)
    for t in range(p.T):
        x = _blocks(XW[t], G, H)
        r = ()
        if cell.recurrent:
            Rt = R[t] if seq.shape[1] else R[0]
            np.matmul(run[0], p.W_hh.T, out=Rt)
            Rt += p.b_hh
            r = _blocks(Rt, G, H)
        new = cell.forward_fn(x, r, tuple(run), params)
        going = (t < lengths)[:, None]
        for i in range(cell.S):
            run[i] = np.where(going, np.broadcast_to(new[i], run[i].shape), run[i])
        out[t] = np.where(going, run[0], 0)
        if seq.shape[1]:
            seq[:, t] = run[1:]


def _reference_backward(cell, a, lengths, d_out, ds, DX, DR, dP):
    T, B, H = a["out"].shape
    G = cell.G
    params = tuple(a["params"])
    for t in range(T - 1, -1, -1):
        going = (t < lengths)[:, None]
        x = _blocks(a["XW"][t], G, H)
        r = _blocks(a["R"][t], G, H) if cell.recurrent else ()
        s = (a["out"][t - 1],) + tuple(a["seq"][:, t - 1]) if t > 0 else tuple(a["states0"])
        d = (ds[0] + d_out[t],) + tuple(ds[1:])
        dx, dr, dsp, dp = cell.backward_fn(x, r, s, params, d)
        for k in range(G):
            DX[t, :, k * H:(k + 1) * H] = np.where(going, dx[k], 0)
            if cell.recurrent:
                DR[t, :, k * H:(k + 1) * H] = np.where(going, dr[k], 0)
        for i in range(cell.S):
            ds[i] = np.where(going, dsp[i], ds[i])
        for k in range(cell.P):
            dP[k] += np.sum(np.where(going, dp[k], 0), axis=0)
        if cell.recurrent:
            ds[0] += np.where(going, DR[t] @ a["W_hh"], 0)

# ---- layers ---------------------------------------------------------------------------

class _CellDirection(DirectionCell):
    """A user cell as the layers (fastrnn.layers) run it: one direction is
    one call of ``cell.forward``."""

    def __init__(self, cell):
        self.cell, self.G = cell, cell.G
        self.states, self.initial, self.inputs = cell.states, cell.initial, cell.inputs
        self.upstream = ("d_out",) + tuple(f"d_{s}_n" for s in cell.states)

    def check_options(self, options):
        if options:
            raise TypeError(f"a layer of the cell {self.cell.name!r} takes no options, got "
                            f"{sorted(options)}")
        return {}

    def weight_shape(self, name, I, H, bias):  # noqa: E741
        GH = self.G * H
        if name.startswith("b_") and not bias:
            return None
        return {"W_ih": (GH, I), "W_hh": (GH, H), "b_ih": (GH,), "b_hh": (GH,)}.get(name, (H,))

    def init(self, name):
        return "zeros" if name in self.cell.params else "uniform"

    def forward(self, x, states, weights, lengths, options, training, backend):
        out, *finals, cache = self.cell.forward(x, *states, *weights, lengths=lengths,
                                                training=training, backend=backend)
        return out, tuple(finals), cache

    def backward(self, d_out, d_finals, cache):
        return self.cell.backward(d_out, *d_finals, cache=cache)


class CellLayers(_Recurrent):
    """Layers of a user cell, as ``fastrnn.GRU`` is of the built-in GRU:
    ``num_layers``, ``bidirectional``, ``dropout`` between layers,
    ``batch_first``, lengths, state dicts and ``.npz`` files, and
    ``forward(x, hx=None, lengths=None)`` / ``backward(d_output, d_h_n,
    d_c_n)`` with the parameters' gradients in ``.grads``.  The parameters:
    ``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0`` and the
    cell's own (``p_i_l0``...), as PyTorch names a layer's; the weights
    uniform(-1/sqrt(H), 1/sqrt(H)), the cell's own parameters zero.

    Each cell has its own class, ``cell.Layer`` (``cell.layer(...)`` makes
    one; ``cell.Layer.load(path)`` reads a saved one back).  A cell with more
    than two states (h, c) runs through ``cell.forward`` only."""

    _CONFIG = _Recurrent._CONFIG

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, dtype=np.float32, backend=None,
                 seed=None, compute_dtype=None):
        if self._cell is None:
            raise TypeError("make a user cell's layers with cell.layer(...) or cell.Layer(...)")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, options={}, dtype=dtype, backend=backend, seed=seed,
                         compute_dtype=compute_dtype)


def _layer_class(cell):
    if cell.S > 2:
        return None
    name = "".join(part.title() for part in cell.name.split("_") if part) + "Layers"
    if not name.isidentifier():
        name = "CellLayers"
    return type(name, (CellLayers,), {"_cell": _CellDirection(cell), "__module__": __name__,
                                       "__doc__": f"Layers of the cell {cell.name!r} "
                                                  "(see fastrnn.cells.CellLayers)."})
