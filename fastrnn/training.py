"""What training an RNN needs around the kernels: a time-distributed output
layer, per-step losses, gradient clipping, truncated BPTT, optimisers and a
progress line.

Everything works on NumPy arrays and on dicts of named parameters and
gradients, the form fastrnn's layers use (``layer.named_parameters()``,
``layer.grads``), so the pieces combine with any layer or with each other::

    out, _ = rnn(x, lengths=lengths)
    loss, d_logits = softmax_cross_entropy(head(out), targets, lengths=lengths)
    rnn.backward(head.backward(d_logits))
    grads = {**prefixed("rnn", rnn.grads), **prefixed("head", head.grads)}
    norm = clip_grad_norm(grads, 1.0)
    opt.step(grads)
"""
import sys
import time

import numpy as np

from . import _threads
from ._validation import (as_generator, check_dtype, check_lengths, check_positive_int,
                          is_number)

__all__ = [
    "Linear", "mse", "softmax_cross_entropy", "global_norm", "clip_grad_norm",
    "clip_grad_value", "prefixed", "truncated_bptt", "SGD", "Adam", "Adagrad", "Progress",
]

# --- the output layer ------------------------------------------------------------------

_matmul_kernel = None  # fastrnn.kernels._matmul once loaded; False where it is not built


def _matmul(a, b, trans_a=False, trans_b=False):
    """op(a) @ op(b) for 2-D arrays of one float dtype, op transposing where its
    flag is set, on fastrnn's own threads (``kernels/_matmul.pyx`` says why:
    NumPy's BLAS pool would spin beside the recurrence's threads); NumPy's
    matmul where the Cython kernels are not built."""
    global _matmul_kernel
    if _matmul_kernel is None:
        try:
            from .kernels import _matmul as _matmul_kernel
        except ImportError:
            _matmul_kernel = False
    if _matmul_kernel is False:
        return (a.T if trans_a else a) @ (b.T if trans_b else b)
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    out = np.empty((a.shape[1 if trans_a else 0], b.shape[0 if trans_b else 1]), a.dtype)
    _matmul_kernel.matmul(a, b, out, trans_a, trans_b, _threads.get_num_threads())
    return out



class Linear:
    """A time-distributed linear read-out ``y_t = h_t W^T + b`` over the last axis.

    ``Linear(in_features, out_features, bias=True, *, dtype=np.float32, seed=None)``;
    parameters ``weight (out, in)`` and ``bias (out,)`` (PyTorch's names and its
    U(-1/sqrt(in), 1/sqrt(in)) initialisation).  ``forward(h)`` takes any
    leading shape (T, B, in) or (B, in); ``backward(dy)`` returns dh and stores
    the parameter gradients in ``self.grads``.
    """

    def __init__(self, in_features, out_features, bias=True, *, dtype=np.float32, seed=None):
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        self.dtype = check_dtype(dtype)
        rng = as_generator(seed)
        k = 1.0 / np.sqrt(self.in_features)
        self.params = {"weight": rng.uniform(-k, k, (self.out_features, self.in_features))
                       .astype(self.dtype)}
        if bias:
            self.params["bias"] = rng.uniform(-k, k, self.out_features).astype(self.dtype)
        self.grads = {}
        self._h = None

    def named_parameters(self):
        return list(self.params.items())

    def forward(self, h):
        h = np.asarray(h)
        if h.dtype != self.dtype:
            raise TypeError(f"h has dtype {h.dtype} but the layer has dtype {self.dtype}")
        if h.ndim < 1 or h.shape[-1] != self.in_features:
            raise ValueError(f"h must have shape (..., in_features) = (..., {self.in_features}), "
                             f"got {h.shape}")
        # A copy, as the kernels' caches keep: the caller may change h before backward.
        self._h = np.array(h, order="C")
        y = _matmul(self._h.reshape(-1, self.in_features), self.params["weight"], trans_b=True)
        y = y.reshape(h.shape[:-1] + (self.out_features,))
        return y + self.params["bias"] if "bias" in self.params else y

    __call__ = forward

    def backward(self, dy):
        if self._h is None:
            raise RuntimeError("backward needs a forward first (one backward per forward)")
        dy = np.asarray(dy)
        if dy.dtype.kind != "f":
            raise TypeError(f"dy must be real floating point (it is cast to the layer's "
                            f"{self.dtype}), got dtype {dy.dtype}")
        dy = dy.astype(self.dtype, copy=False)
        if dy.shape != self._h.shape[:-1] + (self.out_features,):
            raise ValueError(f"dy must have shape {self._h.shape[:-1] + (self.out_features,)}, "
                             f"got {dy.shape}")
        h2 = self._h.reshape(-1, self.in_features)
        dy2 = dy.reshape(-1, self.out_features)
        self.grads = {"weight": _matmul(dy2, h2, trans_a=True)}
        if "bias" in self.params:
            self.grads["bias"] = dy2.sum(axis=0)
        dh = _matmul(dy2, self.params["weight"]).reshape(self._h.shape)
        self._h = None
        return dh


