"""Training pieces: the output layer and losses against finite differences,
clipping and optimisers against hand-computed values, truncated BPTT."""
import io

import numpy as np
import pytest

import fastrnn
from fastrnn.training import (SGD, Adagrad, Adam, Linear, Progress, clip_grad_norm,
                              clip_grad_value, global_norm, mse, softmax_cross_entropy,
                              truncated_bptt)

T, B, C = 5, 3, 4
LENGTHS = [5, 0, 2]


def central_difference(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        up = f()
        x[idx] = old - eps
        down = f()
        x[idx] = old
        g[idx] = (up - down) / (2 * eps)
    return g


def test_linear_backward_matches_finite_differences():
    rng = np.random.default_rng(0)
    head = Linear(6, C, dtype=np.float64, seed=1)
    h = rng.standard_normal((T, B, 6))
    dy = rng.standard_normal((T, B, C))

    def loss():
        return float(np.sum(head(h) * dy))

    loss()
    dh = head.backward(dy)
    grads = dict(head.grads)
    with pytest.raises(RuntimeError):
        head.backward(dy)
    np.testing.assert_allclose(dh, central_difference(loss, h), rtol=1e-7, atol=1e-9)
    for name, p in head.params.items():
        np.testing.assert_allclose(grads[name], central_difference(loss, p), rtol=1e-7, atol=1e-9)


# Tall and wide C, each below and above the size at which the team shares it.
MATMUL_SHAPES = [(3, 4, 5), (1, 7, 2), (7, 1, 3), (300, 90, 128), (90, 300, 128), (2, 2, 0)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M, N, K", MATMUL_SHAPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_matmul_on_fastrnns_threads_is_numpys(dtype, M, N, K, trans_a, trans_b, threads):
    matmul = pytest.importorskip("fastrnn.kernels._matmul").matmul
    rng = np.random.default_rng(M * N + K)
    a = rng.standard_normal((K, M) if trans_a else (M, K)).astype(dtype)
    b = rng.standard_normal((N, K) if trans_b else (K, N)).astype(dtype)
    out = np.full((M, N), np.nan, dtype)
    a0, b0 = a.copy(), b.copy()
    matmul(a, b, out, trans_a, trans_b, threads)
    expected = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * max(K, 1))
    assert np.array_equal(a, a0) and np.array_equal(b, b0)


def test_matmul_checks_shapes_and_types():
    matmul = pytest.importorskip("fastrnn.kernels._matmul").matmul
    a, b = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32)
    with pytest.raises(ValueError, match=r"op\(A\) is \(3, 4\) but op\(Bm\) is \(5, 4\)"):
        matmul(a, b, np.empty((3, 4), np.float32), False, True)
    with pytest.raises(ValueError, match=r"out must have shape \(3, 5\)"):
        matmul(a, b, np.empty((5, 3), np.float32))
    with pytest.raises(ValueError, match="num_threads"):
        matmul(a, b, np.empty((3, 5), np.float32), num_threads=0)
    with pytest.raises((TypeError, ValueError)):
        matmul(a, b.astype(np.float64), np.empty((3, 5), np.float32))
    with pytest.raises(ValueError):  # a strided view is not C-contiguous
        matmul(a, np.ones((4, 10), np.float32)[:, ::2], np.empty((3, 5), np.float32))


