"""fastrnn.keras.layer_from_keras: a layer from a Keras SimpleRNN, LSTM or
GRU (or a Bidirectional one) computes what Keras computes (Keras on its
PyTorch backend, where installed), and what fastrnn has no layer for is
refused by name (checked without Keras too)."""
import os

import numpy as np
import pytest

from fastrnn.keras import layer_from_keras

# Keras 3 on torch converts with np.array(tensor), which NumPy 2 warns about.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

B, T, I, H = 3, 7, 5, 4


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("these tests run Keras on its PyTorch backend")
    return keras


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("kind, kwargs", [
    ("SimpleRNN", {}), ("SimpleRNN", {"activation": "relu"}), ("SimpleRNN", {"use_bias": False}),
    ("LSTM", {}), ("LSTM", {"use_bias": False}), ("GRU", {}), ("GRU", {"use_bias": False}),
    ("GRU", {"reset_after": False}), ("GRU", {"reset_after": False, "use_bias": False}),
])
def test_a_layer_from_keras_matches_keras(kind, kwargs, bidirectional):
    keras = _keras()
    keras.utils.set_random_seed(0)
    theirs = getattr(keras.layers, kind)(H, return_sequences=True, return_state=True,
                                         bias_initializer="random_uniform", **kwargs)
    if bidirectional:
        theirs = keras.layers.Bidirectional(theirs)
    x = np.random.default_rng(1).standard_normal((B, T, I)).astype(np.float32)
    expected, *finals = (np.asarray(t.detach().cpu()) for t in theirs(x))

    ours = layer_from_keras(theirs, dtype=np.float64).eval()
    assert ours.batch_first and ours.bidirectional == bidirectional
    assert getattr(ours, "reset_after", True) == kwargs.get("reset_after", True)
    out, h_n = ours(x.astype(np.float64))
    np.testing.assert_allclose(out, expected, atol=2e-6)
    # Keras's states: h (LSTM: h, c) per direction, forward first
    h_n = h_n[0] if kind == "LSTM" else h_n
    for d in range(2 if bidirectional else 1):
        np.testing.assert_allclose(h_n[d], finals[d * (2 if kind == "LSTM" else 1)], atol=2e-6)


def test_keras_refusals_with_keras():
    keras = _keras()
    x = np.zeros((B, T, I), np.float32)
    for layer, words in [
        (keras.layers.LSTM(H, go_backwards=True), "go_backwards"),
        (keras.layers.Bidirectional(keras.layers.GRU(H), merge_mode="sum"), "merge_mode='sum'"),
        (keras.layers.Dense(H), "must be a Keras SimpleRNN"),
    ]:
        layer(x)
        with pytest.raises((ValueError, TypeError), match=words):
            layer_from_keras(layer)
    with pytest.raises(ValueError, match="not built"):
        layer_from_keras(keras.layers.LSTM(H))


class LSTM:
    """A stand-in with Keras's get_config()/get_weights() (no Keras needed)."""

    def __init__(self, **config):
        self.config = {"units": H, "activation": "tanh", "recurrent_activation": "sigmoid",
                       "go_backwards": False, "use_bias": True, **config}

    def get_config(self):
        return self.config

    def get_weights(self):
        rng = np.random.default_rng(0)
        return [rng.standard_normal((I, 4 * H)), rng.standard_normal((H, 4 * H)),
                np.arange(4 * H, dtype=float)]


def test_keras_weights_map_to_pytorchs_names_and_layout():
    k = LSTM()
    kernel, recurrent, bias = k.get_weights()
    state = layer_from_keras(k, dtype=np.float64).state_dict()
    np.testing.assert_array_equal(state["weight_ih_l0"], kernel.T)  # same gate order (i, f, c, o)
    np.testing.assert_array_equal(state["weight_hh_l0"], recurrent.T)
    np.testing.assert_array_equal(state["bias_ih_l0"], bias)
    assert not state["bias_hh_l0"].any()


@pytest.mark.parametrize("config, words", [
    ({"activation": "relu"}, "activation='relu'"),
    ({"recurrent_activation": "hard_sigmoid"}, "recurrent_activation='hard_sigmoid'"),
    ({"go_backwards": True}, "go_backwards=True"),
])
def test_what_fastrnn_has_no_layer_for_is_refused_by_name(config, words):
    with pytest.raises(ValueError, match=words):
        layer_from_keras(LSTM(**config))
