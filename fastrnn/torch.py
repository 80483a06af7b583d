"""fastrnn inside PyTorch: ``torch.nn``'s recurrent modules on fastrnn's kernels.

``RNN``, ``LSTM``, ``GRU``, ``RNNCell``, ``LSTMCell`` and ``GRUCell`` are
subclasses of the ``torch.nn`` modules of the same names: the same
constructor arguments, parameters, ``state_dict`` keys, initialisation and
``forward(input, hx=None)`` (``proj_size`` included), so replacing ``torch.nn.LSTM(...)`` by
``fastrnn.torch.LSTM(...)`` is the whole change, and ``convert(model)``
makes that change in place in an existing model.  Only ``forward`` differs:
each layer and direction is one call of fastrnn's kernels, wrapped in a
``torch.autograd.Function`` whose backward is fastrnn's BPTT (gradients of
the input, the initial states and every parameter).  Tensors and NumPy
arrays share memory both ways; nothing is saved for the backward under
``torch.no_grad()``/``inference_mode`` or when nothing requires a gradient.

bfloat16, as torch's modules: under ``torch.autocast("cpu",
dtype=torch.bfloat16)`` the modules run fastrnn's bf16 compute (bf16
products, float32 accumulation, gates and state) and return the dtypes
torch's modules return there (``_AUTOCAST_OUT``); modules whose parameters
are bfloat16 (``model.to(torch.bfloat16)``) run the same way on their
values, taking and returning bfloat16 tensors, with their gradients in
bfloat16.

An LSTM with ``proj_size`` computes in float32 where the others would run
bf16 compute (fastrnn's bf16 products have no projection yet), and returns
the dtypes torch returns.

What fastrnn cannot run raises ``ValueError`` naming it: tensors on another
device than the CPU, dtypes other than float32, float64 and bfloat16.
Double backward (a gradient of a gradient) is not supported and says so.

Needs PyTorch (``pip install torch``, or the extra: ``pip install -e ".[torch]"``
from a clone); ``import fastrnn`` never
imports it.
"""
try:
    import torch
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError("fastrnn.torch needs PyTorch: pip install torch (or, from a clone of "
                      "fastrnn, pip install -e '.[torch]')") from exc

import warnings

from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import functional, layernorm
from ._layernorm import NORM_CELLS
from ._spec import CELLS
from .layers import _param_kind, reverse_within_lengths
from .quantization import QuantizedWeight, quantize_weight

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "LayerNormLSTM",
           "LayerNormGRU", "CellRNN", "convert", "quantize_dynamic"]

_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
# What torch's modules return under torch.autocast("cpu", dtype=torch.bfloat16)
# (torch 2.13; tests/test_fastrnn_torch.py holds the table to torch): the
# modules autocast reaches return bfloat16, the others float32.
_AUTOCAST_OUT = {nn.RNN: torch.bfloat16, nn.LSTM: torch.bfloat16, nn.GRU: torch.float32,
                 nn.RNNCell: torch.bfloat16, nn.LSTMCell: torch.float32,
                 nn.GRUCell: torch.float32}


def _array(t):
    """The NumPy view of a CPU tensor (no copy; a float32 copy of a bfloat16
    one, whose values float32 holds exactly), or None; an int8 module's
    QuantizedWeight as it is."""
    if t is None or isinstance(t, QuantizedWeight):
        return t
    t = t.detach()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def _precision(module):
    """(bf16, out_dtype): whether ``module`` runs fastrnn's bf16 compute now,
    and the dtype its results are returned in (None: the dtype fastrnn
    computes in; an int8 module's: float32, autocast or not)."""
    if getattr(module, "_fastrnn_int8", None):
        return False, None
    weight = getattr(module, "weight_ih_l0", None)  # a layer's; a cell's is weight_ih
    if (module.weight_ih if weight is None else weight).dtype == torch.bfloat16:
        return True, torch.bfloat16
    if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16:
        kind = next(c for c in type(module).__mro__ if c in _AUTOCAST_OUT)
        return True, _AUTOCAST_OUT[kind]
    return False, None


