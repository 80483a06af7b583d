"""int8 layers: ``fastrnn.quantize_dynamic`` on the layers and cells (against
the functions' int8 compute on the same QuantizedWeights, files, refusals)
and ``fastrnn.torch.quantize_dynamic`` on PyTorch models."""
import warnings

import numpy as np
import pytest

import fastrnn
from fastrnn import reference as R

pytestmark = pytest.mark.skipif("cython" not in fastrnn.available_backends(),
                                reason="int8 compute runs on the cython backend, unavailable here")

LAYERS = [
    ("rnn", lambda **kw: fastrnn.RNN(5, 9, nonlinearity="relu", **kw)),
    ("lstm", lambda **kw: fastrnn.LSTM(5, 9, num_layers=2, bidirectional=True, **kw)),
    ("lstm-peepholes", lambda **kw: fastrnn.LSTM(5, 9, peepholes=True, **kw)),
    ("gru", lambda **kw: fastrnn.GRU(5, 9, num_layers=2, dropout=0.5, **kw)),
]
CELLS = [
    ("rnn", lambda **kw: fastrnn.RNNCell(5, 9, **kw)),
    ("lstm", lambda **kw: fastrnn.LSTMCell(5, 9, peepholes=True, **kw)),
    ("gru", lambda **kw: fastrnn.GRUCell(5, 9, **kw)),
]


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def _first(result):
    """The output array of a layer's or cell's result."""
    while isinstance(result, tuple):
        result = result[0]
    return result


def _by_hand(layer, x, lengths):
    """The stack run with fastrnn's functions on the int8 layer's own
    QuantizedWeights, direction by direction: what the layer must compute."""
    from fastrnn.layers import reverse_within_lengths

    cell = layer._cell
    inp = x
    for k in range(layer.num_layers):
        outs = []
        for d in range(layer.num_directions):
            names = layer._slots[k * layer.num_directions + d]
            W_ih, W_hh = (layer._int8[n] for n in names[:2])
            rest = [layer._params.get(n) for n in names[2:]]
            extras = dict(zip(fastrnn._spec.CELLS[cell].extras, rest[2:]))
            states = (None,) * len(fastrnn._spec.CELLS[cell].states)
            xi = reverse_within_lengths(inp, lengths) if d else inp
            out = getattr(fastrnn, cell + "_forward")(
                xi, *states, W_ih, W_hh, *rest[:2], lengths=lengths, training=False,
                **{k_: v for k_, v in extras.items() if v is not None}, **layer._options)[0]
            outs.append(reverse_within_lengths(out, lengths) if d else out)
        inp = np.concatenate(outs, axis=2)
    return inp


@pytest.mark.parametrize("name,make", LAYERS, ids=[n for n, _ in LAYERS])
def test_a_quantized_layer_runs_the_int8_functions_on_its_weights(name, make):
    layer = make(seed=1)
    q = fastrnn.quantize_dynamic(layer)
    assert q is not layer and q.compute_dtype == "int8" and not q.training
    assert layer.compute_dtype is None and layer.training  # the float layer is unchanged
    x, lengths = _x((7, 4, 5)), np.array([7, 0, 3, 5])
    out, _ = q(x, lengths=lengths)
    np.testing.assert_array_equal(out, _by_hand(q, x, lengths))
    # ... and the weights it holds are its quantized ones, dequantized
    for names in q._slots:
        for n in names[:2]:
            np.testing.assert_array_equal(q._params[n], q._int8[n].dequantize())
            assert not q._params[n].flags.writeable


@pytest.mark.parametrize("name,make", LAYERS + CELLS, ids=[n for n, _ in LAYERS + CELLS])
def test_int8_stays_close_to_float(name, make):
    layer = make(seed=2).eval()
    x = _x((6, 3, 5) if layer._kind != "cell" else (3, 5), seed=3)
    err = np.abs(_first(fastrnn.quantize_dynamic(layer)(x)) - _first(layer(x))).max()
    assert 0 < err < 3e-2  # int8's rounding: a few quanta of 1/127 of each row's range


