"""PyTorch's layer semantics where fastrnn used to differ: attributes fixed
or checked once a layer is built, dropout = 1, the one-layer dropout warning."""
import warnings

import numpy as np
import pytest

import fastrnn

FIXED = ["input_size", "hidden_size", "num_layers", "bias", "batch_first", "bidirectional",
         "dtype"]


@pytest.mark.parametrize("name", FIXED)
def test_shape_attributes_are_fixed_once_built(name):
    layer = fastrnn.LSTM(3, 4, num_layers=2)
    before = getattr(layer, name)
    with pytest.raises(AttributeError, match=f"{name} is fixed"):
        setattr(layer, name, 7)
    assert getattr(layer, name) == before


@pytest.mark.parametrize("name", ["input_size", "hidden_size", "bias", "dtype"])
def test_cell_shape_attributes_are_fixed_once_built(name):
    cell = fastrnn.GRUCell(3, 4)
    with pytest.raises(AttributeError, match=f"{name} is fixed"):
        setattr(cell, name, 7)


@pytest.mark.parametrize("p", [1.5, -0.1, float("nan"), "0.5", True])
def test_dropout_is_checked_when_set(p):
    layer = fastrnn.GRU(3, 4, num_layers=2, dropout=0.2)
    with pytest.raises(ValueError, match="dropout must be a number in"):
        layer.dropout = p
    assert layer.dropout == 0.2
    layer.dropout = 0.5
    assert layer.dropout == 0.5


@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU"])
def test_dropout_one_zeroes_what_passes_between_layers_as_torch(cls):
    torch = pytest.importorskip("torch")
    t = getattr(torch.nn, cls)(3, 4, num_layers=2, dropout=1.0).double()
    f = getattr(fastrnn, cls)(3, 4, num_layers=2, dropout=1.0, dtype=np.float64)
    f.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    expected = t(torch.from_numpy(x))[0].detach().numpy()  # training mode, as built
    out, _ = f(x)
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-12)
    dx, _ = f.backward(np.ones_like(out))
    assert not dx.any()  # nothing reaches the input through a dropped layer
    assert np.isfinite(out).all()


def test_one_layer_dropout_warns_as_torch():
    with pytest.warns(UserWarning, match="non-zero dropout expects num_layers greater than 1"):
        fastrnn.GRU(4, 6, dropout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastrnn.GRU(4, 6, num_layers=2, dropout=0.5)
        fastrnn.GRU(4, 6)
    torch = pytest.importorskip("torch")
    with pytest.warns(UserWarning) as theirs:
        torch.nn.GRU(4, 6, dropout=0.5)
    with pytest.warns(UserWarning) as ours:
        fastrnn.GRU(4, 6, dropout=0.5)
    assert str(ours[0].message) == str(theirs[0].message)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU"])
def test_unbatched_layers_are_a_batch_of_one(cls, batch_first):
    """x (T, I) and hx (L*D, H): the outputs of the batch of one, squeezed,
    forward and backward (and torch's, where installed)."""
    kw = dict(num_layers=2, bidirectional=True, batch_first=batch_first, dtype=np.float64,
              seed=0)
    layer = getattr(fastrnn, cls)(3, 4, **kw)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 3))
    states = [rng.standard_normal((4, 4)) for _ in range(2 if cls == "LSTM" else 1)]
    hx = tuple(states) if cls == "LSTM" else states[0]
    out, h_n = layer(x, hx)
    assert out.shape == (5, 8)
    axis = 0 if batch_first else 1
    ref_out, ref_h = layer(np.expand_dims(x, axis), tuple(s[:, None] for s in states)
                           if cls == "LSTM" else states[0][:, None])
    np.testing.assert_allclose(out, np.take(ref_out, 0, axis=axis), rtol=1e-12)
    layer(x, hx)
    dx, dhx = layer.backward(np.ones_like(out))
    assert dx.shape == x.shape
    for d, s in zip(dhx if cls == "LSTM" else (dhx,), states):
        assert d.shape == s.shape
    torch = pytest.importorskip("torch")
    t = getattr(torch.nn, cls)(3, 4, num_layers=2, bidirectional=True,
                               batch_first=batch_first).double()
    t.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    xt = torch.from_numpy(x).requires_grad_(True)
    tout, th = t(xt, tuple(torch.from_numpy(s) for s in states) if cls == "LSTM"
                 else torch.from_numpy(states[0]))
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    tout.sum().backward()
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("cls", ["RNNCell", "LSTMCell", "GRUCell"])
def test_unbatched_cells_are_a_batch_of_one(cls):
    cell = getattr(fastrnn, cls)(3, 4, dtype=np.float64, seed=0)
    rng = np.random.default_rng(2)
    x = rng.standard_normal(3)
    states = [rng.standard_normal(4) for _ in range(2 if cls == "LSTMCell" else 1)]
    hx = tuple(states) if cls == "LSTMCell" else states[0]
    out = cell(x, hx)
    first = out[0] if cls == "LSTMCell" else out
    assert first.shape == (4,)
    dx, dhx = cell.backward(*([np.ones(4)] * (2 if cls == "LSTMCell" else 1)))
    assert dx.shape == (3,)
    with pytest.raises(ValueError, match="unbatched"):
        cell(x, tuple(s[None] for s in states) if cls == "LSTMCell" else states[0][None])
    torch = pytest.importorskip("torch")
    t = getattr(torch.nn, cls)(3, 4).double()
    t.load_state_dict({k: torch.from_numpy(v) for k, v in cell.state_dict().items()})
    tout = t(torch.from_numpy(x), tuple(torch.from_numpy(s) for s in states)
             if cls == "LSTMCell" else torch.from_numpy(states[0]))
    tfirst = tout[0] if cls == "LSTMCell" else tout
    np.testing.assert_allclose(first, tfirst.detach().numpy(), rtol=1e-10, atol=1e-12)