# --- losses over the steps of a sequence ---------------------------------------------------

def _step_weights(T, B, lengths, last_only):
    """(T, B) weights of each step in the loss: 1 for real steps (only the last
    real one with ``last_only``), 0 for padding."""
    lengths = check_lengths(lengths, T, B)
    steps = np.full(B, T, np.int64) if lengths is None else lengths
    t = np.arange(T)[:, None]
    return (t == steps - 1) if last_only else (t < steps)


def _reduce(total, count, reduction):
    if reduction == "sum":
        return total, 1.0
    if reduction == "mean":
        return total / max(count, 1), 1.0 / max(count, 1)
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


def softmax_cross_entropy(logits, targets, *, lengths=None, last_only=False, reduction="mean"):
    """Softmax cross-entropy of per-step class scores, and its gradient.

    logits (T, B, C), targets (T, B) integer classes.  ``lengths`` (B,) leaves
    padded steps out (they get zero gradient); ``last_only`` takes only each
    sequence's last real step (many-to-one).  ``reduction`` "mean" averages
    over the steps counted, "sum" adds them (BPTT's sum of per-step losses).
    Numerically stable for any logits (log-sum-exp with the maximum taken out).

    Returns ``(loss, d_logits)``, d_logits with the shape and dtype of logits.
    """
    logits = np.asarray(logits)
    if logits.dtype.kind != "f":
        raise TypeError(f"logits must be floating point, got {logits.dtype}")
    if logits.ndim != 3:
        raise ValueError(f"logits must have shape (T, B, C), got {logits.shape}")
    T, B, C = logits.shape
    targets = np.asarray(targets)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"targets must be integer classes, got dtype {targets.dtype}")
    if targets.shape != (T, B):
        raise ValueError(f"targets must have shape (T, B) = {(T, B)}, got {targets.shape}")
    weight = _step_weights(T, B, lengths, last_only)
    if targets[weight].size and (targets[weight].min() < 0 or targets[weight].max() >= C):
        raise ValueError(f"targets must be classes in [0, C) = [0, {C}) on the steps counted")
    safe = np.where(weight, targets, 0)
    z = logits - logits.max(axis=-1, keepdims=True)
    log_sum = np.log(np.exp(z).sum(axis=-1, keepdims=True))
    log_p = z - log_sum
    picked = np.take_along_axis(log_p, safe[..., None], axis=-1)[..., 0]
    loss, scale = _reduce(-float((picked * weight).sum()), int(weight.sum()), reduction)
    grad = np.exp(log_p)
    np.put_along_axis(grad, safe[..., None],
                      np.take_along_axis(grad, safe[..., None], axis=-1) - 1, axis=-1)
    grad *= (weight * scale)[..., None]
    return loss, grad.astype(logits.dtype, copy=False)


def mse(predictions, targets, *, lengths=None, last_only=False, reduction="mean"):
    """Mean squared error of per-step predictions (T, B, F) against targets of the
    same shape, and its gradient.  ``lengths``, ``last_only`` and ``reduction``
    as in :func:`softmax_cross_entropy`; "mean" averages over the steps and
    features counted.  Returns ``(loss, d_predictions)``."""
    predictions = np.asarray(predictions)
    if predictions.dtype.kind != "f":
        raise TypeError(f"predictions must be floating point, got dtype {predictions.dtype}")
    targets = np.asarray(targets)
    if targets.dtype.kind not in "fiu":
        raise TypeError(f"targets must be real numbers, got dtype {targets.dtype}")
    targets = targets.astype(predictions.dtype, copy=False)
    if predictions.ndim != 3:
        raise ValueError(f"predictions must have shape (T, B, F), got {predictions.shape}")
    if targets.shape != predictions.shape:
        raise ValueError(f"targets must have the predictions' shape {predictions.shape}, "
                         f"got {targets.shape}")
    T, B, F = predictions.shape
    weight = _step_weights(T, B, lengths, last_only)[..., None]
    diff = (predictions - targets) * weight
    loss, scale = _reduce(float((diff * diff).sum()), int(weight.sum()) * F, reduction)
    return loss, (2 * scale * diff).astype(predictions.dtype, copy=False)


