"""fastrnn layers from the RNN, LSTM and GRU nodes of an ONNX model.

``layer_from_onnx(model)`` reads one node's weights (W, R, B: initializers of
the graph) and attributes and returns the fastrnn layer that computes what
the node computes, with PyTorch's gate order and parameter names::

    import fastrnn.onnx
    layer = fastrnn.onnx.layer_from_onnx("model.onnx")           # its one RNN node
    layer = fastrnn.onnx.layer_from_onnx(model, node="encoder_lstm")
    out, h_n = layer(x)           # ONNX's Y is out as (T, D, B, H), Y_h is h_n

ONNX orders the gates as LSTM (i, o, f, c) and GRU (z, r, h); fastrnn, like
PyTorch, as (i, f, g, o) and (r, z, n). A GRU's ``linear_before_reset``
is fastrnn's ``reset_after``: 1 (what PyTorch exports) gives ``GRU()``, 0
(ONNX's default) ``GRU(reset_after=False)``. An LSTM's peephole weights ``P``
(i, o, f), when not all zero, make an ``LSTM(peepholes=True)`` whose
``weight_ch`` blocks are (i, f, o). ``direction`` "forward" and
"bidirectional" map to ``bidirectional``, ``layout`` 1 to ``batch_first``,
an RNN's activation Tanh or Relu to ``nonlinearity``. The node's run-time
inputs (``sequence_lens``, ``initial_h``, ``initial_c``) are what the layer
takes when called: ``lengths=`` and ``hx``, whose states are (D, B, H) in
either layout, as in PyTorch (ONNX's layout 1 has initial_h as (B, D, H):
transpose it).  What fastrnn has no layer for is
refused with a ValueError that names it:

- ``direction="reverse"``;
- activations other than the defaults;
- ``clip`` and ``input_forget``;
- weights that are not initializers.

Needs the ``onnx`` package (``pip install onnx``); importing fastrnn does not.
"""
import os

import numpy as np

from .layers import GRU, LSTM, RNN

__all__ = ["layer_from_onnx"]

_OPS = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}
# For each of fastrnn's gate blocks (PyTorch's order), the block of ONNX's weights.
_FROM_ONNX_GATES = {"RNN": [0], "LSTM": [0, 2, 3, 1], "GRU": [1, 0, 2]}
# Likewise for the LSTM's peepholes: fastrnn's (i, f, o) are P's blocks (i, o, f) 0, 2, 1.
_FROM_ONNX_PEEPHOLES = [0, 2, 1]
_DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}
_RNN_ACTIVATIONS = {"Tanh": "tanh", "Relu": "relu"}