def _tensor(a):
    """A tensor on the memory of ``a``; a copy where fastrnn's cache holds
    ``a`` read-only (the caller may change what it gets) or where ``a`` runs
    backwards in time (a reversed view, which torch cannot hold)."""
    if not a.flags.writeable or any(s < 0 for s in a.strides):
        a = a.copy()
    return torch.from_numpy(a)


def _options(module):
    return {"nonlinearity": module.nonlinearity} if isinstance(module, (nn.RNN, nn.RNNCell)) else {}


def _compute(module, bf16):
    """The forward's compute_dtype option: int8 for a module made by
    quantize_dynamic; bf16 compute where ``bf16``, but for a projected LSTM
    (not run in bf16 yet: float32 on the bf16 values)."""
    if getattr(module, "_fastrnn_int8", None):
        return {"compute_dtype": "int8"}
    return {"compute_dtype": "bfloat16"} if bf16 and not getattr(module, "proj_size", 0) else {}


def _unsupported(module):
    """Why fastrnn cannot run ``module`` as it is, or None."""
    for name, p in module.named_parameters():
        if p.device.type != "cpu":
            return f"{name} is on {p.device} (fastrnn runs on the CPU)"
        if p.dtype not in _DTYPES:
            return f"{name} is {p.dtype} (fastrnn runs float32, float64 and bfloat16)"
    return None


def _torch_name(module):
    """The name of the torch.nn class that ``module``'s class derives from."""
    return next(c.__name__ for c in type(module).__mro__ if c.__module__.startswith("torch.nn"))


def _check_module(module):
    reason = _unsupported(module)
    if reason is not None:
        kind = _torch_name(module)
        raise ValueError(f"fastrnn.torch.{type(module).__name__} cannot run this module: "
                         f"{reason}; use torch.nn.{kind} for it")


def _check_int8(module, tensors):
    """An int8 module (quantize_dynamic) runs inference only: refuse training
    mode and inputs that want a gradient."""
    if not getattr(module, "_fastrnn_int8", None):
        return
    why = None
    if module.training:
        why = "it is in training mode: call .eval() first"
    elif torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        why = "an input requires a gradient"
    if why:
        raise ValueError(f"this {type(module).__name__} runs int8 inference only "
                         f"(fastrnn.torch.quantize_dynamic), and {why}; to train, train the "
                         f"float model and quantize it again")


def _int8_weights(module, names, weights):
    """``weights`` (W_ih, W_hh, ...: the parameters ``names``) with W_ih and
    W_hh replaced by an int8 module's QuantizedWeights."""
    q = getattr(module, "_fastrnn_int8", None)
    if not q:
        return weights
    return (q[names[0]], q[names[1]], *weights[2:])


def _check_tensor(module, t, name):
    if t is not None and t.device.type != "cpu":
        kind = _torch_name(module)
        raise ValueError(f"{name} is on {t.device}: fastrnn.torch.{type(module).__name__} runs "
                         f"on the CPU; use torch.nn.{kind} for other devices")


class _Direction(torch.autograd.Function):
    """One cell over a sequence in one direction: x (T, B, I), the cell's
    initial states (each (B, H) or None: h0, and c0 for the LSTM), the
    weights (W_ih, W_hh, b_ih, b_hh, then the spec's extras, each a tensor
    or None) -> out (T, B, H) and the final states."""

    @staticmethod
    def forward(ctx, cell, options, reverse, lengths, x, *tensors):
        n = len(CELLS[cell].states)
        states, weights = tensors[:n], tensors[n:]
        out, finals, cache = _run(cell, options, reverse, lengths, x, states, weights,
                                  training=True)
        # (gradients come back float32 for bfloat16 tensors; autograd casts them)
        ctx.fastrnn = (cell, reverse, lengths, cache, tuple(t is None for t in tensors))
        return (_tensor(out), *map(_tensor, finals))

    @staticmethod
    def backward(ctx, d_out, *d_finals):
        if torch.is_grad_enabled():
            raise RuntimeError("fastrnn.torch does not support double backward (a gradient of "
                               "a gradient: create_graph=True through a fastrnn layer); use "
                               "torch.nn's module for that")
        cell, reverse, lengths, cache, missing = ctx.fastrnn
        d = _array(d_out.contiguous())
        if reverse:
            d = reverse_within_lengths(d, lengths)
        g = getattr(functional, f"{cell}_backward")(
            d, *(_array(t.contiguous()) for t in d_finals), cache)
        dx = reverse_within_lengths(g.dx, lengths) if reverse else g.dx
        spec = CELLS[cell]
        grads = [getattr(g, name) for name in spec.state_grads]
        grads += [g.dW_ih, g.dW_hh, g.db_ih, g.db_hh, *(getattr(g, "d" + name)
                                                       for name in spec.extras)]
        return (None, None, None, None, _tensor(dx),
                *(None if gone else _tensor(a) for a, gone in zip(grads, missing)))


