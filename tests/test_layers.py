"""Layers and cells: PyTorch parity (both ways), finite differences through a
stacked bidirectional layer with lengths, state dicts, files and errors."""
import numpy as np
import pytest

import fastrnn
from fastrnn.layers import reverse_within_lengths

LAYERS = {"rnn": fastrnn.RNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}
CELLS = {"rnn": fastrnn.RNNCell, "lstm": fastrnn.LSTMCell, "gru": fastrnn.GRUCell}
T, B, I, H = 6, 3, 4, 5
LENGTHS = [6, 2, 4]


def _hx(cell, L, rng, dtype=np.float64):
    h = rng.standard_normal((L, B, H)).astype(dtype)
    return (h, rng.standard_normal((L, B, H)).astype(dtype)) if cell == "lstm" else h


def _loss_parts(cell, output, state, ups):
    """<output, d_output> + <h_n, d_h_n> (+ <c_n, d_c_n>)."""
    h_n, c_n = state if cell == "lstm" else (state, None)
    total = np.sum(output * ups["d_output"]) + np.sum(h_n * ups["d_h_n"])
    return total + (np.sum(c_n * ups["d_c_n"]) if cell == "lstm" else 0.0)


def _backward(cell, layer, ups):
    extra = (ups["d_c_n"],) if cell == "lstm" else ()
    return layer.backward(ups["d_output"], ups["d_h_n"], *extra)


# --- PyTorch parity ------------------------------------------------------------

@pytest.fixture(scope="module")
def torch_module():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("cell", LAYERS)
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bidir"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_layer_matches_torch(torch_module, backend, cell, bidirectional, batch_first, bias,
                             lengths):
    torch_module.manual_seed(0)
    L, D = 2, 2 if bidirectional else 1
    tm = getattr(torch_module.nn, cell.upper() if cell != "rnn" else "RNN")(
        I, H, num_layers=L, bias=bias, batch_first=batch_first,
        bidirectional=bidirectional).double()
    layer = LAYERS[cell](I, H, num_layers=L, bias=bias, batch_first=batch_first,
                         bidirectional=bidirectional, dtype=np.float64, backend=backend)
    layer.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    rng = np.random.default_rng(1)
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I))
    hx = _hx(cell, L * D, rng)

    tx = torch_module.tensor(x, requires_grad=True)
    thx = tuple(torch_module.tensor(a, requires_grad=True) for a in hx) if cell == "lstm" \
        else torch_module.tensor(hx, requires_grad=True)
    inp = tx if lengths is None else torch_module.nn.utils.rnn.pack_padded_sequence(
        tx, torch_module.tensor(lengths), batch_first=batch_first, enforce_sorted=False)
    t_out, t_state = tm(inp, thx)
    if lengths is not None:
        t_out, _ = torch_module.nn.utils.rnn.pad_packed_sequence(t_out, batch_first=batch_first,
                                                                 total_length=T)
    ups = {"d_output": rng.standard_normal(t_out.shape), "d_h_n": rng.standard_normal((L * D, B, H)),
           "d_c_n": rng.standard_normal((L * D, B, H))}
    t_states = t_state if cell == "lstm" else (t_state,)
    loss = (t_out * torch_module.tensor(ups["d_output"])).sum() + sum(
        (s * torch_module.tensor(ups[k])).sum() for s, k in zip(t_states, ("d_h_n", "d_c_n")))
    loss.backward()

    output, state = layer(x, hx, lengths=lengths)
    np.testing.assert_allclose(output, t_out.detach().numpy(), atol=1e-12)
    for mine, theirs in zip(state if cell == "lstm" else (state,), t_states):
        np.testing.assert_allclose(mine, theirs.detach().numpy(), atol=1e-12)
    dx, dhx = _backward(cell, layer, ups)
    np.testing.assert_allclose(dx, tx.grad.numpy(), atol=1e-12)
    t_dhx = [a.grad.numpy() for a in thx] if cell == "lstm" else [thx.grad.numpy()]
    for mine, theirs in zip(dhx if cell == "lstm" else (dhx,), t_dhx):
        np.testing.assert_allclose(mine, theirs, atol=1e-12)
    assert list(layer.grads) == [name for name, _ in tm.named_parameters()]
    for name, p in tm.named_parameters():
        np.testing.assert_allclose(layer.grads[name], p.grad.numpy(), atol=1e-12, err_msg=name)