# --- clipping -------------------------------------------------------------------------

def _arrays(grads, what="grads"):
    """The gradient arrays of a dict, a sequence (None entries skipped) or a
    single array (as torch takes a single tensor), each checked to be a
    writable real floating-point NumPy array: the clipping functions change
    them in place, so they check all first."""
    if isinstance(grads, np.ndarray):
        items = [(None, grads)]
    elif isinstance(grads, dict):
        items = list(grads.items())
    elif isinstance(grads, (list, tuple)):
        items = list(enumerate(grads))
    else:
        raise TypeError(f"{what} must be an array, a dict or a list of arrays, "
                        f"got {type(grads).__name__}")
    out = []
    for name, g in items:
        if g is None:
            continue
        where = what if name is None else f"{what}[{name!r}]"
        if not isinstance(g, np.ndarray):
            raise TypeError(f"{where} must be a NumPy array, got {type(g).__name__}")
        if g.dtype.kind != "f":
            raise TypeError(f"{where} must be floating point, got dtype {g.dtype}")
        if not g.flags.writeable:
            raise ValueError(f"{where} is read-only; it is changed in place")
        out.append(g)
    return out


def _positive(value, name):
    if not is_number(value):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return float(value)


def clip_grad_value(grads, clip_value):
    """Clip every gradient element to [-clip_value, clip_value], in place
    (every gradient is checked before any is changed)."""
    clip_value = _positive(clip_value, "clip_value")
    for g in _arrays(grads):
        np.clip(g, -clip_value, clip_value, out=g)


def global_norm(grads, norm_type=2.0):
    """The norm of all gradients together, as ``torch.nn.utils.clip_grad_norm_``
    computes it: the ``norm_type``-norm of every element of every array, for
    any positive ``norm_type`` (2, the default, is L2) or ``inf`` (the largest
    magnitude).  Summed in float64; norm types other than 1 and 2 are
    scaled by the largest magnitude first, so that a large one neither
    overflows nor underflows."""
    if not is_number(norm_type):
        raise TypeError(f"norm_type must be a number, got {type(norm_type).__name__}")
    p = float(norm_type)
    if not p > 0:  # NaN too
        raise ValueError(f"norm_type must be positive (or inf), got {norm_type!r}")
    arrays = _arrays(grads)
    if p == 2:
        wide = [g.astype(np.float64, copy=False) for g in arrays]
        return float(np.sqrt(sum(float(np.vdot(g, g)) for g in wide)))
    if p == 1:
        return float(sum(float(np.abs(g).sum(dtype=np.float64)) for g in arrays))
    biggest = max((float(np.abs(g).max()) for g in arrays if g.size), default=0.0)
    if p == np.inf or biggest == 0 or not np.isfinite(biggest):
        return biggest
    total = sum(float(((np.abs(g).astype(np.float64) / biggest) ** p).sum()) for g in arrays)
    return biggest * total ** (1 / p)


def clip_grad_norm(grads, max_norm, norm_type=2.0):
    """Scale all gradients together, in place, so their global norm
    (any positive ``norm_type`` or inf, as in :func:`global_norm`) is at most
    ``max_norm``.  Returns the norm before clipping (to log it)."""
    max_norm = _positive(max_norm, "max_norm")
    norm = global_norm(grads, norm_type)
    if norm > max_norm:
        scale = max_norm / (norm + 1e-12)
        for g in _arrays(grads):
            g *= g.dtype.type(scale)
    return norm


def prefixed(prefix, named):
    """{f"{prefix}.{name}": value}: parameters or gradients of several modules in one dict."""
    items = named.items() if isinstance(named, dict) else named
    return {f"{prefix}.{name}": value for name, value in items}


# --- truncated BPTT ----------------------------------------------------------------------