def _run(cell, options, reverse, lengths, x, states, weights, training):
    """fastrnn's forward of one direction on the tensors' memory: the arrays
    (out (T, B, H), finals, cache)."""
    xa = _array(x)
    if reverse:
        xa = reverse_within_lengths(xa, lengths)
    extras = dict(zip(CELLS[cell].extras, map(_array, weights[4:])))  # W_ch, W_hr, by name
    out, *finals, cache = getattr(functional, f"{cell}_forward")(
        xa, *map(_array, states), *map(_array, weights[:4]), lengths=lengths, training=training,
        **extras, **options)  # options: the cell's, and compute_dtype
    if reverse:
        out = reverse_within_lengths(out, lengths)
    return out, finals, cache


def _direction(cell, options, reverse, lengths, x, states, weights):
    """out (T, B, H) and the final states of one direction: through autograd
    when anything needs a gradient, else fastrnn's inference path."""
    if torch.is_grad_enabled() and any(getattr(t, "requires_grad", False)
                                       for t in (x, *states, *weights)):
        # autocast off inside: the Function's tensors are its own business
        with torch.autocast("cpu", enabled=False):
            out, *finals = _Direction.apply(cell, options, reverse, lengths, x, *states,
                                            *weights)
        return out, finals
    out, finals, _ = _run(cell, options, reverse, lengths, x, states, weights, training=False)
    return _tensor(out), [_tensor(f) for f in finals]


# --- layers ------------------------------------------------------------------------


