"""fastrnn: fast CPU kernels for recurrent neural networks.

The functional API (same signature in every backend)::

    out, h_n, cache = fastrnn.rnn_forward(x, h0, W_ih, W_hh, b_ih, b_hh)
    grads = fastrnn.rnn_backward(d_out, d_h_n, cache)
    out, h_n, c_n, cache = fastrnn.lstm_forward(x, h0, c0, W_ih, W_hh, b_ih, b_hh)
    grads = fastrnn.lstm_backward(d_out, d_h_n, d_c_n, cache)
    out, h_n, cache = fastrnn.gru_forward(x, h0, W_ih, W_hh, b_ih, b_hh)
    grads = fastrnn.gru_backward(d_out, d_h_n, cache)

Layer-normalised cells (``fastrnn.layernorm``): ``layernorm_lstm_forward`` /
``_backward`` and ``layernorm_gru_forward`` / ``_backward``; their layers
``fastrnn.LayerNormLSTM`` and ``LayerNormGRU``.  Cells written by the user:
``fastrnn.cells`` (imported on its own: ``import fastrnn.cells``).

``fastrnn.reference`` holds the NumPy specification with the same functions.
int8 inference: ``fastrnn.quantize_dynamic(layer)``, or ``compute_dtype="int8"``
(``fastrnn.quantization``).
"""
from ._backends import (BACKENDS, BackendUnavailableError, available_backends,
                        get_default_backend, set_default_backend, unavailable_backends)
from ._isa import IsaError, built_isa_levels, cpu_isa_levels, get_isa_level, set_isa_level
from ._threads import get_num_threads, set_num_threads
from ._types import ForwardCache, GRUGrads, LSTMGrads, RNNGrads
from .functional import (gru_backward, gru_forward, lstm_backward, lstm_forward, rnn_backward,
                         rnn_forward)
from .layernorm import (LayerNormGRU, LayerNormGRUGrads, LayerNormLSTM, LayerNormLSTMGrads,
                        NormCache, layernorm_gru_backward,
                        layernorm_gru_forward, layernorm_lstm_backward, layernorm_lstm_forward)
from .layers import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell, quantize_dynamic
from .quantization import QuantizedWeight, quantize_weight
from . import training  # noqa: E402  (fastrnn.training: losses, clipping, TBPTT, optimisers)

__version__ = "0.1.0"

__all__ = [
    "GRU", "LSTM", "RNN", "GRUCell", "LSTMCell", "RNNCell", "LayerNormLSTM", "LayerNormGRU",
    "BACKENDS", "BackendUnavailableError", "ForwardCache", "GRUGrads", "IsaError", "LSTMGrads",
    "QuantizedWeight", "RNNGrads", "available_backends", "built_isa_levels", "cpu_isa_levels",
    "get_default_backend", "get_isa_level", "get_num_threads", "gru_backward",
    "gru_forward", "layernorm_gru_backward", "layernorm_gru_forward", "layernorm_lstm_backward",
    "layernorm_lstm_forward", "LayerNormGRUGrads", "LayerNormLSTMGrads", "NormCache",
    "lstm_backward", "lstm_forward", "quantize_dynamic", "quantize_weight",
    "rnn_backward", "rnn_forward",
    "set_default_backend", "set_isa_level", "set_num_threads", "unavailable_backends",
]
