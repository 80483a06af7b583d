"""Layers of the cells that run themselves (fastrnn.layers.DirectionCell): the
LayerNorm LSTM and GRU (fastrnn.LayerNormLSTM, LayerNormGRU) and a user's
cells (cell.layer(...)): stacks, both directions, lengths, batch_first,
dropout, gradients and files, held to the functions they are built of."""
import importlib.util
import pathlib

import numpy as np
import pytest

import fastrnn
from fastrnn import reference
from fastrnn.layers import reverse_within_lengths

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples" / "cells"
BACKENDS = ["numpy", "numba", "cython"]
NORM = [(fastrnn.LayerNormLSTM, "layernorm_lstm"), (fastrnn.LayerNormGRU, "layernorm_gru")]


def _example(name):
    spec = importlib.util.spec_from_file_location(f"direction_cells_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cells():
    return {"gru": _example("gru").GRU, "peephole": _example("peephole_lstm").PEEPHOLE_LSTM,
            "min_gru": _example("min_gru").MIN_GRU}


def _need(backend):
    if backend != "numpy" and backend not in fastrnn.available_backends():
        pytest.skip(f"the {backend} backend is unavailable here")


def _perturbed(layer, rng):
    for _, p in layer.named_parameters():
        p += 0.1 * rng.standard_normal(p.shape).astype(p.dtype)


def _stacked(forward, layer, x, lengths):
    """The layer's output rebuilt from its cell's functions: each layer's two
    directions (the reverse one reading each sequence backwards within its
    length), concatenated."""
    inp = x
    for i in range(layer.num_layers):
        outs = []
        for d in range(layer.num_directions):
            weights = [layer.state_dict()[n] for n in layer._slots[i * layer.num_directions + d]]
            xi = reverse_within_lengths(inp, lengths) if d else inp
            out = forward(xi, weights)
            outs.append(reverse_within_lengths(out, lengths) if d else out)
        inp = np.concatenate(outs, axis=2)
    return inp


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cls,cell", NORM)
def test_layernorm_layers_are_their_functions_stacked(cls, cell, dtype, backend):
    _need(backend)
    rng = np.random.default_rng(0)
    layer = cls(5, 6, num_layers=2, bidirectional=True, eps=1e-3, dtype=dtype, seed=1,
                backend=backend)
    _perturbed(layer, rng)
    x = rng.standard_normal((7, 3, 5)).astype(dtype)
    lengths = np.array([7, 2, 0])
    out, _ = layer.forward(x, lengths=lengths)
    n = len(layer._spec.states)
    f64 = lambda a: a.astype(np.float64)  # noqa: E731
    expected = _stacked(
        lambda xi, w: getattr(reference, f"{cell}_forward")(
            f64(xi), *(None,) * n, *map(f64, w), eps=1e-3, lengths=lengths)[0],
        layer, x, lengths)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expected, atol=tol)
    assert np.all(out[2:, 1] == 0) and np.all(out[:, 2] == 0)


@pytest.mark.parametrize("cls,cell", NORM)
def test_layernorm_layer_gradients_are_finite_differences(cls, cell):
    rng = np.random.default_rng(2)
    layer = cls(4, 5, num_layers=2, bidirectional=True, batch_first=True, dtype=np.float64,
                seed=3)
    _perturbed(layer, rng)
    x = rng.standard_normal((3, 6, 4))
    lengths = np.array([6, 3, 1])
    out, _ = layer.forward(x, lengths=lengths)
    d = rng.standard_normal(out.shape)
    dx, _ = layer.backward(d)

    def loss():
        layer.eval()
        value = float((layer.forward(x, lengths=lengths)[0] * d).sum())
        layer.train()
        return value

    eps = 1e-6
    for name in ("weight_hh_l0", "gamma_h_l1_reverse", "beta_i_l0_reverse", "weight_ih_l1"):
        p = layer.named_parameters()[[n for n, _ in layer.named_parameters()].index(name)][1]
        for idx in [(0,) * p.ndim, tuple(s - 1 for s in p.shape)]:
            p[idx] += eps
            up = loss()
            p[idx] -= 2 * eps
            down = loss()
            p[idx] += eps
            assert layer.grads[name][idx] == pytest.approx((up - down) / (2 * eps), rel=1e-5,
                                                           abs=1e-8), (name, idx)
    x[1, 2, 3] += eps
    up = loss()
    x[1, 2, 3] -= 2 * eps
    down = loss()
    assert dx[1, 2, 3] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("cls,cell", NORM)
