"""fastrnn layers from Keras's recurrent layers (the weights of a model trained there).

``layer_from_keras(keras_layer)`` reads a built ``keras.layers.SimpleRNN``,
``LSTM`` or ``GRU`` (or a ``Bidirectional`` of one) and returns the fastrnn
layer that computes what it computes, with PyTorch's gate order and
parameter names::

    import fastrnn.keras
    layer = fastrnn.keras.layer_from_keras(model.get_layer("encoder")).eval()
    out, h_n = layer(x)        # x (B, T, I) as Keras takes it: batch_first=True

Keras stores ``kernel`` (I, G*H) and ``recurrent_kernel`` (H, G*H), the
transposes of PyTorch's ``weight_ih`` and ``weight_hh``; its LSTM gates are
in PyTorch's order (i, f, c, o), its GRU's are (z, r, h) against PyTorch's
(r, z, n). A GRU with ``reset_after=True`` (Keras's default) is fastrnn's
GRU, with its bias of shape (2, 3H) split into ``bias_ih`` and ``bias_hh``;
one with ``reset_after=False`` is ``GRU(reset_after=False)``, whose one bias
(3H,), like that of SimpleRNN and LSTM, becomes ``bias_ih`` (``bias_hh`` zero).
``Bidirectional`` with ``merge_mode="concat"`` is ``bidirectional=True``.
The input and recurrent dropout of Keras's layers act in training only and
are not carried over. Refused with a ValueError that names it:

- activations other than Keras's defaults (SimpleRNN also takes relu);
- ``go_backwards=True`` outside ``Bidirectional``, and merge modes other
  than concat.

Keras is not imported here: the layer is read through ``get_config()`` and
``get_weights()``.
"""
import numpy as np

from .layers import GRU, LSTM, RNN

__all__ = ["layer_from_keras"]

_CELLS = {"SimpleRNN": RNN, "LSTM": LSTM, "GRU": GRU}
# For each of fastrnn's gate blocks (PyTorch's order), the block of Keras's weights.
_FROM_KERAS_GATES = {"SimpleRNN": [0], "LSTM": [0, 1, 2, 3], "GRU": [1, 0, 2]}


def layer_from_keras(keras_layer, *, dtype=np.float32, backend=None):
    """The fastrnn layer (``RNN``, ``LSTM`` or ``GRU``) of a built Keras
    ``SimpleRNN``, ``LSTM`` or ``GRU`` layer, or of a ``Bidirectional`` one.

    Returns a one-layer fastrnn layer with ``batch_first=True`` (Keras's
    layout; ``time_major=True`` of older Keras gives False), its weights loaded.
    """
    kind = type(keras_layer).__name__
    if kind == "Bidirectional":
        mode = keras_layer.get_config().get("merge_mode")
        if mode != "concat":
            raise ValueError(f"Bidirectional with merge_mode={mode!r}: fastrnn's bidirectional "
                             f"layers concatenate the directions (merge_mode='concat')")
        halves = [keras_layer.forward_layer, keras_layer.backward_layer]
    else:
        halves = [keras_layer]
    kind = type(halves[0]).__name__
    if kind not in _CELLS or type(halves[-1]).__name__ != kind:
        raise TypeError(f"keras_layer must be a Keras SimpleRNN, LSTM or GRU layer (or a "
                        f"Bidirectional of one), got {type(keras_layer).__name__}")
    configs = [h.get_config() for h in halves]
    for d, config in enumerate(configs):
        _check_config(kind, config, backward=d == 1)
    config = configs[0]
    weights = [h.get_weights() for h in halves]
    if not weights[0]:
        raise ValueError(f"the Keras {kind} layer is not built yet (no weights): call it on "
                         f"an input first")
    kernel = np.asarray(weights[0][0])
    I, G = kernel.shape[0], len(_FROM_KERAS_GATES[kind])
    H = int(config["units"])
    use_bias = bool(config.get("use_bias", True))
    options = ({"nonlinearity": config["activation"]} if kind == "SimpleRNN"
               else {"reset_after": bool(config.get("reset_after", True))} if kind == "GRU"
               else {})
    layer = _CELLS[kind](I, H, bias=use_bias, bidirectional=len(halves) == 2,
                         batch_first=not config.get("time_major", False), dtype=dtype,
                         backend=backend, **options)
    gates = _FROM_KERAS_GATES[kind]

    def ours(w):  # Keras's gate blocks (along the last axis) in fastrnn's order, as rows
        w = np.asarray(w, dtype=np.float64)
        return np.concatenate([w[..., k * H:(k + 1) * H] for k in gates], axis=-1).T

    def biases(ws):  # GRU(reset_after=True): (2, 3H), b_ih and b_hh; else b_ih only
        # (with reset_after=False b_hn adds where b_in does, so b_ih holds both)
        if not use_bias:
            return None, None
        bias = np.asarray(ws[2], dtype=np.float64)
        b_ih, b_hh = (bias[0], bias[1]) if bias.ndim == 2 else (bias, np.zeros_like(bias))
        return ours(b_ih), ours(b_hh)

    layer._load_slots([(ours(ws[0]), ours(ws[1]), *biases(ws)) for ws in weights])
    return layer


def _check_config(kind, config, backward):
    what = f"the Keras {kind} layer {config.get('name', '')!r}"
    if config.get("go_backwards", False) != backward:
        raise ValueError(f"{what} has go_backwards={config.get('go_backwards')}: fastrnn runs "
                         f"a sequence backwards only as the second direction of a "
                         f"Bidirectional layer")
    activation = config.get("activation")
    allowed = ("tanh", "relu") if kind == "SimpleRNN" else ("tanh",)
    if activation not in allowed:
        raise ValueError(f"{what} has activation={activation!r}: fastrnn's {kind} runs "
                         f"{' or '.join(allowed)}")
    if kind != "SimpleRNN" and config.get("recurrent_activation") != "sigmoid":
        raise ValueError(f"{what} has recurrent_activation="
                         f"{config.get('recurrent_activation')!r}: fastrnn's gates are sigmoid")
