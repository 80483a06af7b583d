"""The GRU with the reset before its product (``reset_after=False``: Keras's
GRU(reset_after=False), ONNX's linear_before_reset=0): every backend against
the reference (which test_reference holds to finite differences), at the
awkward shapes, in chunks of steps, in layers, cells and files, and its
option checks.  Its outputs against Keras's and ONNX's are in
test_keras_import and test_onnx_import."""
import json

import numpy as np
import pytest

import fastrnn
from fastrnn import _tuning
from fastrnn import reference as R
from fastrnn._testing import (as_float64, assert_close, backward, forward, random_problem,
                              random_upstream)

SHAPES = [  # T, B, I, H, lengths: one unit, odd sizes, more rows than a chunk, a wide one
    (6, 1, 3, 1, None), (9, 3, 4, 7, [9, 0, 4]), (40, 17, 5, 33, list(range(0, 34, 2))),
    (12, 3, 6, 257, [12, 1, 7]),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("T, B, I, H, lengths", SHAPES)
def test_every_backend_matches_the_reference(fast_backend, kernel_path, T, B, I, H, lengths,
                                             dtype):  # noqa: E741
    # PyTorch's scale 1/sqrt(H): larger weights make H = 257 chaotic, where
    # float32 rounding alone grows past the tolerance in a few steps.
    p = random_problem(T, B, I, H, dtype, cell="gru", lengths=lengths, seed=4)
    ups = random_upstream("gru", T, B, H, dtype)
    want, cache = forward("gru", as_float64(p), reset_after=False)
    want_grads = backward("gru", as_float64(ups), cache, R)
    outs, cache = forward("gru", p, fast_backend, reset_after=False)
    grads = backward("gru", ups, cache)
    inference, _ = forward("gru", p, fast_backend, training=False, reset_after=False)
    for name in want:
        assert_close(outs[name], want[name], dtype, name)
        np.testing.assert_array_equal(inference[name], outs[name], err_msg=name)
    assert set(grads) == set(want_grads)
    for name in want_grads:
        assert_close(grads[name], want_grads[name], dtype, name)


def test_chunks_of_one_step_give_the_same_results(monkeypatch):
    """The Cython kernels keep a chunk of steps (inference's saved values, the
    backward's da): with chunks of one and three steps the results are the
    whole sequence's."""
    p = random_problem(11, 4, 3, 6, cell="gru", lengths=[11, 0, 6, 10], seed=5)
    ups = random_upstream("gru", 11, 4, 6)
    whole, cache = forward("gru", p, "cython", reset_after=False)
    whole_grads = backward("gru", ups, cache)
    for steps in (1, 3):
        monkeypatch.setattr(_tuning, "kept_steps",
                            lambda backend, training, T, B: T if training else steps)
        monkeypatch.setattr(_tuning, "workspace_steps", lambda backend, T, B: steps)
        inference, _ = forward("gru", p, "cython", training=False, reset_after=False)
        _, cache = forward("gru", p, "cython", reset_after=False)
        grads = backward("gru", ups, cache)
        for name in whole:
            np.testing.assert_allclose(inference[name], whole[name], rtol=1e-13, err_msg=name)
        for name in whole_grads:
            np.testing.assert_allclose(grads[name], whole_grads[name], rtol=1e-12, atol=1e-14,
                                       err_msg=name)


def test_the_two_forms_differ_and_the_default_is_pytorchs(backend):
    p = random_problem(5, 3, 4, 6, cell="gru", seed=2)
    default, _ = forward("gru", p, backend)
    after, _ = forward("gru", p, backend, reset_after=True)
    before, cache = forward("gru", p, backend, reset_after=False)
    np.testing.assert_array_equal(default["out"], after["out"])
    assert np.abs(before["out"] - after["out"]).max() > 1e-3
    assert cache.reset_after is False
    # b_hn adds where b_in does: its gradients are the same
    grads = backward("gru", random_upstream("gru", 5, 3, 6), cache)
    np.testing.assert_allclose(grads["db_hh"][12:], grads["db_ih"][12:], rtol=1e-15)


@pytest.mark.parametrize("value, exc, words", [
    ("no", TypeError, "reset_after must be True or False, got 'no'"),
    (0, TypeError, "reset_after must be True or False, got 0"),
    (None, TypeError, "reset_after must be True or False, got None"),
])
def test_the_option_is_checked(backend, value, exc, words):
    p = random_problem(3, 2, 3, 4, cell="gru")
    with pytest.raises(exc, match=words):
        fastrnn.gru_forward(**p, reset_after=value, backend=backend)
    with pytest.raises(exc, match=words):
        fastrnn.GRU(3, 4, reset_after=value)
    assert fastrnn.gru_forward(**p, reset_after=np.bool_(False), backend=backend)[2].reset_after \
        is False
    layer = fastrnn.GRU(3, 4, reset_after=False)
    with pytest.raises(AttributeError, match="reset_after is fixed"):
        layer.reset_after = True


def test_bfloat16_compute_is_refused_by_name():
    p = random_problem(3, 2, 3, 4, np.float32, cell="gru")
    for run in (fastrnn.gru_forward, R.gru_forward):
        with pytest.raises(ValueError, match="bfloat16.*reset_after=False"):
            run(**p, reset_after=False, compute_dtype="bfloat16")
    with pytest.raises(ValueError, match="bfloat16.*reset_after=False"):
        fastrnn.GRU(3, 4, reset_after=False, compute_dtype="bfloat16")
    layer = fastrnn.GRUCell(3, 4, reset_after=False)
    with pytest.raises(ValueError, match="bfloat16.*reset_after=False"):
        layer.compute_dtype = "bfloat16"
    assert layer.compute_dtype is None


def test_the_callers_arrays_are_not_changed(backend):
    p = random_problem(6, 3, 4, 5, cell="gru", lengths=[6, 2, 0], seed=3)
    before = {k: v.copy() for k, v in p.items() if isinstance(v, np.ndarray)}
    ups = random_upstream("gru", 6, 3, 5)
    ups_before = {k: v.copy() for k, v in ups.items()}
    _, cache = forward("gru", p, backend, reset_after=False)
    backward("gru", ups, cache)
    for k, v in before.items():
        np.testing.assert_array_equal(p[k], v, err_msg=k)
    for k, v in ups_before.items():
        np.testing.assert_array_equal(ups[k], v, err_msg=k)


def _layer(backend, **kwargs):
    return fastrnn.GRU(3, 6, num_layers=2, bidirectional=True, reset_after=False, seed=7,
                       dtype=np.float64, backend=backend, **kwargs)


def test_a_stacked_bidirectional_layer_matches_the_reference_layer(fast_backend):
    x = np.random.default_rng(0).standard_normal((11, 4, 3))
    lengths = [11, 0, 5, 9]
    results = []
    for backend in ("numpy", fast_backend):
        layer = _layer(backend, dropout=0.3)
        out, h = layer(x, lengths=lengths)
        dx, dh = layer.backward(np.cos(out), np.ones_like(h))
        results.append((out, h, dx, dh, layer.grads))
    (*arrays, grads), (*fast, fast_grads) = results
    for a, b in zip(arrays, fast):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)
    assert list(grads) == list(fast_grads)
    for name in grads:
        np.testing.assert_allclose(fast_grads[name], grads[name], rtol=1e-10, atol=1e-12,
                                   err_msg=name)