def test_layernorm_layer_files_options_and_dropout(cls, cell, tmp_path):
    layer = cls(3, 4, num_layers=3, dropout=0.5, eps=1e-4, seed=0)
    names = [n for n, _ in layer.named_parameters()]
    assert names[:2] == ["weight_ih_l0", "weight_hh_l0"] and "gamma_i_l2" in names
    assert np.all(layer.state_dict()["gamma_h_l1"] == 1) and np.all(layer.state_dict()["beta_h_l1"] == 0)
    path = tmp_path / "layer.npz"
    layer.save(path)
    again = cls.load(path)
    assert again.eps == 1e-4 and again.num_layers == 3 and again.dropout == 0.5
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    layer.eval()
    again.eval()
    np.testing.assert_array_equal(again(x)[0], layer(x)[0])
    layer.train()
    assert not np.allclose(layer(x)[0], again(x)[0])  # dropout between layers in training
    with pytest.raises(ValueError, match="compute_dtype"):
        cls(3, 4, compute_dtype="bfloat16")
    with pytest.raises(ValueError, match="eps"):
        cls(3, 4, eps=0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_user_gru_layers_are_fastrnn_gru(cells, dtype, backend):
    _need(backend)
    rng = np.random.default_rng(0)
    mine = cells["gru"].layer(5, 7, 2, bidirectional=True, batch_first=True, dtype=dtype,
                              seed=1, backend=backend)
    ref = fastrnn.GRU(5, 7, 2, bidirectional=True, batch_first=True, dtype=dtype)
    ref.load_state_dict(mine.state_dict())
    x = rng.standard_normal((3, 9, 5)).astype(dtype)
    lengths = np.array([9, 4, 0])
    h0 = rng.standard_normal((4, 3, 7)).astype(dtype)
    (o1, h1), (o2, h2) = mine.forward(x, h0, lengths), ref.forward(x, h0, lengths)
    d = rng.standard_normal(o1.shape).astype(dtype)
    (dx1, dh1), (dx2, dh2) = mine.backward(d, h1), ref.backward(d, h2)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for a, b in [(o1, o2), (h1, h2), (dx1, dx2), (dh1, dh2)] + [
            (mine.grads[k], ref.grads[k]) for k in ref.grads]:
        np.testing.assert_allclose(a, b, atol=tol)


def test_user_peephole_layers_are_fastrnn_lstm_with_peepholes(cells, tmp_path):
    rng = np.random.default_rng(4)
    cell = cells["peephole"]
    mine = cell.layer(4, 5, 2, dtype=np.float64, seed=0)
    ref = fastrnn.LSTM(4, 5, 2, peepholes=True, dtype=np.float64)
    state = mine.state_dict()
    for name in list(state):
        state[name] = state[name] + 0.2 * rng.standard_normal(state[name].shape)
    mine.load_state_dict(state)
    translated = {k: v for k, v in state.items() if not k.startswith("p_")}
    for layer in range(2):
        translated[f"weight_ch_l{layer}"] = np.concatenate(
            [state[f"p_{g}_l{layer}"] for g in "ifo"])
    ref.load_state_dict(translated)
    x = rng.standard_normal((6, 2, 4))
    (o1, (h1, c1)), (o2, (h2, c2)) = mine.forward(x), ref.forward(x)
    np.testing.assert_allclose(o1, o2, atol=1e-12)
    np.testing.assert_allclose(c1, c2, atol=1e-12)
    d = rng.standard_normal(o1.shape)
    mine.backward(d, None, np.ones_like(c1))
    ref.backward(d, None, np.ones_like(c2))
    for layer in range(2):
        np.testing.assert_allclose(
            np.concatenate([mine.grads[f"p_{g}_l{layer}"] for g in "ifo"]),
            ref.grads[f"weight_ch_l{layer}"], atol=1e-12)
    path = tmp_path / "peephole.npz"
    mine.save(path)
    again = cell.Layer.load(path)
    mine.eval()
    again.eval()
    np.testing.assert_array_equal(again(x)[0], mine(x)[0])


def test_user_cell_layers_refusals(cells):
    import fastrnn.cells as fc

    three = fc.Cell("three", gates=("a",), states=("h", "c", "e"),
                    forward=lambda x, r, s, p: (x[0] + r[0], s[1], s[2]),
                    backward=lambda x, r, s, p, d: ((d[0],), (d[0],), (0.0, d[1], d[2]), ()))
    assert three.Layer is None
    with pytest.raises(TypeError, match="at most two"):
        three.layer(2, 3)
    with pytest.raises(TypeError, match="cell.layer"):
        fc.CellLayers(2, 3)
    layer = cells["min_gru"].layer(2, 3)
    assert [n for n, _ in layer.named_parameters()] == ["weight_ih_l0", "bias_ih_l0"]
    with pytest.raises(ValueError, match="compute_dtype"):
        cells["gru"].layer(2, 3, compute_dtype="bfloat16")