@pytest.mark.parametrize("name,make", LAYERS + CELLS, ids=[n for n, _ in LAYERS + CELLS])
def test_files_keep_the_int8_weights_and_scales(name, make, tmp_path):
    q = fastrnn.quantize_dynamic(make(seed=4))
    path = tmp_path / "q.npz"
    q.save(path)
    back = type(q).load(path)
    assert back.compute_dtype == "int8" and not back.training
    assert back._int8 == q._int8  # the same int8 values and float32 scales
    x = _x((5, 2, 5) if q._kind != "cell" else (2, 5), seed=5)
    np.testing.assert_array_equal(_first(back(x)), _first(q(x)))


def test_a_file_with_int8_entries_of_another_shape_is_refused(tmp_path):
    q = fastrnn.quantize_dynamic(fastrnn.GRU(5, 9, seed=0))
    path = tmp_path / "q.npz"
    q.save(path)
    with np.load(path) as f:
        entries = dict(f)
    entries["__int8_scale__weight_hh_l0"] = entries["__int8_scale__weight_hh_l0"][:-1]
    np.savez(path, **entries)
    with pytest.raises(ValueError, match="q.npz"):
        fastrnn.GRU.load(path)


def test_training_through_an_int8_layer_is_refused():
    q = fastrnn.quantize_dynamic(fastrnn.LSTM(5, 9, seed=0))
    q.train()
    with pytest.raises(ValueError, match="inference only.*eval"):
        q(_x((3, 2, 5)))
    cell = fastrnn.quantize_dynamic(fastrnn.GRUCell(5, 9, seed=0)).train()
    with pytest.raises(ValueError, match="inference only"):
        cell(_x((2, 5)))


def test_back_to_float_makes_the_weights_writable_again():
    q = fastrnn.quantize_dynamic(fastrnn.RNN(5, 9, seed=0))
    w = q.weight_hh_l0 if hasattr(q, "weight_hh_l0") else q._params["weight_hh_l0"]
    with pytest.raises(ValueError):
        w[0, 0] = 1.0  # read-only: it says what the layer computes
    q.compute_dtype = None
    assert q._int8 is None and q._params["weight_hh_l0"].flags.writeable
    q._params["weight_hh_l0"][0, 0] = 1.0


def test_loading_new_weights_into_an_int8_layer_quantizes_them():
    q = fastrnn.quantize_dynamic(fastrnn.GRU(5, 9, seed=0))
    other = fastrnn.GRU(5, 9, seed=1)
    q.load_state_dict(other.state_dict())
    assert q._int8["weight_ih_l0"] == fastrnn.quantize_weight(other._params["weight_ih_l0"])
    x = _x((4, 2, 5))
    np.testing.assert_array_equal(q(x)[0], fastrnn.quantize_dynamic(other)(x)[0])


def test_compute_dtype_int8_on_a_float_layer_quantizes_each_call():
    layer = fastrnn.LSTM(5, 9, seed=0).eval()
    x = _x((4, 2, 5))
    layer.compute_dtype = "int8"
    np.testing.assert_array_equal(layer(x)[0], fastrnn.quantize_dynamic(layer)(x)[0])


def test_a_float64_layer_quantizes_from_float32():
    layer = fastrnn.GRU(5, 9, dtype=np.float64, seed=0)
    q = fastrnn.quantize_dynamic(layer)
    assert q.dtype == np.float32 and layer.dtype == np.float64
    assert q._int8["weight_ih_l0"] == fastrnn.quantize_weight(
        layer._params["weight_ih_l0"].astype(np.float32))


@pytest.mark.parametrize("make,what", [
    (lambda: fastrnn.LSTM(5, 9, proj_size=3), "W_hr"),
    (lambda: fastrnn.GRU(5, 9, reset_after=False), "reset_after=False"),
])
def test_what_int8_does_not_run_is_refused_by_name(make, what):
    with pytest.raises(ValueError, match=f"int8.*{what}"):
        fastrnn.quantize_dynamic(make())


def test_quantize_dynamic_takes_fastrnn_modules_and_int8_only():
    with pytest.raises(TypeError, match="fastrnn.torch.quantize_dynamic"):
        fastrnn.quantize_dynamic(object())
    with pytest.raises(ValueError, match="int8"):
        fastrnn.quantize_dynamic(fastrnn.RNN(2, 3), dtype="int4")


# --- fastrnn.torch -------------------------------------------------------------------


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason="PyTorch is not installed")


