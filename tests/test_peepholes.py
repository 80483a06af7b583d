"""The LSTM with peepholes (ONNX's P, fastrnn's W_ch): every backend against
the reference (which test_reference holds to finite differences), at the
engine's awkward shapes, in layers, cells and files, and its input checks."""
import json

import numpy as np
import pytest

import fastrnn
from fastrnn import reference as R
from fastrnn._testing import (as_float64, assert_close, backward, forward, random_problem,
                              random_upstream)

SHAPES = [  # T, B, I, H, lengths: one unit, odd sizes, a long sequence (the packed path)
    (6, 1, 3, 1, None), (9, 3, 4, 7, [9, 0, 4]), (40, 17, 5, 33, list(range(0, 34, 2))),
    (12, 3, 6, 257, [12, 1, 7]),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("T, B, I, H, lengths", SHAPES)
def test_every_backend_matches_the_reference(fast_backend, kernel_path, T, B, I, H, lengths,
                                             dtype):  # noqa: E741
    p = random_problem(T, B, I, H, dtype, cell="lstm", lengths=lengths, seed=4, extras=["W_ch"],
                       weight_scale=0.7)
    ups = random_upstream("lstm", T, B, H, dtype)
    want, cache = forward("lstm", as_float64(p))
    want_grads = backward("lstm", as_float64(ups), cache, R)
    outs, cache = forward("lstm", p, fast_backend)
    grads = backward("lstm", ups, cache)
    inference, _ = forward("lstm", p, fast_backend, training=False)
    assert set(grads) == set(want_grads) and grads["dW_ch"] is not None
    for name in want:
        assert_close(outs[name], want[name], dtype, name)
        np.testing.assert_array_equal(inference[name], outs[name], err_msg=name)
    for name in want_grads:
        assert_close(grads[name], want_grads[name], dtype, name)


def test_bfloat16_products_match_the_bf16_reference():
    p = random_problem(30, 5, 8, 40, np.float32, cell="lstm", lengths=[30, 0, 7, 29, 30],
                       seed=2, extras=["W_ch"])
    ups = random_upstream("lstm", 30, 5, 40, np.float32)
    outs, cache = forward("lstm", p, "cython", compute_dtype="bfloat16")
    want, ref_cache = forward("lstm", p, compute_dtype="bfloat16")
    for name in want:
        np.testing.assert_allclose(outs[name], want[name], atol=2e-5, err_msg=name)
    grads, want_grads = backward("lstm", ups, cache), backward("lstm", ups, ref_cache, R)
    for name in want_grads:
        np.testing.assert_allclose(grads[name], want_grads[name], atol=2e-4, rtol=1e-3,
                                   err_msg=name)


def test_zero_peepholes_are_the_plain_lstm(backend):
    p = random_problem(20, 4, 3, 9, cell="lstm", lengths=[20, 3, 0, 11], seed=1)
    ups = random_upstream("lstm", 20, 4, 9)
    plain, c1 = forward("lstm", p, backend)
    zero, c2 = forward("lstm", {**p, "W_ch": np.zeros(27)}, backend)
    g1, g2 = backward("lstm", ups, c1), backward("lstm", ups, c2)
    for name in plain:
        np.testing.assert_allclose(zero[name], plain[name], rtol=1e-15, atol=0, err_msg=name)
    assert "dW_ch" not in g1 and g2["dW_ch"].shape == (27,)
    for name in g1:
        np.testing.assert_allclose(g2[name], g1[name], rtol=1e-13, atol=1e-15, err_msg=name)
    # the function's own tuple: None without peepholes, as a missing bias
    _, _, _, cache = fastrnn.lstm_forward(**p, backend=backend)
    assert fastrnn.lstm_backward(None, None, None, cache).dW_ch is None


@pytest.mark.parametrize("W_ch, exc, words", [
    (np.zeros(8), ValueError, ["W_ch", "(3*H,)", "(15,)", "(8,)"]),
    (np.zeros((3, 5)), ValueError, ["W_ch", "(3*H,)"]),
    (np.zeros(15, np.float32), TypeError, ["W_ch", "float32", "float64"]),
    ("abc", TypeError, ["W_ch"]),
])
def test_bad_peepholes_are_refused_by_name(backend, W_ch, exc, words):
    p = random_problem(4, 2, 3, 5, cell="lstm")
    with pytest.raises(exc) as info:
        fastrnn.lstm_forward(**{**p, "W_ch": W_ch}, backend=backend)
    for word in words:
        assert word in str(info.value)


def test_the_callers_peepholes_are_not_changed_and_not_read_after_the_forward(backend):
    p = random_problem(5, 2, 3, 4, cell="lstm", extras=["W_ch"])
    W_ch = p["W_ch"]
    before = W_ch.copy()
    ups = random_upstream("lstm", 5, 2, 4)
    expected = backward("lstm", ups, forward("lstm", p, backend)[1])
    _, cache = forward("lstm", p, backend)
    W_ch += 1.0  # after the forward: the cache has its own copy
    got = backward("lstm", ups, cache)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    np.testing.assert_array_equal(W_ch, before + 1.0)


def _layer(backend, **kwargs):
    return fastrnn.LSTM(3, 6, num_layers=2, bidirectional=True, peepholes=True, seed=7,
                        dtype=np.float64, backend=backend, **kwargs)


def test_a_stacked_bidirectional_layer_matches_the_reference_layer(fast_backend):
    x = np.random.default_rng(0).standard_normal((11, 4, 3))
    lengths = [11, 0, 5, 9]
    results = []
    for backend in ("numpy", fast_backend):
        layer = _layer(backend, dropout=0.3)
        out, (h, c) = layer(x, lengths=lengths)
        dx, (dh, dc) = layer.backward(np.cos(out), np.ones_like(h), np.ones_like(c))
        results.append((out, h, c, dx, dh, dc, layer.grads))
    (*arrays, grads), (*fast, fast_grads) = results
    for a, b in zip(arrays, fast):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
    assert list(grads) == list(fast_grads)
    assert [n for n in grads if "weight_ch" in n] == [
        "weight_ch_l0", "weight_ch_l0_reverse", "weight_ch_l1", "weight_ch_l1_reverse"]
    for name in grads:
        np.testing.assert_allclose(fast_grads[name], grads[name], rtol=1e-10, atol=1e-12,
                                   err_msg=name)


def test_the_layers_peephole_gradients_are_the_losss_derivatives():
    """Central differences of the layer's loss in a few entries of each
    weight_ch: the gradient reaches the right layer and direction."""
    x = np.random.default_rng(1).standard_normal((7, 2, 3))
    layer = _layer("cython")
    out, _ = layer(x, lengths=[7, 4])
    layer.backward(np.cos(out))
    eps = 1e-6
    for name in ("weight_ch_l0", "weight_ch_l0_reverse", "weight_ch_l1", "weight_ch_l1_reverse"):
        for k in (0, 7, 13):  # blocks i, f, o
            w = layer._params[name]
            saved = w[k]
            losses = []
            for step in (eps, -eps):
                w[k] = saved + step
                losses.append(np.sin(layer(x, lengths=[7, 4])[0]).sum())
            w[k] = saved
            numeric = (losses[0] - losses[1]) / (2 * eps)
            assert layer.grads[name][k] == pytest.approx(numeric, rel=1e-6, abs=1e-9), (name, k)


def test_a_peephole_cell_steps_as_the_layer_runs(tmp_path):
    layer = fastrnn.LSTM(3, 5, peepholes=True, seed=2, dtype=np.float64)
    cell = fastrnn.LSTMCell(3, 5, peepholes=True, dtype=np.float64)
    cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})  # weight_ch_l0 ->
    x = np.random.default_rng(3).standard_normal((6, 2, 3))
    out, (h_n, c_n) = layer(x)
    hx = None
    for t in range(6):
        hx = cell(x[t], hx)
        np.testing.assert_allclose(hx[0], out[t], rtol=1e-12)
    np.testing.assert_allclose(hx[1], c_n[0], rtol=1e-12)
    # gradients add up over the steps, as the layer's over its sequence
    layer.backward(np.ones_like(out))
    d = (None, None)
    for t in reversed(range(6)):
        _, d = cell.backward(np.ones((2, 5)) + (0 if d[0] is None else d[0]), d[1])
    np.testing.assert_allclose(cell.grads["weight_ch"], layer.grads["weight_ch_l0"], rtol=1e-10)