def layer_from_onnx(model, node=None, *, dtype=np.float32, backend=None):
    """The fastrnn layer (``RNN``, ``LSTM`` or ``GRU``) of one node of an ONNX model.

    Parameters
    ----------
    model : onnx.ModelProto, bytes, or a path to a .onnx file
    node : str or None
        The node's name; None takes the graph's one RNN, LSTM or GRU node
        (more than one is an error listing them).
    dtype, backend
        As the layers take them.

    Returns
    -------
    A layer with one layer of the node's directions, its weights loaded.
    """
    onnx, numpy_helper = _import_onnx()
    if isinstance(model, (bytes, bytearray)):
        model = onnx.load_from_string(bytes(model))
    elif isinstance(model, (str, os.PathLike)):
        model = onnx.load(os.fspath(model))
    elif not isinstance(model, onnx.ModelProto):
        raise TypeError(f"model must be an onnx.ModelProto, bytes or a path, got "
                        f"{type(model).__name__}")
    graph = model.graph
    n = _find_node(graph, node)
    op = n.op_type
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
    what = f"the {op} node {n.name!r}" if n.name else f"the {op} node"
    attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
    attrs["activations"] = [a.decode() if isinstance(a, bytes) else a
                            for a in attrs.get("activations", [])]

    direction = attrs.get("direction", "forward")
    if direction not in ("forward", "bidirectional"):
        raise ValueError(f"{what} has direction={direction!r}: fastrnn's layers run "
                         f"'forward' or 'bidirectional'")
    D = 2 if direction == "bidirectional" else 1
    for name in ("clip", "activation_alpha", "activation_beta"):
        if name in attrs:
            raise ValueError(f"{what} sets {name}={attrs[name]!r}, which fastrnn does not "
                             f"support")
    if attrs.get("input_forget", 0):
        raise ValueError(f"{what} sets input_forget=1 (the input and forget gates coupled), "
                         f"which fastrnn's LSTM does not have")
    options = _activations(what, op, attrs["activations"], D)
    if op == "GRU":
        # linear_before_reset=1: r multiplies R_h h + Rb_h (PyTorch's form);
        # 0, the default: r multiplies h before R_h.
        options["reset_after"] = attrs.get("linear_before_reset", 0) != 0

    inputs = list(n.input) + [""] * (8 - len(n.input))
    initial = {t.name: t for t in graph.initializer}

    def weight(index, label):
        name = inputs[index]
        if not name:
            return None
        if name not in initial:
            raise ValueError(f"{what}'s {label} ({name!r}) is not an initializer of the graph: "
                             f"fastrnn reads the weights from the model file")
        return numpy_helper.to_array(initial[name]).astype(np.float64)

    W, R, Bias = weight(1, "W"), weight(2, "R"), weight(3, "B")
    P = weight(7, "P") if op == "LSTM" else None
    if P is not None and not P.any():
        P = None  # zero peepholes: the plain LSTM, and its faster loops
    if P is not None:
        options["peepholes"] = True
    G = len(_FROM_ONNX_GATES[op])
    if W.ndim != 3 or W.shape[0] != D or W.shape[1] % G:
        raise ValueError(f"{what}'s W must have shape ({D}, {G}*hidden_size, input_size), "
                         f"got {W.shape}")
    H, I = W.shape[1] // G, W.shape[2]
    if attrs.get("hidden_size", H) != H or R.shape != (D, G * H, H):
        raise ValueError(f"{what}: hidden_size={attrs.get('hidden_size')} does not match W "
                         f"{W.shape} and R {R.shape}")
    if Bias is not None and Bias.shape != (D, 2 * G * H):
        raise ValueError(f"{what}'s B must have shape ({D}, {2 * G * H}), got {Bias.shape}")
    if P is not None and P.shape != (D, 3 * H):
        raise ValueError(f"{what}'s P must have shape ({D}, {3 * H}), got {P.shape}")

    layer = _OPS[op](I, H, bias=Bias is not None, bidirectional=D == 2,
                     batch_first=attrs.get("layout", 0) == 1, dtype=dtype, backend=backend,
                     **options)

    def ours(w, blocks=_FROM_ONNX_GATES[op]):  # ONNX's blocks in fastrnn's order
        return np.concatenate([w[k * H:(k + 1) * H] for k in blocks])

    def biases(d):  # B (D, 2*G*H): W's biases, then R's
        return (None, None) if Bias is None else (ours(Bias[d, :G * H]), ours(Bias[d, G * H:]))

    def peepholes(d):
        return () if P is None else (ours(P[d], _FROM_ONNX_PEEPHOLES),)

    layer._load_slots([(ours(W[d]), ours(R[d]), *biases(d), *peepholes(d)) for d in range(D)])
    return layer


def _import_onnx():
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise ImportError("fastrnn.onnx needs the onnx package: pip install onnx") from exc
    return onnx, numpy_helper


def _find_node(graph, name):
    nodes = [n for n in graph.node if n.op_type in _OPS]
    if name is not None:
        named = [n for n in nodes if n.name == name]
        if not named:
            raise ValueError(f"the graph has no RNN, LSTM or GRU node named {name!r}; it has "
                             f"{[n.name for n in nodes]}")
        return named[0]
    if len(nodes) != 1:
        raise ValueError(f"the graph has {len(nodes)} RNN, LSTM or GRU nodes "
                         f"{[(n.op_type, n.name) for n in nodes]}: name one with node=")
    return nodes[0]


def _activations(what, op, given, D):
    """The layer's options from the node's activations (one list per direction)."""
    if op == "RNN":
        per = given[:1] * D if len(given) == 1 else given
        if not per:
            return {}
        if len(per) != D or len(set(per)) != 1 or per[0] not in _RNN_ACTIVATIONS:
            raise ValueError(f"{what} has activations {given}: fastrnn's RNN runs Tanh or Relu, "
                             f"the same in both directions")
        return {"nonlinearity": _RNN_ACTIVATIONS[per[0]]}
    default = _DEFAULT_ACTIVATIONS[op]
    if given and given != default * D:
        raise ValueError(f"{what} has activations {given}: fastrnn's {op} runs the defaults "
                         f"{default}")
    return {}