def _model(torch):
    nn = torch.nn

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(5, 9, num_layers=2, bidirectional=True)
            self.gru = nn.GRU(18, 7)
            self.cell = nn.RNNCell(5, 6)
            self.head = nn.Linear(7, 3)

        def forward(self, x):
            out, _ = self.lstm(x)
            out, h = self.gru(out)
            return self.head(out), self.cell(x[0])

    torch.manual_seed(0)
    return Model()


def test_torch_quantize_dynamic_runs_fastrnns_int8(torch):
    import fastrnn.torch as ft

    model = _model(torch)
    q = ft.quantize_dynamic(model)
    assert q is not model and type(model.lstm) is torch.nn.LSTM  # a copy, by default
    assert isinstance(q.lstm, ft.LSTM) and isinstance(q.cell, ft.RNNCell) and not q.training
    x = torch.randn(6, 2, 5)
    with torch.no_grad():
        got, cell_got = q(x)
        want, cell_want = model.eval()(x)
    assert 0 < float((got - want).abs().max()) < 3e-2
    assert 0 < float((cell_got - cell_want).abs().max()) < 3e-2
    # the GRU's output is fastrnn's int8 forward on the same QuantizedWeights
    with torch.no_grad():
        lstm_out, _ = q.lstm(x)
        gru_out, _ = q.gru(lstm_out)
    W_ih, W_hh = q.gru._fastrnn_int8["weight_ih_l0"], q.gru._fastrnn_int8["weight_hh_l0"]
    out = fastrnn.gru_forward(lstm_out.numpy(), None, W_ih, W_hh, q.gru.bias_ih_l0.detach().numpy(),
                              q.gru.bias_hh_l0.detach().numpy(), training=False)[0]
    np.testing.assert_array_equal(gru_out.numpy(), out)


def test_torch_int8_state_dict_quantizes_back_to_the_same_int8_weights(torch):
    import fastrnn.torch as ft

    q = ft.quantize_dynamic(_model(torch))
    again = ft.quantize_dynamic(_model(torch).eval())
    again.load_state_dict(q.state_dict())  # the dequantized values, into a quantized copy
    float_model = _model(torch)
    float_model.load_state_dict(q.state_dict())
    requantized = ft.quantize_dynamic(float_model)
    for name, w in q.lstm._fastrnn_int8.items():
        other = requantized.lstm._fastrnn_int8[name]
        np.testing.assert_array_equal(other.q, w.q)
        np.testing.assert_allclose(other.scale, w.scale, rtol=2 ** -23)


def test_torch_int8_refuses_training_and_gradients(torch):
    import fastrnn.torch as ft

    q = ft.quantize_dynamic(_model(torch))
    x = torch.randn(4, 2, 5)
    q.train()
    with pytest.raises(ValueError, match="inference only.*training mode"):
        q(x)
    q.eval()
    with pytest.raises(ValueError, match="requires a gradient"):
        q.lstm(x.requires_grad_())
    assert not any(p.requires_grad for p in q.lstm.parameters())


def test_torch_int8_leaves_what_it_cannot_run_with_a_warning(torch):
    import fastrnn.torch as ft

    model = torch.nn.Sequential(torch.nn.LSTM(5, 9, proj_size=3), torch.nn.GRU(5, 4))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        q = ft.quantize_dynamic(model)
    assert type(q[0]) is torch.nn.LSTM and isinstance(q[1], ft.GRU)
    assert any("proj_size" in str(w.message) for w in seen)
    with pytest.raises(ValueError, match="qint8"):
        ft.quantize_dynamic(model, dtype=torch.float16)


def test_torch_int8_in_place(torch):
    import fastrnn.torch as ft

    model = _model(torch)
    assert ft.quantize_dynamic(model, inplace=True) is model
    assert isinstance(model.gru, ft.GRU) and model.gru._fastrnn_int8


def test_reference_runs_a_quantized_layers_weights():
    """The reference takes the same QuantizedWeights (int8 implied)."""
    q = fastrnn.quantize_dynamic(fastrnn.GRU(5, 9, seed=0))
    x = _x((5, 3, 5))
    W_ih, W_hh = q._int8["weight_ih_l0"], q._int8["weight_hh_l0"]
    b_ih, b_hh = q._params["bias_ih_l0"], q._params["bias_hh_l0"]
    want = R.gru_forward(x, None, W_ih, W_hh, b_ih, b_hh, training=False)[0]
    np.testing.assert_allclose(q(x)[0], want, atol=1e-5)