def test_the_layers_gradients_are_the_losss_derivatives():
    """Central differences of the layer's loss in a few entries of the n
    block of each weight_hh, the weight this form uses differently."""
    x = np.random.default_rng(1).standard_normal((7, 2, 3))
    layer = _layer("cython")
    out, _ = layer(x, lengths=[7, 4])
    layer.backward(np.cos(out))
    eps = 1e-6
    for name in ("weight_hh_l0", "weight_hh_l1_reverse", "bias_hh_l1"):
        w = layer._params[name]
        for k in (0, 7, 13, 16):  # blocks r, z, n
            index = (k, 1) if w.ndim == 2 else (k,)
            saved = w[index]
            losses = []
            for step in (eps, -eps):
                w[index] = saved + step
                losses.append(np.sin(layer(x, lengths=[7, 4])[0]).sum())
            w[index] = saved
            numeric = (losses[0] - losses[1]) / (2 * eps)
            assert layer.grads[name][index] == pytest.approx(numeric, rel=1e-6, abs=1e-9), \
                (name, index)


def test_a_cell_steps_as_the_layer_runs():
    layer = fastrnn.GRU(3, 5, reset_after=False, seed=2, dtype=np.float64)
    cell = fastrnn.GRUCell(3, 5, reset_after=False, dtype=np.float64)
    cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})  # weight_ih_l0 ->
    x = np.random.default_rng(3).standard_normal((6, 2, 3))
    out, h_n = layer(x)
    h = None
    for t in range(6):
        h = cell(x[t], h)
        np.testing.assert_allclose(h, out[t], rtol=1e-12)
    np.testing.assert_allclose(h, h_n[0], rtol=1e-12)
    layer.backward(np.ones_like(out))
    d = None
    for t in reversed(range(6)):
        _, d = cell.backward(np.ones((2, 5)) + (0 if d is None else d))
    np.testing.assert_allclose(cell.grads["weight_hh"], layer.grads["weight_hh_l0"], rtol=1e-10)


def test_files_keep_the_option(tmp_path):
    layer = fastrnn.GRU(3, 5, num_layers=2, reset_after=False, seed=3)
    layer.save(tmp_path / "g.npz")
    loaded = fastrnn.GRU.load(tmp_path / "g.npz")
    assert loaded.reset_after is False and repr(loaded) == repr(layer)
    assert "reset_after=False" in repr(layer) and "reset_after" not in repr(fastrnn.GRU(3, 5))
    x = np.ones((4, 2, 3), np.float32)
    np.testing.assert_array_equal(loaded(x)[0], layer(x)[0])
    # a file saved before the option existed (no such key) is PyTorch's GRU
    fastrnn.GRU(3, 5, seed=3).save(tmp_path / "old.npz")
    with np.load(tmp_path / "old.npz") as f:
        entries = dict(f)
    config = json.loads(str(entries["__config__"]))
    del config["reset_after"]
    entries["__config__"] = np.array(json.dumps(config))
    np.savez(tmp_path / "old.npz", **entries)
    assert fastrnn.GRU.load(tmp_path / "old.npz").reset_after is True