@pytest.mark.parametrize("threads", [1, 2])
def test_linear_on_threads_matches_numpy(threads):
    """The read-out's products run on fastrnn's threads (kernels/_matmul.pyx)
    and give NumPy's answer for any leading shape, a transposed (non-contiguous)
    input and a 1-D one."""
    rng = np.random.default_rng(3)
    head = Linear(128, 90, seed=2)
    W, b = head.params["weight"].astype(np.float64), head.params["bias"].astype(np.float64)
    before = fastrnn.get_num_threads()
    fastrnn.set_num_threads(threads)
    try:
        for shape in [(64, 32, 128), (32, 128), (128,)]:
            h = rng.standard_normal(shape).astype(np.float32)
            if h.ndim == 3:
                h = h.transpose(1, 0, 2).copy().transpose(1, 0, 2)  # not C-contiguous
            dy = rng.standard_normal(shape[:-1] + (90,)).astype(np.float32)
            y = head(h)
            np.testing.assert_allclose(y, h @ W.T + b, rtol=1e-5, atol=1e-4)
            dh = head.backward(dy)
            assert dh.shape == h.shape
            np.testing.assert_allclose(dh, dy @ W, rtol=1e-5, atol=1e-4)
            dy2, h2 = dy.reshape(-1, 90).astype(np.float64), h.reshape(-1, 128)
            np.testing.assert_allclose(head.grads["weight"], dy2.T @ h2, rtol=1e-5, atol=1e-3)
    finally:
        fastrnn.set_num_threads(before)


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("last_only", [False, True], ids=["every-step", "many-to-one"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_gradient_matches_finite_differences(lengths, last_only, reduction):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((T, B, C)) * 3
    targets = rng.integers(0, C, (T, B))
    kwargs = dict(lengths=lengths, last_only=last_only, reduction=reduction)
    loss, grad = softmax_cross_entropy(logits, targets, **kwargs)
    numeric = central_difference(lambda: softmax_cross_entropy(logits, targets, **kwargs)[0], logits)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)
    if lengths is not None:
        assert not grad[:, 1].any() and not grad[2:, 2].any()  # padding and an empty sequence
    if last_only:
        counted = [(4, 0), (1, 2)] if lengths else [(4, b) for b in range(B)]
        assert all(grad[t, b].any() for t, b in counted)
        assert np.count_nonzero(np.abs(grad).sum(axis=2)) == len(counted)


def test_cross_entropy_is_the_definition_and_stable():
    logits = np.array([[[1.0, 2.0, 3.0]]])
    loss, _ = softmax_cross_entropy(logits, np.array([[2]]))
    assert loss == pytest.approx(-np.log(np.exp(3) / np.exp([1, 2, 3]).sum()))
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        loss, grad = softmax_cross_entropy(np.array([[[1e4, -1e4, 0.0]]], np.float32),
                                           np.array([[1]]))
    assert loss == pytest.approx(2e4, rel=1e-6) and np.isfinite(grad).all()
    assert grad.dtype == np.float32


@pytest.mark.parametrize("lengths, last_only", [(None, False), (LENGTHS, False), (LENGTHS, True)])
def test_mse_gradient_matches_finite_differences(lengths, last_only):
    rng = np.random.default_rng(2)
    pred, target = rng.standard_normal((2, T, B, 2))
    loss, grad = mse(pred, target, lengths=lengths, last_only=last_only)
    numeric = central_difference(lambda: mse(pred, target, lengths=lengths,
                                             last_only=last_only)[0], pred)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("call, exc", [
    (lambda: softmax_cross_entropy(np.zeros((T, B, C)), np.zeros((T, B + 1), int)), ValueError),
    (lambda: softmax_cross_entropy(np.zeros((T, B, C)), np.zeros((T, B))), TypeError),
    (lambda: softmax_cross_entropy(np.zeros((T, B, C)), np.full((T, B), C)), ValueError),
    (lambda: softmax_cross_entropy(np.zeros((T, B, C)), np.zeros((T, B), int), reduction="max"),
     ValueError),
    (lambda: mse(np.zeros((T, B, 2)), np.zeros((T, B, 3))), ValueError),
    (lambda: clip_grad_norm([np.ones(2)], 0), ValueError),
])
def test_bad_training_input_raises(call, exc):
    with pytest.raises(exc):
        call()


def test_clipping_by_value_and_by_norm():
    grads = {"a": np.array([3.0, -4.0]), "b": np.array([[12.0]])}
    assert global_norm(grads) == 13.0
    assert clip_grad_norm(grads, 6.5) == 13.0  # the norm before clipping
    np.testing.assert_allclose(grads["a"], [1.5, -2.0])
    np.testing.assert_allclose(grads["b"], [[6.0]])
    assert clip_grad_norm(grads, 100.0) == pytest.approx(6.5)  # under the limit: unchanged
    np.testing.assert_allclose(grads["a"], [1.5, -2.0])
    clip_grad_value(grads, 1.0)
    np.testing.assert_allclose(grads["a"], [1.0, -1.0])


def test_optimisers_match_hand_computed_updates():
    g1, g2 = np.array([1.0, -2.0]), np.array([0.5, 0.5])
    p = {"w": np.array([1.0, 1.0])}
    opt = SGD(p, lr=0.1, momentum=0.9)
    opt.step({"w": g1})
    opt.step({"w": g2})
    v2 = 0.9 * g1 + g2
    np.testing.assert_allclose(p["w"], 1 - 0.1 * g1 - 0.1 * v2)

    p = {"w": np.array([1.0, 1.0])}
    opt = Adagrad(p, lr=0.1, eps=0.0)
    opt.step({"w": g1})
    opt.step({"w": g2})
    np.testing.assert_allclose(p["w"], 1 - 0.1 * g1 / np.abs(g1)
                               - 0.1 * g2 / np.sqrt(g1 ** 2 + g2 ** 2))

    p = {"w": np.array([1.0, 1.0])}
    opt = Adam(p, lr=0.1, eps=0.0)
    opt.step({"w": g1})  # the first step moves every weight by lr against its gradient's sign
    np.testing.assert_allclose(p["w"], 1 - 0.1 * np.sign(g1))
    opt.step({"w": g2})
    m = 0.9 * 0.1 * g1 + 0.1 * g2
    v = 0.999 * 0.001 * g1 ** 2 + 0.001 * g2 ** 2
    np.testing.assert_allclose(p["w"], 1 - 0.1 * np.sign(g1)
                               - 0.1 * (m / (1 - 0.9 ** 2)) / np.sqrt(v / (1 - 0.999 ** 2)))


@pytest.mark.parametrize("cls", [SGD, Adagrad, Adam])
def test_optimiser_state_round_trip(cls):
    rng = np.random.default_rng(3)
    grads = [{"w": rng.standard_normal(3)} for _ in range(4)]
    kwargs = {"momentum": 0.9} if cls is SGD else {}
    a = {"w": np.ones(3)}
    opt = cls(a, lr=0.05, **kwargs)
    for g in grads[:2]:
        opt.step(g)
    b = {"w": a["w"].copy()}
    other = cls(b, lr=0.05, **kwargs)
    other.load_state_dict(opt.state_dict())
    for g in grads[2:]:
        opt.step(g)
        other.step(g)
    np.testing.assert_allclose(a["w"], b["w"])
    with pytest.raises(ValueError, match="does not hold"):
        opt.step({"v": np.ones(3)})


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_truncated_bptt_carries_the_state_and_cuts_the_gradient(cell):
    cls = {"rnn": fastrnn.RNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}[cell]
    layer = cls(3, 4, dtype=np.float64, seed=0)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((10, 2, 3))
    d_out = rng.standard_normal((10, 2, 4))
    states, window_grads = [], []

    def loss_and_grad(output, start, stop):
        return float(np.sum(output * d_out[start:stop])), d_out[start:stop]

    def on_window(start, stop, loss):
        window_grads.append({k: v.copy() for k, v in layer.grads.items()})

    losses, state = truncated_bptt(layer, x, 4, loss_and_grad, on_window=on_window)
    assert len(losses) == 3  # windows of 4, 4 and 2 steps
    full_out, full_state = layer.eval()(x)  # carried state = the whole sequence's state
    for a, b in zip(state if cell == "lstm" else (state,),
                    full_state if cell == "lstm" else (full_state,)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert losses[0] == pytest.approx(np.sum(full_out[:4] * d_out[:4]))

    # In the last window the carried state is a constant: its gradient is the
    # window's own loss differentiated with that state held fixed.
    _, start_state = layer(x[:8])
    layer.train()
    W = layer.named_parameters()[1][1]  # weight_hh_l0

    def window_loss():
        out, _ = layer.eval()(x[8:], start_state)
        return float(np.sum(out * d_out[8:]))

    numeric = central_difference(window_loss, W)
    np.testing.assert_allclose(window_grads[-1]["weight_hh_l0"], numeric, rtol=1e-6, atol=1e-9)


def test_truncated_bptt_forward_only_in_eval():
    layer = fastrnn.GRU(3, 4, seed=0).eval()
    x = np.zeros((7, 2, 3), np.float32)
    losses, _ = truncated_bptt(layer, x, 3, lambda out, a, b: (float(out.sum()), None))
    assert len(losses) == 3


def test_progress_prints_unless_quiet():
    out = io.StringIO()
    p = Progress(total=3, every=0.0, stream=out)
    for _ in range(3):
        p.update(0.5, tokens=10)
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "step 3/3" in lines[-1] and "tokens/s" in lines[-1]
    out = io.StringIO()
    q = Progress(total=3, every=0.0, quiet=True, stream=out)
    q.update(0.5)
    assert out.getvalue() == ""
