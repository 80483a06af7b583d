"""The reference against the definition: central finite differences, the
equations of one step, lengths semantics; for every cell."""
import numpy as np
import pytest
from scipy.special import expit

from fastrnn import reference as R
from fastrnn._spec import CELLS
from fastrnn._testing import backward, forward, random_upstream
from fastrnn._testing import random_problem

# (cell, variant): the Elman cell in both activations, the gated cells, the
# LSTM with peepholes (its extra weight W_ch given), the LSTM with a
# projection (W_hr, h of P = H - 1 columns) and with both, and the GRU with
# the reset before its product (reset_after=False).
VARIANTS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", None), ("lstm", "peephole"),
            ("lstm", "projection"), ("lstm", "peephole-projection"), ("gru", None),
            ("gru", "reset-before")]
VARIANT_IDS = ["rnn-tanh", "rnn-relu", "lstm", "lstm-peephole", "lstm-projection",
               "lstm-peephole-projection", "gru", "gru-reset-before"]


def _kwargs(variant):
    if variant == "reset-before":
        return {"reset_after": False}
    return {"nonlinearity": variant} if variant in ("tanh", "relu") else {}


def _extras(variant):
    """The extra weights a variant gives (random_problem's ``extras``)."""
    return [name for word, name in (("peephole", "W_ch"), ("projection", "W_hr"))
            if word in (variant or "")]


def _P(variant, H):
    """The width of h: H - 1 with a projection (to hold the shapes apart), else H."""
    return H - 1 if "projection" in (variant or "") else H


def loss(cell, problem, nonlinearity, ups):
    """L = <out, d_out> + <h_n, d_h_n> (+ <c_n, d_c_n>), whose gradients the backward computes."""
    outs, _ = forward(cell, problem, training=False, **_kwargs(nonlinearity))
    return float(sum(np.sum(outs[name] * ups["d_" + name]) for name in outs))


def numeric_grad(cell, problem, name, nonlinearity, ups, eps=1e-4):
    """Fourth-order central difference of ``loss`` for every entry of ``problem[name]``."""
    base = problem[name]
    grad = np.zeros_like(base)
    for idx in np.ndindex(base.shape):
        vals = []
        for step in (-2, -1, 1, 2):
            p = dict(problem)
            p[name] = base.copy()
            p[name][idx] += step * eps
            vals.append(loss(cell, p, nonlinearity, ups))
        grad[idx] = (vals[0] - 8 * vals[1] + 8 * vals[2] - vals[3]) / (12 * eps)
    return grad


CASES = [
    dict(lengths=None, bias=(True, True)),
    dict(lengths=[4, 0, 2], bias=(True, True)),
    dict(lengths=[4, 1, 3], bias=(False, False)),
    dict(lengths=None, bias=(True, False)),
    dict(lengths=[2, 4, 0], bias=(False, True)),
]


@pytest.mark.parametrize("cell, nonlinearity", VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("case", CASES, ids=["plain", "lengths-with-0", "no-bias", "b_ih-only",
                                             "b_hh-only"])
def test_gradients_match_finite_differences(cell, nonlinearity, case):
    T, B, I, H = 4, 3, 2, 3
    problem = random_problem(T, B, I, H, cell=cell, lengths=case["lengths"], bias=case["bias"],
                             seed=3, weight_scale=0.8, extras=_extras(nonlinearity),
                             P=_P(nonlinearity, H))
    ups = random_upstream(cell, T, B, H, P=_P(nonlinearity, H))
    _, cache = forward(cell, problem, **_kwargs(nonlinearity))
    grads = backward(cell, ups, cache, R)
    for name in CELLS[cell].inputs:
        analytic = grads.get("d" + name)
        if problem[name] is None:
            assert analytic is None
            continue
        numeric = numeric_grad(cell, problem, name, nonlinearity, ups)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-7, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("cell, nonlinearity", VARIANTS, ids=VARIANT_IDS)
def test_gradients_along_random_directions(cell, nonlinearity):
    """A medium problem: <grad, v> against the directional central difference."""
    T, B, I, H = 25, 6, 7, 9
    problem = random_problem(T, B, I, H, cell=cell, lengths=[25, 0, 11, 1, 24, 25], seed=5,
                             extras=_extras(nonlinearity), P=_P(nonlinearity, H))
    ups = random_upstream(cell, T, B, H, seed=6, P=_P(nonlinearity, H))
    _, cache = forward(cell, problem, **_kwargs(nonlinearity))
    grads = backward(cell, ups, cache, R)
    rng = np.random.default_rng(7)
    names = [name for name in CELLS[cell].inputs if problem[name] is not None]
    for _ in range(3):
        v = {name: rng.standard_normal(problem[name].shape) for name in names}
        eps = 1e-5

        def shifted(sign):
            return {**problem, **{n: problem[n] + sign * eps * v[n] for n in names}}

        numeric = (loss(cell, shifted(1), nonlinearity, ups)
                   - loss(cell, shifted(-1), nonlinearity, ups)) / (2 * eps)
        analytic = sum(np.sum(grads["d" + n] * v[n]) for n in names)
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-8)


