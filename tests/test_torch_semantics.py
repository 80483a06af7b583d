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
