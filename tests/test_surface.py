"""What a user sees first: reprs, each public module's names, and messages
that name what was passed."""
import importlib
import types

import numpy as np
import pytest

import fastrnn
from fastrnn import functional, reference
from fastrnn._testing import random_problem

PUBLIC = ["fastrnn", "fastrnn.functional", "fastrnn.layers", "fastrnn.reference",
          "fastrnn.training", "fastrnn.torch", "fastrnn.onnx", "fastrnn.keras"]


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_module_lists_its_names(name):
    if name in ("fastrnn.torch", "fastrnn.onnx"):
        pytest.importorskip(name.split(".")[1])
    module = importlib.import_module(name)
    assert module.__all__, name
    namespace = {}
    exec(f"from {name} import *", namespace)
    exported = {k: v for k, v in namespace.items() if k != "__builtins__"}
    assert set(exported) == set(module.__all__)
    assert not [k for k, v in exported.items() if isinstance(v, types.ModuleType)]
    # Everything the module defines for users (no leading underscore) is listed.
    own = [k for k, v in vars(module).items() if not k.startswith("_")
           and getattr(v, "__module__", None) == name and callable(v)]
    assert set(own) <= set(module.__all__) | {"direction_forward", "direction_backward",
                                              "reverse_within_lengths", "DirectionCell"}


@pytest.mark.parametrize("make, text", [
    (lambda: fastrnn.LSTM(8, 32, num_layers=2, bidirectional=True),
     "LSTM(8, 32, num_layers=2, bidirectional=True)"),
    (lambda: fastrnn.GRU(4, 6), "GRU(4, 6)"),
    (lambda: fastrnn.RNN(3, 5, nonlinearity="relu", batch_first=True, dtype=np.float64),
     "RNN(3, 5, batch_first=True, dtype='float64', nonlinearity='relu')"),
    (lambda: fastrnn.RNN(3, 5, 3, dropout=0.5, bias=False, backend="numpy"),
     "RNN(3, 5, num_layers=3, bias=False, dropout=0.5, backend='numpy')"),
    (lambda: fastrnn.LSTMCell(3, 4), "LSTMCell(3, 4)"),
    (lambda: fastrnn.RNNCell(3, 4, nonlinearity="relu"), "RNNCell(3, 4, nonlinearity='relu')"),
    (lambda: fastrnn.GRUCell(3, 4, bias=False, dtype="float64"),
     "GRUCell(3, 4, bias=False, dtype='float64')"),
])
def test_repr_is_pytorchs_and_rebuilds_the_module(make, text):
    module = make()
    assert repr(module) == text
    again = eval(text, {type(module).__name__: type(module)})
    assert repr(again) == text


def test_dropout_with_one_layer_warns_as_pytorch_does():
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        fastrnn.GRU(4, 6, dropout=0.5)


@pytest.mark.parametrize("module", [functional, reference])
def test_a_list_for_x_is_named_as_a_list(module):
    p = random_problem(3, 2, 4, 5, np.float32)
    weights = {k: p[k] for k in ("h0", "W_ih", "W_hh", "b_ih", "b_hh")}
    with pytest.raises(TypeError) as info:
        module.rnn_forward(p["x"].tolist(), **weights)
    message = str(info.value)
    assert "x is a list (NumPy reads it as float64)" in message
    assert "W_hh has dtype float32" in message
    assert "np.asarray(x, dtype=np.float32)" in message
    with pytest.raises(TypeError, match=r"x must be an array of dtype float32 or float64, "
                                        r"got one that is a list \(NumPy reads it as int64\)"):
        module.rnn_forward([[[1, 2, 3, 4]] * 2] * 3, **weights)
    # A list of the weights' dtype is read, as NumPy reads it.
    as64 = {k: v.astype(np.float64) for k, v in weights.items()}
    out, _, _ = module.rnn_forward(p["x"].tolist(), **as64)
    assert out.dtype == np.float64


def test_a_weight_of_another_dtype_is_named_with_its_conversion():
    p = random_problem(3, 2, 4, 5, np.float32)
    with pytest.raises(TypeError, match=r"W_ih is a list .* pass arrays of one dtype "
                                        r"\(for example np.asarray\(W_ih, dtype=np.float32\)\)"):
        functional.rnn_forward(p["x"], p["h0"], p["W_ih"].tolist(), p["W_hh"])
    with pytest.raises(TypeError, match=r"W_ih has dtype float64 .*W_ih.astype\(np.float32\)"):
        functional.rnn_forward(p["x"], p["h0"], p["W_ih"].astype(np.float64), p["W_hh"])


@pytest.mark.parametrize("module, x", [
    (fastrnn.LSTM(4, 5), [[[0.5] * 4] * 2] * 3),
    (fastrnn.GRUCell(4, 5), [[0.5] * 4] * 2),
])
def test_a_layer_names_a_list_and_says_how_to_convert_it(module, x):
    with pytest.raises(TypeError) as info:
        module(x)
    message = str(info.value)
    assert "x is a list (NumPy reads it as float64)" in message
    assert f"the {module._kind} has dtype float32" in message
    assert "pass np.asarray(x, dtype=np.float32)" in message
    with pytest.raises(TypeError, match=r"pass x.astype\(np.float32\)"):
        module(np.asarray(x))
    module(np.asarray(x, dtype=np.float32))