class _Recurrent:
    """The forward that RNN, LSTM and GRU share; mixed in before torch's class."""

    _cell = None  # the spec name
    _dims_word = ""  # torch's message for input of the wrong dimensions: "4D" ...

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _check_module(self)

    def _layer_weights(self, layer, sfx):
        """(W_ih, W_hh, b_ih, b_hh, *extras) of one layer and direction, None
        for what the module does not have (biases, the LSTM's weight_hr
        without proj_size; torch has no peepholes)."""
        names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
        names = [f"{n}_l{layer}{sfx}"
                 for n in names + [_param_kind(name) for name in CELLS[self._cell].extras]]
        return _int8_weights(self, names, tuple(getattr(self, n, None) for n in names))

    def _check_hx_dims(self, hx, batched):
        """torch's messages for an hx of the wrong number of dimensions."""
        want = 3 if batched else 2
        kind = "batched 3-D" if batched else "unbatched 2-D"
        if len(CELLS[self._cell].states) == 2:  # the LSTM's (h, c)
            if hx[0].dim() != want or hx[1].dim() != want:
                raise RuntimeError(f"For {kind} input, hx and cx should also be {want}-D but got "
                                   f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors")
        elif hx.dim() != want:
            raise RuntimeError(f"For {kind} input, hx should also be {want}-D but got "
                               f"{hx.dim()}-D tensor")

    def forward(self, input, hx=None):
        _check_module(self)
        k = len(CELLS[self._cell].states)
        packed = isinstance(input, PackedSequence)
        if packed:
            data, batch_sizes, sorted_indices, unsorted_indices = input
            _check_tensor(self, data, "input")
            if hx is not None:
                hx = self.permute_hidden(hx, sorted_indices)
                self.check_forward_args(data, hx, batch_sizes)
            else:
                self.check_input(data, batch_sizes)
            # The packed steps as (T, B, I) in the packed (longest first) order;
            # the lengths go to the kernels, which stop each sequence there.
            x, lengths_t = pad_packed_sequence(PackedSequence(data, batch_sizes))
            lengths = lengths_t.numpy()
            batched = True
        else:
            _check_tensor(self, input, "input")
            if input.dim() not in (2, 3):  # torch's words, which differ by class
                what = f"{input.dim()}D{self._dims_word}"
                raise ValueError(f"{type(self).__name__}: Expected input to be 2D or 3D, got "
                                 f"{what} instead")
            batched = input.dim() == 3
            if not batched:
                input = input.unsqueeze(0 if self.batch_first else 1)
            if hx is not None:
                self._check_hx_dims(hx, batched)
                if not batched:
                    hx = tuple(h.unsqueeze(1) for h in hx) if k == 2 else hx.unsqueeze(1)
                self.check_forward_args(input, hx, None)
            else:
                self.check_input(input, None)
            x = input.transpose(0, 1) if self.batch_first else input
            lengths = None
        if hx is not None:
            for h in (hx if k == 2 else (hx,)):
                _check_tensor(self, h, "hx")
        states = None if hx is None else (tuple(hx) if k == 2 else (hx,))
        _check_int8(self, (x, *(states or ())))
        D = 2 if self.bidirectional else 1
        bf16, out_dtype = _precision(self)
        options = {**_options(self), **_compute(self, bf16)}
        if bf16:
            x = x.float()
            states = None if states is None else tuple(s.float() for s in states)
        inp, finals = x, []
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                i = layer * D + d
                slot = (None,) * k if states is None else tuple(s[i] for s in states)
                out, fin = _direction(self._cell, options, d == 1, lengths, inp, slot,
                                      self._layer_weights(layer, "_reverse" if d else ""))
                outs.append(out)
                finals.append(fin)
            inp = outs[0] if D == 1 else torch.cat(outs, 2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                inp = nn.functional.dropout(inp, self.dropout, True)
        h_n = tuple(torch.stack([f[j] for f in finals]) for j in range(k))
        if out_dtype is not None:
            inp, h_n = inp.to(out_dtype), tuple(h.to(out_dtype) for h in h_n)
        if packed:
            out = PackedSequence(pack_padded_sequence(inp, lengths_t).data, batch_sizes,
                                 sorted_indices, unsorted_indices)
            h_n = self.permute_hidden(h_n if k == 2 else h_n[0], unsorted_indices)
            h_n = tuple(h_n) if k == 2 else (h_n,)
        else:
            out = inp.transpose(0, 1) if self.batch_first else inp
            if not batched:
                out = out.squeeze(0 if self.batch_first else 1)
                h_n = tuple(h.squeeze(1) for h in h_n)
        return out, (h_n if k == 2 else h_n[0])

class RNN(_Recurrent, nn.RNN):
    """``torch.nn.RNN`` on fastrnn's kernels (see the module's docstring)."""

    _cell = "rnn"
    _dims_word = " tensor"  # ... and nn.RNN's: "4D tensor"


class LSTM(_Recurrent, nn.LSTM):
    """``torch.nn.LSTM`` on fastrnn's kernels (see the module's docstring), with
    ``proj_size``."""

    _cell = "lstm"


class GRU(_Recurrent, nn.GRU):
    """``torch.nn.GRU`` on fastrnn's kernels (see the module's docstring)."""

    _cell = "gru"


# --- cells -------------------------------------------------------------------------


class _Cell:
    """The forward that RNNCell, LSTMCell and GRUCell share: one step, T = 1."""

    _cell = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _check_module(self)

    def forward(self, input, hx=None):
        """torch's checks in torch's order and words, then one step."""
        _check_module(self)
        if self.hidden_size == 0:  # torch allows it: empty states, nothing for fastrnn to run
            return super().forward(input, hx)
        _check_tensor(self, input, "input")
        name, k = type(self).__name__, len(CELLS[self._cell].states)
        if input.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        states = () if hx is None else (tuple(hx) if k == 2 else (hx,))
        for idx, h in enumerate(states):
            _check_tensor(self, h, "hx")
            if h.dim() not in (1, 2):
                what = f"hx[{idx}]" if k == 2 else "hidden"
                raise ValueError(f"{name}: Expected {what} to be 1D or 2D, got {h.dim()}D instead")
        batched = input.dim() == 2
        if not batched:
            input, states = input.unsqueeze(0), tuple(h.unsqueeze(0) for h in states)
        bf16, out_dtype = _precision(self)
        if input.dtype != self.weight_ih.dtype and not torch.is_autocast_enabled("cpu"):
            raise RuntimeError(f"{name}: input dtype ({input.dtype}) does not match weight "
                               f"dtype ({self.weight_ih.dtype})")
        if input.size(1) != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)} "
                               f"expected {self.input_size}")
        for idx, h in enumerate(states):
            if h.size(0) != input.size(0):
                raise RuntimeError(f"Input batch size {input.size(0)} doesn't match "
                                   f"hidden{idx} batch size {h.size(0)}")
            if h.size(1) != self.hidden_size:
                raise RuntimeError(f"hidden{idx} has inconsistent hidden_size: got {h.size(1)}, "
                                   f"expected {self.hidden_size}")
            if h.dim() != 2:
                raise RuntimeError(f"{name}: hx must be (batch, hidden_size) = "
                                   f"({input.size(0)}, {self.hidden_size}), got {tuple(h.shape)}")
        _check_int8(self, (input, *states))
        weights = _int8_weights(self, ("weight_ih", "weight_hh"),
                                (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh))
        options = {**_options(self), **_compute(self, bf16)}
        if bf16:
            input, states = input.float(), tuple(h.float() for h in states)
        _, finals = _direction(self._cell, options, False, None, input[None],
                               states or (None,) * k, weights)
        if out_dtype is not None:
            finals = [f.to(out_dtype) for f in finals]
        if not batched:
            finals = [f.squeeze(0) for f in finals]
        return tuple(finals) if k == 2 else finals[0]


