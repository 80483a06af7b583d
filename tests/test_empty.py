"""No steps (T = 0) or no sequences (B = 0): empty outputs, final states
equal to the initial ones, gradients passed straight back, zero weight
gradients, everywhere (functions, layers, cells), and no kernel is called."""
import numpy as np
import pytest

import fastrnn
from fastrnn import _backends
from fastrnn._spec import CELLS
from fastrnn._testing import random_problem

I, H = 3, 4


@pytest.fixture
def no_kernels(monkeypatch):
    """Fail if a compiled kernel runs (empty work must not reach one)."""
    for backend in fastrnn.available_backends():
        if backend == "numpy":
            continue
        for cell in CELLS:
            module = _backends.kernels(backend, cell)
            for name in ("forward", "backward"):
                def refuse(*args, _where=f"{backend} {cell} {name}", **kwargs):
                    raise AssertionError(f"the {_where} kernel ran on empty work")
                monkeypatch.setattr(module, name, refuse)


@pytest.mark.parametrize("backend", ["numpy", "numba", "cython"])
@pytest.mark.parametrize("T, B", [(0, 3), (5, 0), (0, 0)])
@pytest.mark.parametrize("cell", CELLS)
def test_functions_on_empty_work(cell, T, B, backend, no_kernels):
    spec = CELLS[cell]
    p = random_problem(max(T, 1), max(B, 1), I, H, cell=cell)
    p["x"] = p["x"][:T, :B]
    for s in spec.initial:
        p[s] = p[s][:B]
    out, *finals, cache = getattr(fastrnn, f"{cell}_forward")(**p, backend=backend)
    assert out.shape == (T, B, H)
    for name, final in zip(spec.initial, finals):
        assert np.array_equal(final, p[name])
    ups = [np.ones((T, B, H))] + [np.full((B, H), 2.0) for _ in spec.initial]
    g = getattr(fastrnn, f"{cell}_backward")(*ups, cache)
    assert g.dx.shape == (T, B, I)
    for name in spec.state_grads:
        assert np.array_equal(getattr(g, name), np.full((B, H), 2.0))
    assert not g.dW_ih.any() and not g.dW_hh.any()
    assert g.dW_ih.shape == p["W_ih"].shape and g.dW_hh.shape == p["W_hh"].shape


@pytest.mark.parametrize("shape", [(0, 2, I), (5, 0, I)])
@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU"])
def test_layers_on_empty_work(cls, shape, no_kernels):
    layer = getattr(fastrnn, cls)(I, H, num_layers=2, bidirectional=True, dtype=np.float64)
    B = shape[1]
    h0 = np.random.default_rng(0).standard_normal((4, B, H))
    hx = (h0, h0 + 1) if cls == "LSTM" else h0
    out, h_n = layer(np.zeros(shape), hx)
    assert out.shape == shape[:2] + (2 * H,)
    if shape[0] == 0:
        for a, b in zip(h_n if cls == "LSTM" else (h_n,), hx if cls == "LSTM" else (hx,)):
            assert np.array_equal(a, b)
    dx, _ = layer.backward(np.zeros_like(out))
    assert dx.shape == shape
    assert all(not g.any() for g in layer.grads.values())


def test_layers_with_no_sequences_match_torch():
    torch = pytest.importorskip("torch")
    t = torch.nn.GRU(I, H, num_layers=2).double()
    f = fastrnn.GRU(I, H, num_layers=2, dtype=np.float64)
    f.load_state_dict({k: v.detach().numpy() for k, v in t.state_dict().items()})
    out, h = f(np.zeros((5, 0, I)))
    tout, th = t(torch.zeros(5, 0, I, dtype=torch.float64))
    assert out.shape == tuple(tout.shape) and h.shape == tuple(th.shape)


@pytest.mark.parametrize("cls", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cells_with_no_sequences(cls, no_kernels):
    cell = getattr(fastrnn, cls)(I, H)
    out = cell(np.zeros((0, I), np.float32))
    first = out[0] if cls == "LSTMCell" else out
    assert first.shape == (0, H)
    dx, _ = cell.backward(*([np.zeros((0, H), np.float32)] * (2 if cls == "LSTMCell" else 1)))
    assert dx.shape == (0, I)


# --- no units (hidden_size = 0), as torch.nn allows it for cells only ---------------

@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU"])
def test_a_layer_without_units_is_refused_in_torchs_words(cls):
    with pytest.raises(ValueError, match="hidden_size must be greater than zero"):
        getattr(fastrnn, cls)(I, 0)
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="hidden_size must be greater than zero"):
        getattr(torch.nn, cls)(I, 0)


@pytest.mark.parametrize("bad, exc", [(-1, ValueError), (2.0, TypeError), (True, TypeError)])
def test_a_cell_size_must_still_be_an_integer_of_zero_or_more(bad, exc):
    with pytest.raises(exc, match="hidden_size"):
        fastrnn.GRUCell(I, bad)


@pytest.mark.parametrize("cls", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cells_without_units(cls, no_kernels, tmp_path):
    cell = getattr(fastrnn, cls)(I, 0, dtype=np.float64)
    k = 2 if cls == "LSTMCell" else 1
    assert all(p.size == 0 for p in cell.state_dict().values())
    x = np.random.default_rng(0).standard_normal((3, I))
    before = x.copy()
    out = cell(x)
    for state in (out if k == 2 else (out,)):
        assert state.shape == (3, 0) and state.dtype == np.float64
    dx, d_states = cell.backward(*([np.zeros((3, 0))] * k))
    assert np.array_equal(dx, np.zeros((3, I))) and np.array_equal(x, before)
    for d in (d_states if k == 2 else (d_states,)):
        assert d.shape == (3, 0)
    assert all(g.size == 0 for g in cell.grads.values())
    single = cell(x[0])  # unbatched, as torch
    assert (single[0] if k == 2 else single).shape == (0,)
    cell.save(tmp_path / "cell.npz")
    assert type(cell).load(tmp_path / "cell.npz").hidden_size == 0


@pytest.mark.parametrize("cls", ["RNNCell", "LSTMCell", "GRUCell"])
def test_fastrnn_torch_cells_without_units_match_torch(cls):
    torch = pytest.importorskip("torch")
    import fastrnn.torch as ft
    ours, theirs = getattr(ft, cls)(I, 0), getattr(torch.nn, cls)(I, 0)
    x = torch.randn(3, I, requires_grad=True)
    a, b = ours(x), theirs(x)
    for s, t in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        assert s.shape == t.shape == (3, 0)
