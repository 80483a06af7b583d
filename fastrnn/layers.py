"""Layers on top of the functional API: stacked, bidirectional, batch-first,
variable-length RNN / LSTM / GRU with PyTorch's constructor arguments,
parameter names and shapes.  The layers add no kernels of their own: each
layer and direction is one call of ``{cell}_forward`` / ``{cell}_backward``.

Bidirectional with ``lengths`` follows PyTorch's packed-sequence semantics:
the reverse direction reads each sequence backwards from its own last real
step (the input is reversed within each length, run with the same lengths,
and the output reversed back), padded positions output zeros, and ``h_n``
holds each direction's state at its own end.
"""
import json

import numpy as np

from . import _backends
from ._validation import GATES, check_dtype, check_lengths, check_nonlinearity, check_positive_int
from .elman import rnn_backward, rnn_forward
from .gru import gru_backward, gru_forward
from .lstm import lstm_backward, lstm_forward

_FUNCTIONS = {"rnn": (rnn_forward, rnn_backward), "lstm": (lstm_forward, lstm_backward),
              "gru": (gru_forward, gru_backward)}


def _rng(seed):
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _stack(arrays):
    """np.stack, without its cost (a few microseconds) for the common single array."""
    return arrays[0][None] if len(arrays) == 1 else np.stack(arrays)


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