class RNNCell(_Cell, nn.RNNCell):
    """``torch.nn.RNNCell`` on fastrnn's kernels."""

    _cell = "rnn"


class LSTMCell(_Cell, nn.LSTMCell):
    """``torch.nn.LSTMCell`` on fastrnn's kernels."""

    _cell = "lstm"


class GRUCell(_Cell, nn.GRUCell):
    """``torch.nn.GRUCell`` on fastrnn's kernels."""

    _cell = "gru"


# --- swapping an existing model ------------------------------------------------------

_SWAPS = {nn.RNN: RNN, nn.LSTM: LSTM, nn.GRU: GRU,
          nn.RNNCell: RNNCell, nn.LSTMCell: LSTMCell, nn.GRUCell: GRUCell}


def convert(model):
    """Make every ``torch.nn`` RNN, LSTM, GRU and cell in ``model`` (the model
    itself included) run on fastrnn, in place, and return ``model``.

    Each module keeps its ``Parameter`` objects (only its class changes), so
    an optimizer made before the swap keeps working, and ``state_dict`` is
    unchanged.  A module fastrnn cannot run (another device or dtype) stays
    as it is, with a warning that names it and says why.
    """
    for name, module in model.named_modules():
        target = _SWAPS.get(type(module))
        if target is None:
            continue
        reason = _unsupported(module)
        if reason is not None:
            warnings.warn(f"fastrnn.torch.convert left {name or 'the model'} "
                          f"({type(module).__name__}) to torch: {reason}", stacklevel=2)
            continue
        module.__class__ = target
    return model