def test_one_elman_step_is_the_equation():
    p = random_problem(1, 2, 3, 4, seed=1)
    out, h_n, _ = R.rnn_forward(**p)
    a = p["x"][0] @ p["W_ih"].T + p["b_ih"] + p["h0"] @ p["W_hh"].T + p["b_hh"]
    np.testing.assert_allclose(out[0], np.tanh(a), rtol=1e-14)
    np.testing.assert_array_equal(h_n, out[0])
    out, _, _ = R.rnn_forward(**p, nonlinearity="relu")
    np.testing.assert_allclose(out[0], np.maximum(a, 0), rtol=1e-14)


def test_one_lstm_step_is_the_equation():
    H = 4
    p = random_problem(1, 2, 3, H, cell="lstm", seed=1)
    out, h_n, c_n, _ = R.lstm_forward(**p)
    a = p["x"][0] @ p["W_ih"].T + p["b_ih"] + p["h0"] @ p["W_hh"].T + p["b_hh"]
    i, f, g, o = (a[:, k * H:(k + 1) * H] for k in range(4))
    c = expit(f) * p["c0"] + expit(i) * np.tanh(g)
    np.testing.assert_allclose(c_n, c, rtol=1e-14)
    np.testing.assert_allclose(out[0], expit(o) * np.tanh(c), rtol=1e-14)
    np.testing.assert_array_equal(h_n, out[0])


def test_one_peephole_lstm_step_is_the_equation():
    """ONNX's LSTM with P: i and f see c_{t-1}, o sees c_t."""
    H = 4
    p = random_problem(1, 2, 3, H, cell="lstm", seed=1, extras=["W_ch"])
    out, h_n, c_n, _ = R.lstm_forward(**p)
    a = p["x"][0] @ p["W_ih"].T + p["b_ih"] + p["h0"] @ p["W_hh"].T + p["b_hh"]
    i, f, g, o = (a[:, k * H:(k + 1) * H] for k in range(4))
    p_i, p_f, p_o = p["W_ch"][:H], p["W_ch"][H:2 * H], p["W_ch"][2 * H:]
    c = expit(f + p_f * p["c0"]) * p["c0"] + expit(i + p_i * p["c0"]) * np.tanh(g)
    np.testing.assert_allclose(c_n, c, rtol=1e-14)
    np.testing.assert_allclose(out[0], expit(o + p_o * c) * np.tanh(c), rtol=1e-14)
    # zero peepholes are the plain cell, bit for bit
    plain = R.lstm_forward(**{**p, "W_ch": None})
    zeros = R.lstm_forward(**{**p, "W_ch": np.zeros(3 * H)})
    for a_, b_ in zip(plain[:3], zeros[:3]):
        np.testing.assert_array_equal(a_, b_)


def test_one_gru_step_is_the_equation():
    H = 4
    p = random_problem(1, 2, 3, H, cell="gru", seed=1)
    out, h_n, _ = R.gru_forward(**p)
    ax = p["x"][0] @ p["W_ih"].T + p["b_ih"]
    ah = p["h0"] @ p["W_hh"].T + p["b_hh"]
    r = expit(ax[:, :H] + ah[:, :H])
    z = expit(ax[:, H:2 * H] + ah[:, H:2 * H])
    n = np.tanh(ax[:, 2 * H:] + r * ah[:, 2 * H:])  # b_hn inside the reset product
    np.testing.assert_allclose(out[0], (1 - z) * n + z * p["h0"], rtol=1e-14)
    np.testing.assert_array_equal(h_n, out[0])