def truncated_bptt(layer, x, k, loss_and_grad, *, hx=None, on_window=None):
    """Walk a long sequence in windows of k steps with truncated BPTT.

    For each window ``x[start:stop]`` the layer runs forward from the state the
    previous window ended in (carried, but not backpropagated through: the
    window boundary cuts the gradient), ``loss_and_grad(output, start, stop)``
    returns ``(loss, d_output)``, and in training mode the layer runs backward
    over the window; ``on_window(start, stop, loss)`` then runs (clip and step
    an optimiser there).  With the layer in eval mode the windows are forward
    only and ``loss_and_grad`` may return ``(loss, None)``.

    x (T, B, I) time-major; hx as the layer takes it.  Returns
    ``(losses, state)``: the loss of each window and the final state.
    """
    k = check_positive_int(k, "k")
    if not all(hasattr(layer, a) for a in ("forward", "backward", "training", "batch_first")):
        raise TypeError(f"layer must be a fastrnn RNN, LSTM or GRU layer, got "
                        f"{type(layer).__name__}")
    if layer.batch_first:
        raise ValueError("truncated_bptt walks the time axis: use a layer with batch_first=False")
    if not callable(loss_and_grad):
        raise TypeError(f"loss_and_grad must be callable, got {type(loss_and_grad).__name__}")
    if on_window is not None and not callable(on_window):
        raise TypeError(f"on_window must be callable or None, got {type(on_window).__name__}")
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"x must be floating point, got dtype {x.dtype}")
    if x.ndim != 3:
        raise ValueError(f"x must have shape (T, B, I), got {x.shape}")
    losses, state = [], hx
    for start in range(0, x.shape[0], k):
        stop = min(start + k, x.shape[0])
        output, state = layer(x[start:stop], state)
        loss, d_output = loss_and_grad(output, start, stop)
        if layer.training:
            layer.backward(d_output)
        losses.append(loss)
        if on_window is not None:
            on_window(start, stop, loss)
    return losses, state


# --- optimisers --------------------------------------------------------------------------