def quantize_dynamic(model, dtype=torch.qint8, inplace=False):
    """int8 inference for ``model``'s recurrent modules, as
    ``torch.ao.quantization.quantize_dynamic(model, {nn.LSTM, ...}, dtype=torch.qint8)``
    does, on fastrnn's kernels: each ``torch.nn`` (or ``fastrnn.torch``) RNN,
    LSTM, GRU and cell in ``model`` (the model itself included) becomes the
    ``fastrnn.torch`` module with its W_ih and W_hh quantized once to int8,
    symmetric per row (``fastrnn.quantize_weight``), and runs
    ``compute_dtype="int8"`` (x_t and h_{t-1} quantized per row at each
    step, int32 sums; see ``fastrnn.quantization``).  Returns the model (a
    deep copy unless ``inplace``), in eval mode.

    The quantized modules' weight parameters hold the dequantized values and
    no longer require gradients; their state_dict loads into a float model,
    and quantizing that again gives the same int8 weights (and scales within
    a float32 ulp).  Their forward refuses training mode and inputs that
    require a gradient: train the float model, then quantize it again.  A
    module fastrnn's int8 does not run (an LSTM with proj_size, a module on
    another device or dtype) stays as it is, with a warning naming it.
    """
    import copy

    if dtype not in (torch.qint8, torch.int8, "int8"):
        raise ValueError(f"dtype must be torch.qint8 (the quantization fastrnn runs), "
                         f"got {dtype!r}")
    if not inplace:
        model = copy.deepcopy(model)
    targets = {**_SWAPS, **{cls: cls for cls in _SWAPS.values()}}
    for name, module in model.named_modules():
        target = targets.get(type(module))
        if target is None:
            continue
        reason = _unsupported(module) or (
            "proj_size (fastrnn's int8 has no projection yet)"
            if getattr(module, "proj_size", 0) else None)
        if reason is None and any(p.dtype != torch.float32 for p in module.parameters()):
            reason = "its parameters are not float32 (quantize a float32 model)"
        if reason is not None:
            warnings.warn(f"fastrnn.torch.quantize_dynamic left {name or 'the model'} "
                          f"({type(module).__name__}) as it is: {reason}", stacklevel=2)
            continue
        module.__class__ = target
        quantized = {}
        for pname, p in module.named_parameters(recurse=False):
            if pname.startswith(("weight_ih", "weight_hh")):
                q = quantize_weight(p.detach().numpy())
                with torch.no_grad():
                    p.copy_(torch.from_numpy(q.dequantize()))
                quantized[pname] = q
            p.requires_grad_(False)
        module._fastrnn_int8 = quantized
    return model.eval()


# --- layer-normalised cells ----------------------------------------------------


def _sequence(module, input, hx, lengths, states, weights, forward, backward):
    """The forward of the one-layer sequence modules (LayerNormLSTM,
    LayerNormGRU, CellRNN): input (T, B, I) ((B, T, I) with batch_first), hx
    None or the states as torch.nn's modules take them (each (1, B, H); a
    tuple of them for several), lengths; ``forward(x, *states, *weights,
    lengths=, training=)`` and ``backward(d_out, *d_finals, cache)`` the
    cell's functions on arrays (under autograd through _Sequence).  Returns output and the final
    states as hx takes them."""
    n = len(states)
    x = input.transpose(0, 1) if module.batch_first else input
    for t, name in ((x, "input"), (module.weight_ih, "weight_ih")):
        if t.device.type != "cpu":
            raise ValueError(f"{name} is on {t.device}: fastrnn.torch.{type(module).__name__} "
                             "runs on the CPU")
    if x.dim() != 3:
        raise ValueError(f"input must be 3-D ({'(B, T, I)' if module.batch_first else '(T, B, I)'}"
                         f"), got shape {tuple(input.shape)}")
    if hx is None:
        given = [None] * n
    else:
        given = [hx] if n == 1 else list(hx)
        if len(given) != n or any(s.dim() != 3 or s.shape[0] != 1 for s in given):
            spelled = ", ".join(s + "_0" for s in states)
            raise ValueError(f"hx must be {'(' + spelled + ')' if n > 1 else spelled}, each of "
                             f"shape (1, B, {module.hidden_size})")
        given = [s[0] for s in given]
    if lengths is not None:
        lengths = lengths.cpu().numpy() if isinstance(lengths, torch.Tensor) else lengths
    x = x.contiguous()
    tensors = (*given, *weights)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, *tensors)):
        out, *finals = _Sequence.apply(
            lambda *arrays: forward(*arrays, lengths=lengths, training=True), backward, x,
            *tensors)
    else:
        out, *finals, _ = forward(_array(x), *map(_array, tensors), lengths=lengths,
                                  training=False)
        out, finals = _tensor(out), [_tensor(f) for f in finals]
    if module.batch_first:
        out = out.transpose(0, 1)
    finals = [f.unsqueeze(0) for f in finals]
    return out, (tuple(finals) if n > 1 else finals[0])