def test_one_reset_before_gru_step_is_the_equation():
    """Keras's GRU(reset_after=False), ONNX's linear_before_reset=0: r resets
    h_{t-1} before W_hn, and b_hn adds outside."""
    H = 4
    p = random_problem(1, 2, 3, H, cell="gru", seed=1)
    out, h_n, _ = R.gru_forward(**p, reset_after=False)
    ax = p["x"][0] @ p["W_ih"].T + p["b_ih"]
    ah = p["h0"] @ p["W_hh"].T + p["b_hh"]
    r = expit(ax[:, :H] + ah[:, :H])
    z = expit(ax[:, H:2 * H] + ah[:, H:2 * H])
    n = np.tanh(ax[:, 2 * H:] + (r * p["h0"]) @ p["W_hh"][2 * H:].T + p["b_hh"][2 * H:])
    np.testing.assert_allclose(out[0], (1 - z) * n + z * p["h0"], rtol=1e-14)
    np.testing.assert_array_equal(h_n, out[0])


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_lengths_freeze_the_state_and_zero_the_output(cell):
    T, B, I, H = 6, 4, 3, 5
    lengths = [6, 0, 2, 5]
    p = random_problem(T, B, I, H, cell=cell, lengths=lengths, seed=2)
    outs, _ = forward(cell, p)
    finals = [name for name in outs if name != "out"]
    for b, n in enumerate(lengths):
        if n == 0:
            for final, start in zip(finals, ("h0", "c0")):
                np.testing.assert_array_equal(outs[final][b], p[start][b])
        else:
            # Each sequence alone, cut to its length, gives the same states.
            alone = {k: (v[b:b + 1] if k in ("h0", "c0") else v) for k, v in p.items()}
            alone.update(x=p["x"][:n, b:b + 1], lengths=None)
            o, _ = forward(cell, alone)
            np.testing.assert_allclose(outs["out"][:n, b], o["out"][:, 0], rtol=1e-14)
            for final in finals:
                np.testing.assert_allclose(outs[final][b], o[final][0], rtol=1e-14)
        assert not outs["out"][n:, b].any()


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_padded_steps_pass_no_gradient(cell):
    """d_out on padded rows is ignored; the state gradients of a zero-length
    sequence are the upstream ones themselves."""
    T, B, I, H = 5, 2, 3, 4
    p = random_problem(T, B, I, H, cell=cell, lengths=[0, 3], seed=4)
    ups = random_upstream(cell, T, B, H)
    _, cache = forward(cell, p)
    g = backward(cell, ups, cache, R)
    np.testing.assert_array_equal(g["dh0"][0], ups["d_h_n"][0])
    if cell == "lstm":
        np.testing.assert_array_equal(g["dc0"][0], ups["d_c_n"][0])
    assert not g["dx"][:, 0].any() and not g["dx"][3:, 1].any()
    ups2 = {**ups, "d_out": ups["d_out"].copy()}
    ups2["d_out"][3:, 1] = 1e6
    g2 = backward(cell, ups2, cache, R)
    np.testing.assert_array_equal(g2["dW_hh"], g["dW_hh"])


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_inference_mode_saves_nothing_and_agrees(cell):
    p = random_problem(3, 2, 3, 4, dtype=np.float32, cell=cell)
    outs, cache = forward(cell, p, training=False)
    outs2, cache2 = forward(cell, p)
    assert cache is None and cache2 is not None
    for name in outs:
        assert outs[name].dtype == np.float32
        np.testing.assert_array_equal(outs[name], outs2[name])


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_none_upstream_gradients_mean_zeros(cell):
    p = random_problem(3, 2, 3, 4, cell=cell)
    _, cache = forward(cell, p)
    ups = random_upstream(cell, 3, 2, 4)
    for name in ups:
        with_none = {**ups, name: None}
        with_zeros = {**ups, name: np.zeros_like(ups[name])}
        a, b = backward(cell, with_none, cache, R), backward(cell, with_zeros, cache, R)
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}: {k}")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gates_are_safe_for_large_inputs(cell):
    """Saturated sigmoids and tanh: no overflow warning, no NaN, gradients finite."""
    p = random_problem(5, 3, 4, 6, cell=cell, seed=8, weight_scale=50.0)
    p["x"] *= 1e4
    with np.errstate(all="raise"):
        outs, cache = forward(cell, p)
        grads = backward(cell, random_upstream(cell, 5, 3, 6), cache, R)
    assert all(np.isfinite(v).all() for v in outs.values())
    assert all(np.isfinite(v).all() for v in grads.values() if v is not None)