@pytest.mark.parametrize("cell", LAYERS)
def test_weights_go_from_fastrnn_to_torch(torch_module, cell):
    layer = LAYERS[cell](I, H, num_layers=2, bidirectional=True, seed=3)
    tm = getattr(torch_module.nn, cell.upper() if cell != "rnn" else "RNN")(
        I, H, num_layers=2, bidirectional=True)
    tm.load_state_dict({k: torch_module.from_numpy(v) for k, v in layer.state_dict().items()})
    x = np.random.default_rng(2).standard_normal((T, B, I)).astype(np.float32)
    output, _ = layer.eval()(x)
    with torch_module.no_grad():
        t_out, _ = tm(torch_module.from_numpy(x))
    np.testing.assert_allclose(output, t_out.numpy(), atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_cell_loop_matches_torch(torch_module, backend, cell):
    """Three steps of a custom loop, then BPTT by hand through the cell's stack."""
    torch_module.manual_seed(0)
    tc = getattr(torch_module.nn, {"rnn": "RNNCell", "lstm": "LSTMCell", "gru": "GRUCell"}[cell])(
        I, H).double()
    mine = CELLS[cell](I, H, dtype=np.float64, backend=backend)
    mine.load_state_dict({k: v.detach().numpy() for k, v in tc.state_dict().items()})
    rng = np.random.default_rng(4)
    xs = rng.standard_normal((3, B, I))
    d_hs = rng.standard_normal((3, B, H))

    tx = torch_module.tensor(xs, requires_grad=True)
    state, loss, t_hs = None, 0, []
    for t in range(3):
        state = tc(tx[t], state)
        h = state[0] if cell == "lstm" else state
        t_hs.append(h.detach().numpy())
        loss = loss + (h * torch_module.tensor(d_hs[t])).sum()
    loss.backward()

    state, hs = None, []
    for t in range(3):
        state = mine(xs[t], state)
        hs.append(state[0] if cell == "lstm" else state)
    np.testing.assert_allclose(np.stack(hs), np.stack(t_hs), atol=1e-12)
    carry_h, carry_c, dxs = np.zeros((B, H)), None, []
    for t in reversed(range(3)):
        result = mine.backward(d_hs[t] + carry_h, carry_c) if cell == "lstm" else \
            mine.backward(d_hs[t] + carry_h)
        dx, dhx = result
        carry_h, carry_c = dhx if cell == "lstm" else (dhx, None)
        dxs.append(dx)
    np.testing.assert_allclose(np.stack(dxs[::-1]), tx.grad.numpy(), atol=1e-12)
    for name, p in tc.named_parameters():
        np.testing.assert_allclose(mine.grads[name], p.grad.numpy(), atol=1e-12, err_msg=name)
    with pytest.raises(RuntimeError, match="backward"):
        mine.backward(d_hs[0])


# --- finite differences through a stack ----------------------------------------------

@pytest.mark.parametrize("cell", LAYERS)
def test_stacked_bidirectional_gradients_match_finite_differences(cell):
    layer = LAYERS[cell](I, H, num_layers=2, bidirectional=True, dropout=0.3, dtype=np.float64,
                         backend="numpy", seed=5)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((T, B, I))
    hx = _hx(cell, 4, rng)
    ups = {"d_output": rng.standard_normal((T, B, 2 * H)), "d_h_n": rng.standard_normal((4, B, H)),
           "d_c_n": rng.standard_normal((4, B, H))}

    def loss(params, x, hx):
        layer.load_state_dict(params)
        layer._rng = np.random.default_rng(7)  # the same dropout masks every time
        output, state = layer(x, hx, lengths=LENGTHS)
        return _loss_parts(cell, output, state, ups)

    params = layer.state_dict()
    loss(params, x, hx)
    dx, dhx = _backward(cell, layer, ups)
    grads = dict(layer.grads)
    for _ in range(3):
        v = {k: rng.standard_normal(p.shape) for k, p in params.items()}
        vx = rng.standard_normal(x.shape)
        vh = [rng.standard_normal(a.shape) for a in (hx if cell == "lstm" else (hx,))]
        eps = 1e-6

        def shifted(sign):
            p = {k: params[k] + sign * eps * v[k] for k in params}
            h = [a + sign * eps * d for a, d in zip(hx if cell == "lstm" else (hx,), vh)]
            return loss(p, x + sign * eps * vx, tuple(h) if cell == "lstm" else h[0])

        numeric = (shifted(1) - shifted(-1)) / (2 * eps)
        analytic = sum(np.sum(grads[k] * v[k]) for k in params) + np.sum(dx * vx) + sum(
            np.sum(g * d) for g, d in zip(dhx if cell == "lstm" else (dhx,), vh))
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-8)


def test_reverse_within_lengths_is_its_own_inverse():
    a = np.arange(T * B).reshape(T, B)
    lengths = np.array(LENGTHS)
    r = reverse_within_lengths(a, lengths)
    np.testing.assert_array_equal(r[:2, 1], a[:2, 1][::-1])
    np.testing.assert_array_equal(r[2:, 1], a[2:, 1])  # padding stays in place
    np.testing.assert_array_equal(reverse_within_lengths(r, lengths), a)


# --- modes, dropout, state dicts, files -----------------------------------------------------

@pytest.mark.parametrize("cell", LAYERS)
def test_eval_stores_nothing_and_one_backward_per_forward(cell):
    layer = LAYERS[cell](I, H, seed=0)
    x = np.zeros((T, B, I), np.float32)
    output, _ = layer(x)
    layer.backward(np.ones_like(output))
    with pytest.raises(RuntimeError, match="one backward per forward"):
        layer.backward(np.ones_like(output))
    layer.eval()
    output, _ = layer(x)
    with pytest.raises(RuntimeError, match="training-mode forward"):
        layer.backward(np.ones_like(output))