class _Optimizer:
    """Updates named parameter arrays in place from gradients under the same names.

    ``params``: a dict ``{name: array}`` or ``(name, array)`` pairs (a layer's
    ``named_parameters()``), every array a writable floating-point NumPy
    array.  ``step(grads)`` and ``load_state_dict(state)`` check everything
    they are given before they change anything: on an error nothing changed.
    """

    _slots = ()  # the state each parameter has (state_dict keys: f"{slot}.{name}")

    def __init__(self, params, lr):
        self.params = _named_arrays(params)
        self.lr = _positive(lr, "lr")
        self.t = 0
        self.state = {}  # name -> {slot: array}

    def _slot(self, name, slot):
        per = self.state.setdefault(name, {})
        if slot not in per:
            per[slot] = np.zeros_like(self.params[name])
        return per[slot]

    def step(self, grads):
        """One update from ``grads`` ({name: array or None}); names, shapes
        and dtypes are checked for every gradient before any parameter moves."""
        if not isinstance(grads, dict):
            raise TypeError(f"grads must be a dict {{name: array}}, got {type(grads).__name__}")
        checked = {}
        for name, g in grads.items():
            if name not in self.params:
                raise ValueError(f"gradient for a parameter this optimiser does not hold: "
                                 f"{name!r}")
            if g is None:
                continue
            g = np.asarray(g)
            p = self.params[name]
            if g.dtype.kind not in "fiu":
                raise TypeError(f"grads[{name!r}] must be real numbers, got dtype {g.dtype}")
            if g.shape != p.shape:
                raise ValueError(f"grads[{name!r}] must have the parameter's shape {p.shape}, "
                                 f"got {g.shape}")
            checked[name] = g.astype(p.dtype, copy=False)
        self.t += 1
        for name, g in checked.items():
            self._update(name, self.params[name], g)

    def state_dict(self):
        """The optimiser's state as flat arrays (save it beside the model's)."""
        out = {"t": np.array(self.t)}
        for name, slots in self.state.items():
            for slot, value in slots.items():
                out[f"{slot}.{name}"] = value.copy()
        return out

    def load_state_dict(self, state):
        """Restore :meth:`state_dict`'s output; all of it is checked first."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        if "t" not in state:
            raise ValueError("state has no 't' (the step count)")
        t = np.asarray(state["t"])
        if t.shape != () or t.dtype.kind not in "iu" or int(t) < 0:
            raise ValueError(f"state['t'] must be a non-negative integer, got {state['t']!r}")
        new = {}
        for key, value in state.items():
            if key == "t":
                continue
            slot, _, name = str(key).partition(".")
            if slot not in self._slots:
                raise ValueError(f"state key {key!r}: {type(self).__name__} keeps "
                                 f"{', '.join(self._slots) or 'no state'} per parameter")
            if name not in self.params:
                raise ValueError(f"state key {key!r}: unknown parameter {name!r}")
            value = np.asarray(value)
            p = self.params[name]
            if value.dtype.kind not in "fiu" or value.shape != p.shape:
                raise ValueError(f"state[{key!r}] must be real numbers of the parameter's shape "
                                 f"{p.shape}, got {value.dtype} {value.shape}")
            new.setdefault(name, {})[slot] = np.array(value, p.dtype)
        self.t = int(t)
        self.state = new


def _named_arrays(params):
    """{name: array} from a dict or (name, array) pairs, each checked."""
    if isinstance(params, dict):
        items = list(params.items())
    else:
        try:
            items = list(params)
        except TypeError:
            raise TypeError(f"params must be a dict or (name, array) pairs, got "
                            f"{type(params).__name__}") from None
        if not all(isinstance(i, tuple) and len(i) == 2 and isinstance(i[0], str)
                   for i in items):
            raise TypeError("params must be a dict or (name, array) pairs, as "
                            "layer.named_parameters() gives (not layer.parameters())")
    if not items:
        raise ValueError("params is empty: the optimiser has nothing to update")
    out = {}
    for name, p in items:
        if name in out:
            raise ValueError(f"params names {name!r} twice")
        if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
            what = p.dtype if isinstance(p, np.ndarray) else type(p).__name__
            raise TypeError(f"params[{name!r}] must be a floating-point NumPy array (updated "
                            f"in place), got {what}")
        if not p.flags.writeable:
            raise ValueError(f"params[{name!r}] is read-only; the optimiser updates it in place")
        out[name] = p
    return out


def _fraction(value, name):
    """A number in [0, 1)."""
    if not is_number(value):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


def _eps(value):
    if not is_number(value):
        raise TypeError(f"eps must be a number, got {type(value).__name__}")
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"eps must be >= 0 and finite, got {value!r}")
    return float(value)


class SGD(_Optimizer):
    """Stochastic gradient descent with (heavy-ball) momentum: v = mu v + g; p -= lr v."""

    _slots = ("velocity",)

    def __init__(self, params, lr=0.1, momentum=0.0):
        super().__init__(params, lr)
        self.momentum = _fraction(momentum, "momentum")

    def _update(self, name, p, g):
        if self.momentum:
            v = self._slot(name, "velocity")
            v *= self.momentum
            v += g
            g = v
        p -= p.dtype.type(self.lr) * g


class Adagrad(_Optimizer):
    """Adagrad: s += g^2; p -= lr g / (sqrt(s) + eps)."""

    _slots = ("sum_sq",)

    def __init__(self, params, lr=0.01, eps=1e-10):
        super().__init__(params, lr)
        self.eps = _eps(eps)

    def _update(self, name, p, g):
        s = self._slot(name, "sum_sq")
        s += g * g
        p -= (self.lr * g / (np.sqrt(s) + self.eps)).astype(p.dtype)


class Adam(_Optimizer):
    """Adam (Kingma and Ba) with bias correction; ``betas`` two numbers in [0, 1)."""

    _slots = ("m", "v")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, lr)
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}") from None
        self.betas = (_fraction(b1, "betas[0]"), _fraction(b2, "betas[1]"))
        self.eps = _eps(eps)

    def _update(self, name, p, g):
        b1, b2 = self.betas
        m, v = self._slot(name, "m"), self._slot(name, "v")
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        m_hat = m / (1 - b1 ** self.t)
        v_hat = v / (1 - b2 ** self.t)
        p -= (self.lr * m_hat / (np.sqrt(v_hat) + self.eps)).astype(p.dtype)


# --- progress --------------------------------------------------------------------------

class Progress:
    """A progress line for training loops: step, loss, tokens/s.

    ``Progress(total, every=1.0, quiet=False, stream=sys.stderr)``; call
    ``update(loss, tokens)`` once per step.  On a terminal the line redraws in
    place at most every ``every`` seconds; elsewhere (a log file) it prints a
    line at that interval.  ``quiet=True`` prints nothing.
    """

    def __init__(self, total=None, *, every=1.0, quiet=False, stream=None):
        self.total, self.every, self.quiet = total, float(every), quiet
        self.stream = sys.stderr if stream is None else stream
        self.step = 0
        self.tokens = 0
        self.start = self._last = time.perf_counter()
        self.loss = float("nan")

    def update(self, loss, tokens=0):
        self.step += 1
        self.tokens += tokens
        self.loss = float(loss)
        now = time.perf_counter()
        if not self.quiet and (now - self._last >= self.every or self.step == self.total):
            self._last = now
            self._print()

    def line(self):
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        of = f"/{self.total}" if self.total else ""
        return (f"step {self.step}{of}  loss {self.loss:.4f}  "
                f"{self.tokens / elapsed:,.0f} tokens/s  {elapsed:.0f} s")

    def _print(self):
        tty = getattr(self.stream, "isatty", lambda: False)()
        self.stream.write(("\r" + self.line() + "\033[K") if tty else self.line() + "\n")
        self.stream.flush()

    def close(self):
        if not self.quiet and getattr(self.stream, "isatty", lambda: False)():
            self.stream.write("\n")
