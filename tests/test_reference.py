"""The reference against the definition: central finite differences, lengths semantics."""
import numpy as np
import pytest

from fastrnn import reference as R
from _helpers import make_rnn_problem, upstream

PARAMS = ["x", "h0", "W_ih", "W_hh", "b_ih", "b_hh"]
GRAD_OF = {"x": "dx", "h0": "dh0", "W_ih": "dW_ih", "W_hh": "dW_hh", "b_ih": "db_ih", "b_hh": "db_hh"}


def loss(problem, nonlinearity, d_out, d_h_n):
    """L = <out, d_out> + <h_n, d_h_n>, whose gradients the backward computes."""
    out, h_n, _ = R.rnn_forward(**problem, nonlinearity=nonlinearity, training=False)
    return float(np.sum(out * d_out) + np.sum(h_n * d_h_n))


def numeric_grad(problem, name, nonlinearity, d_out, d_h_n, eps=1e-4):
    """Fourth-order central difference of ``loss`` for every entry of ``problem[name]``."""
    base = problem[name]
    grad = np.zeros_like(base)
    for idx in np.ndindex(base.shape):
        vals = []
        for step in (-2, -1, 1, 2):
            p = dict(problem)
            p[name] = base.copy()
            p[name][idx] += step * eps
            vals.append(loss(p, nonlinearity, d_out, d_h_n))
        grad[idx] = (vals[0] - 8 * vals[1] + 8 * vals[2] - vals[3]) / (12 * eps)
    return grad


CASES = [
    dict(lengths=None, bias=(True, True)),
    dict(lengths=[4, 0, 2], bias=(True, True)),
    dict(lengths=[4, 1, 3], bias=(False, False)),
    dict(lengths=None, bias=(True, False)),
]


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("case", CASES, ids=["plain", "lengths-with-0", "no-bias", "b_ih-only"])
def test_gradients_match_finite_differences(nonlinearity, case):
    T, B, I, H = 4, 3, 2, 5
    problem = make_rnn_problem(T, B, I, H, lengths=case["lengths"], bias=case["bias"], seed=3,
                               weight_scale=0.8)
    d_out, d_h_n = upstream(T, B, H)
    _, _, cache = R.rnn_forward(**problem, nonlinearity=nonlinearity)
    grads = R.rnn_backward(d_out, d_h_n, cache)._asdict()
    for name in PARAMS:
        analytic = grads[GRAD_OF[name]]
        if problem[name] is None:
            assert analytic is None
            continue
        numeric = numeric_grad(problem, name, nonlinearity, d_out, d_h_n)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-7, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_gradients_along_random_directions(nonlinearity):
    """A medium problem: <grad, v> against the directional central difference."""
    T, B, I, H = 25, 6, 7, 9
    problem = make_rnn_problem(T, B, I, H, lengths=[25, 0, 11, 1, 24, 25], seed=5)
    d_out, d_h_n = upstream(T, B, H, seed=6)
    _, _, cache = R.rnn_forward(**problem, nonlinearity=nonlinearity)
    grads = R.rnn_backward(d_out, d_h_n, cache)._asdict()
    rng = np.random.default_rng(7)
    for _ in range(3):
        v = {name: rng.standard_normal(problem[name].shape) for name in PARAMS}
        eps = 1e-5

        def shifted(sign):
            return {**problem, **{n: problem[n] + sign * eps * v[n] for n in PARAMS}}

        numeric = (loss(shifted(1), nonlinearity, d_out, d_h_n)
                   - loss(shifted(-1), nonlinearity, d_out, d_h_n)) / (2 * eps)
        analytic = sum(np.sum(grads[GRAD_OF[n]] * v[n]) for n in PARAMS)
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-8)


def test_one_step_is_the_equation():
    p = make_rnn_problem(1, 2, 3, 4, seed=1)
    out, h_n, _ = R.rnn_forward(**p)
    a = p["x"][0] @ p["W_ih"].T + p["b_ih"] + p["h0"] @ p["W_hh"].T + p["b_hh"]
    np.testing.assert_allclose(out[0], np.tanh(a), rtol=1e-14)
    np.testing.assert_array_equal(h_n, out[0])
    out, _, _ = R.rnn_forward(**p, nonlinearity="relu")
    np.testing.assert_allclose(out[0], np.maximum(a, 0), rtol=1e-14)


def test_lengths_freeze_the_state_and_zero_the_output():
    T, B, I, H = 6, 4, 3, 5
    lengths = [6, 0, 2, 5]
    p = make_rnn_problem(T, B, I, H, lengths=lengths, seed=2)
    out, h_n, _ = R.rnn_forward(**p)
    for b, n in enumerate(lengths):
        # Each sequence alone, cut to its length, gives the same states.
        alone = {**p, "x": p["x"][:max(n, 1), b:b + 1], "h0": p["h0"][b:b + 1], "lengths": None}
        if n == 0:
            np.testing.assert_array_equal(h_n[b], p["h0"][b])
        else:
            o, h, _ = R.rnn_forward(**alone)
            np.testing.assert_allclose(out[:n, b], o[:, 0], rtol=1e-14)
            np.testing.assert_allclose(h_n[b], h[0], rtol=1e-14)
        assert not out[n:, b].any()


def test_padded_steps_pass_no_gradient():
    """d_out on padded rows is ignored; dh for a zero-length sequence is d_h_n itself."""
    T, B, I, H = 5, 2, 3, 4
    p = make_rnn_problem(T, B, I, H, lengths=[0, 3], seed=4)
    d_out, d_h_n = upstream(T, B, H)
    _, _, cache = R.rnn_forward(**p)
    g = R.rnn_backward(d_out, d_h_n, cache)
    np.testing.assert_array_equal(g.dh0[0], d_h_n[0])
    assert not g.dx[:, 0].any() and not g.dx[3:, 1].any()
    d_out2 = d_out.copy()
    d_out2[3:, 1] = 1e6
    g2 = R.rnn_backward(d_out2, d_h_n, cache)
    np.testing.assert_array_equal(g2.dW_hh, g.dW_hh)


def test_inference_mode_saves_nothing_and_agrees():
    p = make_rnn_problem(3, 2, 3, 4, dtype=np.float32)
    out, h_n, cache = R.rnn_forward(**p, training=False)
    out2, h_n2, cache2 = R.rnn_forward(**p)
    assert cache is None and cache2 is not None
    assert out.dtype == h_n.dtype == np.float32
    np.testing.assert_array_equal(out, out2)
    np.testing.assert_array_equal(h_n, h_n2)


def test_none_upstream_gradients_mean_zeros():
    p = make_rnn_problem(3, 2, 3, 4)
    _, _, cache = R.rnn_forward(**p)
    d_out, d_h_n = upstream(3, 2, 4)
    zeros = np.zeros_like(d_out), np.zeros_like(d_h_n)
    for a, b in [((None, d_h_n), (zeros[0], d_h_n)), ((d_out, None), (d_out, zeros[1]))]:
        for ga, gb in zip(R.rnn_backward(*a, cache), R.rnn_backward(*b, cache)):
            np.testing.assert_array_equal(ga, gb)