class _Module:
    """Parameters under PyTorch's names, training/eval modes, state dicts and
    .npz files: what the layers and the cells share."""

    _cell = None  # "rnn", "lstm" or "gru"

    def _init_module(self, hidden_size, *, nonlinearity, dtype, backend, seed):
        self.hidden_size = check_positive_int(hidden_size, "hidden_size")
        check_nonlinearity(nonlinearity)
        if backend is not None:
            _backends.resolve(backend)  # a ValueError naming the choices
        self.nonlinearity = nonlinearity
        self.dtype = check_dtype(dtype)
        self.backend = backend
        self.training = True
        self.grads = {}
        self._rng = _rng(seed)
        # PyTorch's initialisation: every parameter uniform(-1/sqrt(H), 1/sqrt(H)).
        k = 1.0 / np.sqrt(self.hidden_size)
        self._params = {name: self._rng.uniform(-k, k, shape).astype(self.dtype)
                        for name, shape in self._shapes().items()}

    # --- parameters ---------------------------------------------------------

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
        converted with ``.numpy()`` loads as it is).  Missing, unexpected or
        mis-shaped entries raise a ValueError naming them; nothing is changed then."""
        shapes = self._shapes()
        missing = [n for n in shapes if n not in state]
        unexpected = [n for n in state if n not in shapes]
        if missing or unexpected:
            raise ValueError(f"state_dict does not match this {type(self).__name__}: "
                             f"missing {missing}, unexpected {unexpected}")
        loaded = {}
        for name, shape in shapes.items():
            try:
                arr = np.array(state[name], dtype=self.dtype, order="C")
            except (TypeError, ValueError) as exc:
                raise TypeError(f"state_dict[{name!r}] must be an array of numbers") from exc
            if arr.shape != shape:
                raise ValueError(f"state_dict[{name!r}] must have shape {shape}, got {arr.shape}")
            loaded[name] = arr
        self._params.update(loaded)

    def save(self, path):
        """Parameters and constructor arguments to a ``.npz`` file."""
        np.savez(path, __config__=np.array(json.dumps({"class": type(self).__name__,
                                                        **self._config()})),
                 **self._params)

    @classmethod
    def load(cls, path, *, backend=None):
        """A layer saved by :meth:`save`."""
        with np.load(path, allow_pickle=False) as f:
            config = json.loads(str(f["__config__"]))
            state = {k: f[k] for k in f.files if k != "__config__"}
        name = config.pop("class")
        if name != cls.__name__:
            raise ValueError(f"{path} holds a {name}, not a {cls.__name__}")
        if cls._cell != "rnn":
            config.pop("nonlinearity")
        layer = cls(**config, backend=backend)
        layer.load_state_dict(state)
        return layer

    # --- modes ----------------------------------------------------------------

    def train(self, mode=True):
        """Training mode (forward saves what backward needs, dropout is on)."""
        self.training = bool(mode)
        if not self.training:
            self._forget()
        return self

    def eval(self):
        """Inference mode: forward stores nothing and dropout is off."""
        return self.train(False)


class _Recurrent(_Module):
    """What RNN, LSTM and GRU share; see :class:`RNN` for the arguments."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, nonlinearity="tanh", dtype=np.float32,
                 backend=None, seed=None):
        self.input_size = check_positive_int(input_size, "input_size")
        self.num_layers = check_positive_int(num_layers, "num_layers")
        if not isinstance(dropout, (int, float, np.floating)) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self._tape = None
        self._init_module(hidden_size, nonlinearity=nonlinearity, dtype=dtype, backend=backend,
                          seed=seed)
        # The parameter names of each (layer, direction), in the order of h_n's rows.
        self._slots = [self._names(layer, sfx)
                       for layer in range(self.num_layers) for sfx in self._suffixes()]

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    def _suffixes(self):
        return ("", "_reverse")[:self.num_directions]

    @staticmethod
    def _names(layer, sfx):
        """PyTorch's names of one layer and direction: weight_ih, weight_hh, bias_ih, bias_hh."""
        return tuple(f"{kind}_l{layer}{sfx}"
                     for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    def _shapes(self):
        """Parameter name -> shape, in PyTorch's order."""
        H, GH = self.hidden_size, GATES[self._cell] * self.hidden_size
        shapes = {}
        for layer in range(self.num_layers):
            I = self.input_size if layer == 0 else H * self.num_directions  # noqa: E741
            for sfx in self._suffixes():
                w_ih, w_hh, b_ih, b_hh = self._names(layer, sfx)
                shapes[w_ih], shapes[w_hh] = (GH, I), (GH, H)
                if self.bias:
                    shapes[b_ih] = shapes[b_hh] = (GH,)
        return shapes

    def _config(self):
        return dict(input_size=self.input_size, hidden_size=self.hidden_size,
                    num_layers=self.num_layers, bias=self.bias, batch_first=self.batch_first,
                    dropout=self.dropout, bidirectional=self.bidirectional,
                    nonlinearity=self.nonlinearity, dtype=self.dtype.name)

    def _forget(self):
        self._tape = None

    # --- forward and backward ---------------------------------------------------

    def _as_input(self, x):
        x = np.asarray(x)
        if x.dtype != self.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the layer has dtype {self.dtype}; "
                            f"pass x.astype(np.{self.dtype})")
        if x.ndim != 3 or x.shape[2] != self.input_size:
            order = "(B, T, I)" if self.batch_first else "(T, B, I)"
            raise ValueError(f"x must have shape {order} with I = input_size = "
                             f"{self.input_size}, got {x.shape}")
        return x.transpose(1, 0, 2) if self.batch_first else x

    def _state(self, value, name, B):
        """An initial state (L*D, B, H) as a list of (B, H) per layer and direction."""
        n = self.num_layers * self.num_directions
        if value is None:
            return [None] * n
        arr = np.asarray(value)
        if arr.dtype != self.dtype:
            raise TypeError(f"{name} has dtype {arr.dtype} but the layer has dtype {self.dtype}")
        if arr.shape != (n, B, self.hidden_size):
            raise ValueError(f"{name} must have shape (num_layers * num_directions, B, H) = "
                             f"{(n, B, self.hidden_size)}, got {arr.shape}")
        return list(arr)

    def _split_hx(self, hx, B):
        if self._cell == "lstm":
            if hx is None:
                hx = (None, None)
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError("hx of an LSTM must be a tuple (h0, c0) or None")
            return self._state(hx[0], "h0", B), self._state(hx[1], "c0", B)
        return self._state(hx, "hx", B), None

    def forward(self, x, hx=None, lengths=None):
        """Run the layer.  x (T, B, I) ((B, T, I) with batch_first); hx (L*D, B, H)
        or None (LSTM: a tuple (h0, c0)); lengths (B,) or None.

        Returns ``(output, h_n)`` (LSTM: ``(output, (h_n, c_n))``) with PyTorch's
        shapes: output (T, B, D*H) ((B, T, D*H) with batch_first), zero past each
        sequence's length; h_n (L*D, B, H).
        """
        x = self._as_input(x)
        T, B, _ = x.shape
        lengths = check_lengths(lengths, T, B)
        h0s, c0s = self._split_hx(hx, B)
        forward_fn = _FUNCTIONS[self._cell][0]
        extra = {"nonlinearity": self.nonlinearity} if self._cell == "rnn" else {}
        tape = {"caches": [], "masks": [], "lengths": lengths}
        h_n, c_n = [], []
        inp = x
        p = self._params
        for layer in range(self.num_layers):
            outs = []
            for d in range(self.num_directions):
                i = layer * self.num_directions + d
                weights = [p.get(name) for name in self._slots[i]]
                xin = reverse_within_lengths(inp, lengths) if d else inp
                states = (h0s[i], c0s[i]) if self._cell == "lstm" else (h0s[i],)
                *result, cache = forward_fn(xin, *states, *weights, lengths=lengths,
                                            training=self.training, backend=self.backend,
                                            **extra)
                out = result[0]
                outs.append(reverse_within_lengths(out, lengths) if d else out)
                h_n.append(result[1])
                if self._cell == "lstm":
                    c_n.append(result[2])
                tape["caches"].append(cache)
            inp = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=2)
            if self.training and self.dropout > 0 and layer < self.num_layers - 1:
                keep = 1.0 - self.dropout
                mask = (self._rng.random(inp.shape) < keep).astype(self.dtype) / self.dtype.type(keep)
                tape["masks"].append(mask)
                inp = inp * mask
        output = inp.transpose(1, 0, 2) if self.batch_first else inp
        if not output.flags.writeable:
            output = output.copy()
        self._tape = tape if self.training else None
        if self._cell == "lstm":
            return output, (_stack(h_n), _stack(c_n))
        return output, _stack(h_n)

    __call__ = forward

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
        if d_c_n is not None and self._cell != "lstm":
            raise TypeError(f"d_c_n is for an LSTM; a {type(self).__name__} has no cell state")
        first = tape["caches"][0]
        T, B, _ = first.x.shape
        D, H = self.num_directions, self.hidden_size
        d_output = np.asarray(d_output)
        expected = (B, T, D * H) if self.batch_first else (T, B, D * H)
        if d_output.dtype != self.dtype:
            raise TypeError(f"d_output has dtype {d_output.dtype} but the layer has dtype "
                            f"{self.dtype}")
        if d_output.shape != expected:
            raise ValueError(f"d_output must have the output's shape {expected}, "
                             f"got {d_output.shape}")
        d_inp = d_output.transpose(1, 0, 2) if self.batch_first else d_output
        dh = self._state(d_h_n, "d_h_n", B)
        dc = self._state(d_c_n, "d_c_n", B) if self._cell == "lstm" else None
        self._tape = None
        backward_fn = _FUNCTIONS[self._cell][1]
        lengths = tape["lengths"]
        grads, dh0, dc0 = {}, [None] * len(dh), [None] * len(dh)
        for layer in reversed(range(self.num_layers)):
            dx = None
            for d, sfx in enumerate(self._suffixes()):
                i = layer * D + d
                d_out = d_inp[:, :, d * H:(d + 1) * H]
                if d:
                    d_out = reverse_within_lengths(d_out, lengths)
                ups = (d_out, dh[i], dc[i]) if self._cell == "lstm" else (d_out, dh[i])
                g = backward_fn(*ups, tape["caches"][i])
                gx = reverse_within_lengths(g.dx, lengths) if d else g.dx
                dx = gx if dx is None else dx + gx
                dh0[i] = g.dh0
                if self._cell == "lstm":
                    dc0[i] = g.dc0
                grads[f"weight_ih_l{layer}{sfx}"] = g.dW_ih
                grads[f"weight_hh_l{layer}{sfx}"] = g.dW_hh
                if self.bias:
                    grads[f"bias_ih_l{layer}{sfx}"] = g.db_ih
                    grads[f"bias_hh_l{layer}{sfx}"] = g.db_hh
            if layer > 0:
                masks = tape["masks"]
                d_inp = dx * masks[layer - 1] if masks else dx
        self.grads = {name: grads[name] for name in self._params}
        dx = dx.transpose(1, 0, 2) if self.batch_first else dx
        if self._cell == "lstm":
            return dx, (_stack(dh0), _stack(dc0))
        return dx, _stack(dh0)