class _Sequence(torch.autograd.Function):
    """A cell over a sequence by its functions on arrays (a layer-normalised
    cell's, a user cell's): ``forward(x, *tensors)`` -> out, the final
    states, cache; ``backward(d_out, *d_finals, cache)`` -> dx, then the
    gradient of each tensor (None where the tensor was None)."""

    @staticmethod
    def forward(ctx, forward, backward, x, *tensors):
        out, *finals, cache = forward(_array(x), *map(_array, tensors))
        ctx.fastrnn = (backward, cache, tuple(t is None for t in tensors))
        return (_tensor(out), *map(_tensor, finals))

    @staticmethod
    def backward(ctx, d_out, *d_finals):
        if torch.is_grad_enabled():
            raise RuntimeError("fastrnn.torch does not support double backward (a gradient of "
                               "a gradient: create_graph=True through a fastrnn layer)")
        backward, cache, missing = ctx.fastrnn
        g = backward(_array(d_out.contiguous()), *(_array(t.contiguous()) for t in d_finals),
                     cache)
        return (None, None, _tensor(g[0]),
                *(None if gone else _tensor(a) for a, gone in zip(g[1:], missing)))


class _LayerNormRecurrent(nn.Module):
    """One layer of a layer-normalised cell over a sequence, on fastrnn's
    kernels (fastrnn.layernorm), with autograd: the parameters of PyTorch's
    benchmark cell (``benchmarks/fastrnns/custom_lstms.py``), ``weight_ih``,
    ``weight_hh`` and a ``torch.nn.LayerNorm`` per normalisation
    (``layernorm_i``, ``layernorm_h`` and, in the LSTM, ``layernorm_c``), so
    its state_dict is that cell's; the weights initialised as torch.nn's
    recurrent modules do (uniform(-1/sqrt(H), 1/sqrt(H))), the LayerNorms
    as torch.nn.LayerNorm (gain 1, bias 0).  float32 and float64 on the CPU.

    ``forward(input, hx=None, lengths=None)``: input (T, B, I) ((B, T, I) with
    ``batch_first``); hx as torch.nn's module of the same kind takes it
    (each state (1, B, H)), None for zeros; ``lengths`` (B,) ints: past its
    length a sequence's state is frozen and its outputs are zero.  Returns
    ``output`` (T, B, H) and the final states (1, B, H), as torch.nn does.
    One layer, one direction (``fastrnn.LayerNormLSTM``-style stacks and
    directions are not built yet)."""

    _cell = None

    def __init__(self, input_size, hidden_size, batch_first=False, eps=1e-5, backend=None,
                 device=None, dtype=None):
        super().__init__()
        spec = NORM_CELLS[self._cell]
        kw = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size, self.batch_first = input_size, hidden_size, batch_first
        self.eps, self.backend = eps, backend
        G = spec.G
        self.weight_ih = nn.Parameter(torch.empty(G * hidden_size, input_size, **kw))
        self.weight_hh = nn.Parameter(torch.empty(G * hidden_size, hidden_size, **kw))
        widths = {"GH": G * hidden_size, "H": hidden_size}
        for name, width in spec.norms.items():
            setattr(self, "layernorm_" + name, nn.LayerNorm(widths[width], eps=eps, **kw))
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1 / self.hidden_size ** 0.5
        for w in (self.weight_ih, self.weight_hh):
            nn.init.uniform_(w, -bound, bound)
        for name in NORM_CELLS[self._cell].norms:
            getattr(self, "layernorm_" + name).reset_parameters()

    def extra_repr(self):
        return (f"{self.input_size}, {self.hidden_size}"
                + (", batch_first=True" if self.batch_first else ""))

    def forward(self, input, hx=None, lengths=None):
        spec = NORM_CELLS[self._cell]
        params = []
        for name in spec.norms:
            ln = getattr(self, "layernorm_" + name)
            params += [ln.weight, ln.bias]
        forward = getattr(layernorm, f"{self._cell}_forward")
        return _sequence(
            self, input, hx, lengths, spec.states, (self.weight_ih, self.weight_hh, *params),
            lambda *arrays, **options: forward(*arrays, **options, eps=self.eps,
                                               backend=self.backend),
            getattr(layernorm, f"{self._cell}_backward"))