def test_files_keep_the_peepholes(tmp_path):
    layer = fastrnn.LSTM(3, 5, num_layers=2, peepholes=True, seed=3)
    layer.save(tmp_path / "p.npz")
    loaded = fastrnn.LSTM.load(tmp_path / "p.npz")
    assert loaded.peepholes and repr(loaded) == repr(layer)
    x = np.ones((4, 2, 3), np.float32)
    np.testing.assert_array_equal(loaded(x)[0], layer(x)[0])
    # a file saved before peepholes existed (no such key) is a plain LSTM
    plain = fastrnn.LSTM(3, 5, seed=3)
    plain.save(tmp_path / "old.npz")
    with np.load(tmp_path / "old.npz") as f:
        entries = dict(f)
    config = json.loads(str(entries["__config__"]))
    del config["peepholes"]
    entries["__config__"] = np.array(json.dumps(config))
    np.savez(tmp_path / "old.npz", **entries)
    assert not fastrnn.LSTM.load(tmp_path / "old.npz").peepholes


def test_a_state_dict_without_the_peepholes_is_refused():
    layer = fastrnn.LSTM(3, 5, peepholes=True)
    plain = fastrnn.LSTM(3, 5)
    with pytest.raises(ValueError, match=r"missing \['weight_ch_l0'\]"):
        layer.load_state_dict(plain.state_dict())
    with pytest.raises(ValueError, match=r"unexpected \['weight_ch_l0'\]"):
        plain.load_state_dict(layer.state_dict())


def test_the_option_is_checked_and_fixed():
    with pytest.raises(TypeError, match="peepholes must be True or False"):
        fastrnn.LSTM(3, 5, peepholes="yes")
    layer = fastrnn.LSTM(3, 5, peepholes=True)
    with pytest.raises(AttributeError, match="peepholes is fixed"):
        layer.peepholes = False
    assert "peepholes=True" in repr(layer) and "peepholes" not in repr(fastrnn.LSTM(3, 5))