class RNN(_Recurrent):
    """An Elman RNN layer with ``torch.nn.RNN``'s arguments, names and shapes.

    ``RNN(input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
    batch_first=False, dropout=0.0, bidirectional=False, *, dtype=np.float32,
    backend=None, seed=None)``; ``seed`` is an int, None or a
    ``numpy.random.Generator`` (initialisation and dropout masks).
    """

    _cell = "rnn"

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, *, dtype=np.float32,
                 backend=None, seed=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, nonlinearity=nonlinearity, dtype=dtype,
                         backend=backend, seed=seed)


class LSTM(_Recurrent):
    """An LSTM layer with ``torch.nn.LSTM``'s arguments (no ``proj_size``), names and shapes.

    ``forward`` takes and returns the state as a tuple ``(h, c)``.
    """

    _cell = "lstm"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, dtype=np.float32, backend=None, seed=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype=dtype, backend=backend, seed=seed)


class GRU(_Recurrent):
    """A GRU layer with ``torch.nn.GRU``'s arguments, names and shapes."""

    _cell = "gru"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, dtype=np.float32, backend=None, seed=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype=dtype, backend=backend, seed=seed)


class _Cell(_Module):
    """What RNNCell, LSTMCell and GRUCell share: one step of the cell, the same
    equations and kernels as the layers (a sequence of length 1).

    In training mode each ``forward`` saves its step on a stack and each
    ``backward`` takes the latest one off it, so a custom loop runs forward
    over its steps and then backward over them in reverse order (backprop
    through time by hand).  Parameter gradients add up in ``self.grads``
    across backward calls until :meth:`zero_grad`.
    """

    def __init__(self, input_size, hidden_size, bias=True, *, nonlinearity="tanh",
                 dtype=np.float32, backend=None, seed=None):
        self.input_size = check_positive_int(input_size, "input_size")
        self.bias = bool(bias)
        self._steps = []
        self._init_module(hidden_size, nonlinearity=nonlinearity, dtype=dtype, backend=backend,
                          seed=seed)
        self.zero_grad()

    def _shapes(self):
        GH = GATES[self._cell] * self.hidden_size
        shapes = {"weight_ih": (GH, self.input_size), "weight_hh": (GH, self.hidden_size)}
        if self.bias:
            shapes.update(bias_ih=(GH,), bias_hh=(GH,))
        return shapes

    def _config(self):
        return dict(input_size=self.input_size, hidden_size=self.hidden_size, bias=self.bias,
                    nonlinearity=self.nonlinearity, dtype=self.dtype.name)

    def _forget(self):
        self._steps = []

    def zero_grad(self):
        """Set every accumulated parameter gradient to zero."""
        self.grads = {name: np.zeros_like(p) for name, p in self._params.items()}

    def _row_state(self, value, name, B):
        if value is None:
            return None
        arr = np.asarray(value)
        if arr.dtype != self.dtype:
            raise TypeError(f"{name} has dtype {arr.dtype} but the cell has dtype {self.dtype}")
        if arr.shape != (B, self.hidden_size):
            raise ValueError(f"{name} must have shape (B, H) = {(B, self.hidden_size)}, "
                             f"got {arr.shape}")
        return arr

    def forward(self, x, hx=None):
        """One step: x (B, I), hx (B, H) or None (LSTMCell: a tuple (h, c) or None).
        Returns h' (B, H) (LSTMCell: (h', c'))."""
        x = np.asarray(x)
        if x.dtype != self.dtype:
            raise TypeError(f"x has dtype {x.dtype} but the cell has dtype {self.dtype}")
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(f"x must have shape (B, I) with I = input_size = {self.input_size}, "
                             f"got {x.shape}")
        B = x.shape[0]
        if self._cell == "lstm":
            h, c = (None, None) if hx is None else hx
            states = (self._row_state(h, "h", B), self._row_state(c, "c", B))
        else:
            states = (self._row_state(hx, "hx", B),)
        p = self._params
        extra = {"nonlinearity": self.nonlinearity} if self._cell == "rnn" else {}
        *result, cache = _FUNCTIONS[self._cell][0](
            x[None], *states, p["weight_ih"], p["weight_hh"], p.get("bias_ih"), p.get("bias_hh"),
            training=self.training, backend=self.backend, **extra)
        if self.training:
            self._steps.append(cache)
        if self._cell == "lstm":
            return result[1], result[2]
        return result[1]

    __call__ = forward

    def backward(self, d_h, d_c=None):
        """Backpropagate through the latest step not yet backpropagated.  d_h (B, H)
        (LSTMCell also d_c, or None).  Returns (dx, dhx) (LSTMCell: (dx, (dh, dc)));
        adds the parameter gradients to ``self.grads``."""
        if not self._steps:
            raise RuntimeError("backward needs a training-mode forward step that has not been "
                               "backpropagated yet")
        if d_c is not None and self._cell != "lstm":
            raise TypeError(f"d_c is for an LSTMCell; a {type(self).__name__} has no cell state")
        cache = self._steps[-1]
        d_h = None if d_h is None else np.asarray(d_h)[None]  # out of a length-1 sequence
        ups = (d_h, None, d_c) if self._cell == "lstm" else (d_h, None)
        g = _FUNCTIONS[self._cell][1](*ups, cache)
        self._steps.pop()
        for name, grad in (("weight_ih", g.dW_ih), ("weight_hh", g.dW_hh), ("bias_ih", g.db_ih),
                           ("bias_hh", g.db_hh)):
            if name in self.grads:
                self.grads[name] += grad
        if self._cell == "lstm":
            return g.dx[0], (g.dh0, g.dc0)
        return g.dx[0], g.dh0


class RNNCell(_Cell):
    """One Elman step with ``torch.nn.RNNCell``'s arguments and parameter names.

    ``RNNCell(input_size, hidden_size, bias=True, nonlinearity="tanh", *,
    dtype=np.float32, backend=None, seed=None)``.
    """

    _cell = "rnn"

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", *,
                 dtype=np.float32, backend=None, seed=None):
        super().__init__(input_size, hidden_size, bias, nonlinearity=nonlinearity, dtype=dtype,
                         backend=backend, seed=seed)


class LSTMCell(_Cell):
    """One LSTM step with ``torch.nn.LSTMCell``'s arguments and parameter names."""

    _cell = "lstm"

    def __init__(self, input_size, hidden_size, bias=True, *, dtype=np.float32, backend=None,
                 seed=None):
        super().__init__(input_size, hidden_size, bias, dtype=dtype, backend=backend, seed=seed)


class GRUCell(_Cell):
    """One GRU step with ``torch.nn.GRUCell``'s arguments and parameter names."""

    _cell = "gru"

    def __init__(self, input_size, hidden_size, bias=True, *, dtype=np.float32, backend=None,
                 seed=None):
        super().__init__(input_size, hidden_size, bias, dtype=dtype, backend=backend, seed=seed)