class LayerNormLSTM(_LayerNormRecurrent):
    """A layer-normalised LSTM layer (fastrnn.layernorm_lstm_forward) as a
    torch.nn.Module with autograd; see _LayerNormRecurrent.  Returns
    ``output, (h_n, c_n)``, as torch.nn.LSTM."""

    _cell = "layernorm_lstm"


class LayerNormGRU(_LayerNormRecurrent):
    """A layer-normalised GRU layer (fastrnn.layernorm_gru_forward) as a
    torch.nn.Module with autograd; see _LayerNormRecurrent.  Returns
    ``output, h_n``, as torch.nn.GRU."""

    _cell = "layernorm_gru"


# --- cells written by the user (fastrnn.cells) ------------------------------------


class CellRNN(nn.Module):
    """One layer of a user's cell (``fastrnn.cells.Cell``) over a sequence,
    with autograd: parameters ``weight_ih``, ``weight_hh``, ``bias_ih``,
    ``bias_hh`` (as torch.nn's recurrent modules name them, without the
    ``_l0``; no ``weight_hh`` and ``bias_hh`` for a cell with
    ``recurrent=False``) and the cell's own parameters by their names, (H,)
    each; the weights initialised as torch.nn does (uniform(-1/sqrt(H),
    1/sqrt(H))), the cell's parameters zero.  float32 and float64 on the
    CPU.

    ``forward(input, hx=None, lengths=None)``: input (T, B, I) ((B, T, I)
    with ``batch_first``); hx None (zeros), one state (1, B, H) for a cell
    with one, else a tuple of them; ``lengths`` (B,) ints.  Returns
    ``output`` and the final states as hx takes them."""

    def __init__(self, cell, input_size, hidden_size, bias=True, batch_first=False,
                 backend=None, device=None, dtype=None):
        from .cells import Cell
        if not isinstance(cell, Cell):
            raise TypeError(f"cell must be a fastrnn.cells.Cell, got {type(cell).__name__}")
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.cell, self.input_size, self.hidden_size = cell, input_size, hidden_size
        self.bias, self.batch_first, self.backend = bias, batch_first, backend
        GH = cell.G * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(GH, input_size, **kw))
        if cell.recurrent:
            self.weight_hh = nn.Parameter(torch.empty(GH, hidden_size, **kw))
        for name in ("bias_ih", "bias_hh") if cell.recurrent else ("bias_ih",):
            setattr(self, name, nn.Parameter(torch.empty(GH, **kw)) if bias else None)
        for name in cell.params:
            setattr(self, name, nn.Parameter(torch.empty(hidden_size, **kw)))
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1 / self.hidden_size ** 0.5
        for name, p in self.named_parameters():
            if name in self.cell.params:
                nn.init.zeros_(p)
            else:
                nn.init.uniform_(p, -bound, bound)

    def extra_repr(self):
        return (f"{self.cell.name!r}, {self.input_size}, {self.hidden_size}"
                + ("" if self.bias else ", bias=False")
                + (", batch_first=True" if self.batch_first else ""))

    def forward(self, input, hx=None, lengths=None):
        weights = [getattr(self, n) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                   if self.cell.recurrent or not n.endswith("hh")]
        return _sequence(
            self, input, hx, lengths, self.cell.states,
            (*weights, *(getattr(self, p) for p in self.cell.params)),
            lambda *arrays, **options: self.cell.forward(*arrays, **options,
                                                         backend=self.backend),
            lambda d_out, *rest: self.cell.backward(d_out, *rest[:-1], cache=rest[-1]))