def test_dropout_only_in_training():
    layer = fastrnn.GRU(I, H, num_layers=3, dropout=0.5, seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    a, _ = layer(x)
    b, _ = layer(x)
    assert not np.allclose(a, b)  # new masks each training forward
    layer.eval()
    c, _ = layer(x)
    d, _ = layer(x)
    np.testing.assert_array_equal(c, d)


@pytest.mark.parametrize("cell", LAYERS)
def test_state_dict_and_file_round_trips(cell, tmp_path):
    layer = LAYERS[cell](I, H, num_layers=2, bidirectional=True, batch_first=True, seed=1)
    other = LAYERS[cell](I, H, num_layers=2, bidirectional=True, batch_first=True, seed=2)
    other.load_state_dict(layer.state_dict())
    x = np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)
    np.testing.assert_array_equal(layer.eval()(x)[0], other.eval()(x)[0])
    path = tmp_path / "layer.npz"
    layer.save(path)
    loaded = LAYERS[cell].load(path)
    assert loaded.batch_first and loaded.bidirectional and loaded.num_layers == 2
    np.testing.assert_array_equal(loaded.eval()(x)[0], layer(x)[0])
    wrong = fastrnn.GRU if cell != "gru" else fastrnn.LSTM
    with pytest.raises(ValueError, match="holds a"):
        wrong.load(path)


def test_named_parameters_follow_pytorch():
    layer = fastrnn.LSTM(I, H, num_layers=2, bidirectional=True)
    names = [n for n, _ in layer.named_parameters()]
    assert names[:4] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    assert names[4] == "weight_ih_l0_reverse" and names[-1] == "bias_hh_l1_reverse"
    shapes = dict((n, p.shape) for n, p in layer.named_parameters())
    assert shapes["weight_ih_l1"] == (4 * H, 2 * H) and shapes["weight_hh_l0"] == (4 * H, H)
    assert all(p.dtype == np.float32 for p in layer.parameters())
    assert abs(layer.parameters()[0]).max() <= 1 / np.sqrt(H)


@pytest.mark.parametrize("change, exc, words", [
    (lambda s: s.pop("bias_hh_l0"), ValueError, ["missing", "bias_hh_l0"]),
    (lambda s: s.update(extra=np.zeros(3)), ValueError, ["unexpected", "extra"]),
    (lambda s: s.update(weight_hh_l0=np.zeros((H, H))), ValueError, ["weight_hh_l0", "shape"]),
    (lambda s: s.update(weight_hh_l0="abc"), TypeError, ["weight_hh_l0"]),
])
def test_malformed_state_dicts_are_rejected(change, exc, words):
    layer = fastrnn.GRU(I, H)
    state = layer.state_dict()
    before = layer.state_dict()
    change(state)
    with pytest.raises(exc) as info:
        layer.load_state_dict(state)
    for word in words:
        assert word in str(info.value)
    for name, p in layer.named_parameters():
        np.testing.assert_array_equal(p, before[name])  # nothing changed


@pytest.mark.parametrize("call, exc, words", [
    (lambda m: m(np.zeros((T, B, I))), TypeError, ["x", "float64", "float32"]),
    (lambda m: m(np.zeros((T, B, I + 1), np.float32)), ValueError, ["x", "input_size"]),
    (lambda m: m(np.zeros((T, B, I), np.float32), np.zeros((1, B, H), np.float32)), ValueError,
     ["hx", "(num_layers * num_directions, B, H)"]),
    (lambda m: m(np.zeros((T, B, I), np.float32), lengths=[1, 2]), ValueError, ["lengths"]),
    (lambda m: m.backward(np.zeros((T, B, H), np.float32)), RuntimeError, ["forward"]),
])
def test_bad_layer_input_raises(call, exc, words):
    layer = fastrnn.RNN(I, H, num_layers=2)
    with pytest.raises(exc) as info:
        call(layer)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("kwargs, exc", [
    (dict(input_size=0), ValueError), (dict(hidden_size=2.5), TypeError),
    (dict(num_layers=0), ValueError), (dict(dropout=1.5), ValueError),
    (dict(dtype=np.int32), TypeError), (dict(backend="torch"), ValueError),
    (dict(nonlinearity="sigmoid"), ValueError),
])
def test_bad_constructor_arguments_raise(kwargs, exc):
    args = {"input_size": I, "hidden_size": H, **kwargs}
    with pytest.raises(exc):
        fastrnn.RNN(**args)


@pytest.mark.parametrize("cell", CELLS)
def test_cell_file_round_trip(cell, tmp_path):
    kwargs = {"nonlinearity": "relu"} if cell == "rnn" else {}
    c = CELLS[cell](I, H, seed=1, **kwargs)
    c.save(tmp_path / "cell.npz")
    loaded = CELLS[cell].load(tmp_path / "cell.npz")
    assert loaded.nonlinearity == c.nonlinearity
    x = np.random.default_rng(0).standard_normal((B, I)).astype(np.float32)
    a, b = c.eval()(x), loaded.eval()(x)
    for u, v in zip(a if cell == "lstm" else (a,), b if cell == "lstm" else (b,)):
        np.testing.assert_array_equal(u, v)
