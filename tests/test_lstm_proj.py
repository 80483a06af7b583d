"""The LSTM with a projection (PyTorch's ``proj_size``, fastrnn's W_hr (P, H):
h_t = (o * tanh(c_t)) W_hr^T, so h, out, h0 and h_n have P columns and W_hh
is (4H, P)): the reference against torch.nn.LSTM and finite differences,
every backend against the reference at awkward shapes, the input checks,
layers (a stack against the same stack by hand, files, options) and
fastrnn.torch."""
import copy
import json
import warnings

import numpy as np
import pytest

import fastrnn
from fastrnn import _tuning
from fastrnn import reference as R
from fastrnn._testing import as_float64, assert_close, backward, forward
from conftest import backend_or_skip

# torch's own note on its float32 CPU path, not a fastrnn matter
pytestmark = pytest.mark.filterwarnings(
    "ignore:LSTM with projections is not supported with oneDNN:UserWarning")


def problem(T, B, I, H, P, dtype=np.float64, *, lengths=None, bias=(True, True),  # noqa: E741
            peepholes=False, scale=None, seed=0):
    """Keyword arguments for lstm_forward with a projection W_hr (P, H): h0
    (B, P), c0 (B, H), weights uniform(-scale, scale), PyTorch's 1/sqrt(H)
    by default."""
    rng = np.random.default_rng(seed)
    s = 1.0 / np.sqrt(H) if scale is None else scale

    def u(*shape):
        return rng.uniform(-s, s, shape).astype(dtype)

    return dict(x=rng.standard_normal((T, B, I)).astype(dtype),
                h0=(0.5 * rng.standard_normal((B, P))).astype(dtype),
                c0=rng.standard_normal((B, H)).astype(dtype),
                W_ih=u(4 * H, I), W_hh=u(4 * H, P),
                b_ih=u(4 * H) if bias[0] else None, b_hh=u(4 * H) if bias[1] else None,
                W_ch=u(3 * H) if peepholes else None, W_hr=u(P, H), lengths=lengths)


def upstream(T, B, H, P, dtype=np.float64, seed=1):
    """Random d_out (T, B, P), d_h_n (B, P), d_c_n (B, H)."""
    rng = np.random.default_rng(seed)
    return {"d_out": rng.standard_normal((T, B, P)).astype(dtype),
            "d_h_n": rng.standard_normal((B, P)).astype(dtype),
            "d_c_n": rng.standard_normal((B, H)).astype(dtype)}


def loss_of(p, ups):
    """sum(d_out * out) + sum(d_h_n * h_n) + sum(d_c_n * c_n) by the reference:
    its gradients are lstm_backward's with that upstream."""
    out, h_n, c_n, _ = R.lstm_forward(**p, training=False)
    return float((out * ups["d_out"]).sum() + (h_n * ups["d_h_n"]).sum()
                 + (c_n * ups["d_c_n"]).sum())


# --- the reference -------------------------------------------------------------------


@pytest.mark.parametrize("H, P, bias, lengths", [
    (6, 3, True, None), (5, 1, False, [7, 3, 1, 5]), (6, 5, True, [2, 7, 7, 4]),
])
def test_the_reference_matches_torch(H, P, bias, lengths):
    """Outputs, final states and every gradient (dW_hr included) of
    torch.nn.LSTM(proj_size=P) with the same weights, float64; lengths
    through pack_padded_sequence."""
    torch = pytest.importorskip("torch")
    T, B, I = 7, 4, 3  # noqa: E741
    torch.manual_seed(0)
    module = torch.nn.LSTM(I, H, bias=bias, proj_size=P).double()
    w = {name: t.detach().numpy().copy() for name, t in module.named_parameters()}
    p = problem(T, B, I, H, P, lengths=lengths, seed=2)
    p.update(W_ih=w["weight_ih_l0"], W_hh=w["weight_hh_l0"], W_hr=w["weight_hr_l0"],
             b_ih=w.get("bias_ih_l0"), b_hh=w.get("bias_hh_l0"))
    ups = upstream(T, B, H, P, seed=3)
    tx, th0, tc0 = (torch.tensor(p[k], requires_grad=True) for k in ("x", "h0", "c0"))
    inp = tx if lengths is None else torch.nn.utils.rnn.pack_padded_sequence(
        tx, torch.tensor(lengths), enforce_sorted=False)
    result, (th_n, tc_n) = module(inp, (th0[None], tc0[None]))
    if lengths is not None:
        result, _ = torch.nn.utils.rnn.pad_packed_sequence(result, total_length=T)
    want = {"out": result, "h_n": th_n[0], "c_n": tc_n[0]}
    loss = sum((v * torch.tensor(ups["d_" + k])).sum() for k, v in want.items())
    loss.backward()
    want_grads = {"dx": tx.grad, "dh0": th0.grad, "dc0": tc0.grad,
                  **{"d" + {"weight_ih_l0": "W_ih", "weight_hh_l0": "W_hh",
                            "weight_hr_l0": "W_hr", "bias_ih_l0": "b_ih",
                            "bias_hh_l0": "b_hh"}[n]: t.grad
                     for n, t in module.named_parameters()}}
    outs, cache = forward("lstm", p)
    grads = backward("lstm", ups, cache, R)
    assert outs["out"].shape == (T, B, P) and outs["h_n"].shape == (B, P)
    for name, value in want.items():
        np.testing.assert_allclose(outs[name], value.detach().numpy(), rtol=1e-12, atol=1e-13,
                                   err_msg=name)
    assert set(grads) == {*want_grads, *(() if bias else ("db_ih", "db_hh"))}
    for name, g in grads.items():
        if name not in want_grads:
            assert g is None, name
            continue
        np.testing.assert_allclose(g, want_grads[name].numpy(), rtol=1e-11, atol=1e-13,
                                   err_msg=name)


@pytest.mark.parametrize("peepholes", [False, True], ids=["plain", "peepholes"])
@pytest.mark.parametrize("H, P", [(4, 3), (3, 5)], ids=["P<H", "P>H"])
def test_the_references_gradients_are_the_losss_derivatives(H, P, peepholes):
    """Central differences of the loss in every entry of W_hr, h0, c0 and
    W_hh (P columns), with a sequence of length 0 (its h_n, c_n are h0, c0)."""
    T, B, I = 5, 3, 2  # noqa: E741
    p = problem(T, B, I, H, P, lengths=[5, 0, 2], peepholes=peepholes, scale=0.6, seed=5)
    ups = upstream(T, B, H, P, seed=6)
    _, _, _, cache = R.lstm_forward(**p)
    grads = R.lstm_backward(ups["d_out"], ups["d_h_n"], ups["d_c_n"], cache)
    assert (grads.dW_ch is None) == (not peepholes)
    eps = 1e-6
    for name in ("W_hr", "h0", "c0", "W_hh"):
        value = p[name]
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            saved = value[index]
            losses = []
            for step in (eps, -eps):
                value[index] = saved + step
                losses.append(loss_of(p, ups))
            value[index] = saved
            numeric[index] = (losses[0] - losses[1]) / (2 * eps)
        analytic = getattr(grads, "d" + name)
        assert analytic.shape == value.shape, name
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=name)
    # the row of length 0: its final states are its initial ones, untouched
    np.testing.assert_array_equal(grads.dh0[1], ups["d_h_n"][1])
    np.testing.assert_array_equal(grads.dc0[1], ups["d_c_n"][1])


# --- every backend against the reference ------------------------------------------------

SHAPES = [  # T, B, I, H, P, lengths, (b_ih, b_hh), peepholes
    (6, 1, 3, 1, 1, None, (True, True), False),                # one unit, one column
    (9, 3, 4, 7, 1, [9, 0, 4], (False, False), True),          # P = 1, no biases
    (9, 3, 4, 7, 33, [0, 9, 2], (True, False), True),          # P > H
    (8, 3, 5, 33, 33, [8, 0, 3], (True, True), False),         # P = H
    (40, 17, 5, 33, 7, list(range(0, 34, 2)), (True, True), True),  # the packed path
    (12, 3, 6, 257, 33, [12, 1, 7], (False, True), True),      # a wide one
    (4, 3, 4, 257, 257, [4, 0, 2], (True, True), False),         # P = H, wide
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("T, B, I, H, P, lengths, bias, peepholes", SHAPES)
def test_every_backend_matches_the_reference(fast_backend, kernel_path, T, B, I, H, P,  # noqa
                                             lengths, bias, peepholes, dtype):
    """Forward and every gradient against the float64 reference, and
    inference (training=False) giving the training forward's outputs."""
    # PyTorch's scale 1/sqrt(H) for the wide ones: larger weights make them
    # chaotic, where float32 rounding alone grows past the tolerance.
    scale = 0.7 if max(H, P) <= 33 else None
    p = problem(T, B, I, H, P, dtype, lengths=lengths, bias=bias, peepholes=peepholes,
                scale=scale, seed=4)
    ups = upstream(T, B, H, P, dtype)
    want, cache = forward("lstm", as_float64(p))
    want_grads = backward("lstm", as_float64(ups), cache, R)
    outs, cache = forward("lstm", p, fast_backend)
    grads = backward("lstm", ups, cache)
    inference, _ = forward("lstm", p, fast_backend, training=False)
    assert want["out"].shape == (T, B, P) and want_grads["dW_hr"].shape == (P, H)
    assert set(grads) == set(want_grads) and grads["dW_hr"] is not None
    for name in want:
        assert_close(outs[name], want[name], dtype, name)
        np.testing.assert_array_equal(inference[name], outs[name], err_msg=name)
    for name in want_grads:
        assert_close(grads[name], want_grads[name], dtype, name)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("H, P", [(7, 33), (33, 7)], ids=["P>H", "P<H"])
def test_each_instruction_set_level_matches_the_reference(level, H, P, dtype):
    p = problem(9, 3, 5, H, P, dtype, lengths=[9, 0, 4], peepholes=True, scale=0.7, seed=H)
    ups = upstream(9, 3, H, P, dtype)
    want, cache = forward("lstm", as_float64(p))
    want_grads = backward("lstm", as_float64(ups), cache, R)
    assert fastrnn.get_isa_level() == level
    outs, cache = forward("lstm", p, "cython")
    grads = backward("lstm", ups, cache)
    inference, _ = forward("lstm", p, "cython", training=False)
    for name in want:
        assert_close(outs[name], want[name], dtype, name)
        assert_close(inference[name], want[name], dtype, name)
    for name in want_grads:
        assert_close(grads[name], want_grads[name], dtype, name)


@pytest.mark.parametrize("H, P", [(6, 2), (4, 9)], ids=["P<H", "P>H"])
def test_chunks_of_steps_give_the_same_results(monkeypatch, H, P):
    """The Cython kernels keep a chunk of steps (inference's saved values, the
    backward's da and its projection's buffers): with chunks of one and three
    steps the results are the whole sequence's."""
    backend_or_skip("cython")
    p = problem(11, 4, 3, H, P, lengths=[11, 0, 6, 10], peepholes=True, scale=0.7, seed=5)
    ups = upstream(11, 4, H, P)
    whole, cache = forward("lstm", p, "cython")
    whole_grads = backward("lstm", ups, cache)
    for steps in (1, 3):
        monkeypatch.setattr(_tuning, "kept_steps",
                            lambda backend, training, T, B: T if training else steps)
        monkeypatch.setattr(_tuning, "workspace_steps", lambda backend, T, B: steps)
        inference, _ = forward("lstm", p, "cython", training=False)
        _, cache = forward("lstm", p, "cython")
        grads = backward("lstm", ups, cache)
        for name in whole:
            np.testing.assert_allclose(inference[name], whole[name], rtol=1e-13, atol=1e-15,
                                       err_msg=name)
        assert set(grads) == set(whole_grads)
        for name in whole_grads:
            np.testing.assert_allclose(grads[name], whole_grads[name], rtol=1e-12, atol=1e-14,
                                       err_msg=name)


def test_an_identity_projection_is_the_plain_lstm(backend):
    """W_hr = I (P = H): the plain LSTM's outputs and gradients, and dW_hr
    None only without W_hr."""
    p = problem(10, 4, 3, 6, 6, lengths=[10, 3, 0, 7], peepholes=True, seed=1)
    ups = upstream(10, 4, 6, 6)
    plain, c1 = forward("lstm", {**p, "W_hr": None}, backend)
    ident, c2 = forward("lstm", {**p, "W_hr": np.eye(6)}, backend)
    g1, g2 = backward("lstm", ups, c1), backward("lstm", ups, c2)
    for name in plain:
        np.testing.assert_allclose(ident[name], plain[name], rtol=1e-13, atol=1e-15,
                                   err_msg=name)
    assert "dW_hr" not in g1 and g2["dW_hr"].shape == (6, 6)
    for name in g1:
        np.testing.assert_allclose(g2[name], g1[name], rtol=1e-12, atol=1e-14, err_msg=name)
    _, _, _, cache = fastrnn.lstm_forward(**{**p, "W_hr": None}, backend=backend)
    assert fastrnn.lstm_backward(None, None, None, cache).dW_hr is None


# --- checks ------------------------------------------------------------------------------

T0, B0, I0, H0, P0 = 5, 3, 4, 6, 2


@pytest.mark.parametrize("change, exc, words", [
    ({"W_hr": np.zeros((P0, H0 + 1))}, ValueError, ["W_hr", "(P, H)", "(2, 6)", "(2, 7)"]),
    ({"W_hr": np.zeros(P0 * H0)}, ValueError, ["W_hr", "(P, H)", "(12,)"]),
    ({"W_hr": np.zeros((P0, H0), np.float32)}, TypeError, ["W_hr", "float32", "float64"]),
    ({"W_hr": "abc"}, TypeError, ["W_hr"]),
    ({"h0": np.zeros((B0, H0))}, ValueError, ["h0", "(B, P)", "(3, 2)", "(3, 6)"]),
    ({"c0": np.zeros((B0, P0))}, ValueError, ["c0", "(B, H)", "(3, 6)", "(3, 2)"]),
    ({"W_hr": None}, ValueError, ["W_hh", "(24, 2)"]),  # (4H, P) needs W_hr when P != H
    ({"W_hh": np.zeros((4 * H0 + 1, P0))}, ValueError, ["W_hh", "(25, 2)"]),
    ({"W_ch": np.zeros(3 * P0)}, ValueError, ["W_ch", "(3*H,)", "(18,)"]),
])
def test_bad_arguments_are_refused_by_name(change, exc, words):
    p = problem(T0, B0, I0, H0, P0)
    for run in (fastrnn.lstm_forward, R.lstm_forward):
        with pytest.raises(exc) as info:
            run(**{**p, **change})
        for word in words:
            assert word in str(info.value), (run.__module__, str(info.value))


@pytest.mark.parametrize("name, shape, spelled", [
    ("d_out", (T0, B0, H0), "(T, B, P)"), ("d_h_n", (B0, H0), "(B, P)"),
    ("d_c_n", (B0, P0), "(B, H)"),
])
def test_bad_upstream_gradients_are_refused_by_name(name, shape, spelled):
    p = problem(T0, B0, I0, H0, P0)
    for module, kw in ((fastrnn, {"backend": "numpy"}), (R, {})):
        _, _, _, cache = module.lstm_forward(**p, **kw)
        ups = {"d_out": None, "d_h_n": None, "d_c_n": None, name: np.zeros(shape)}
        with pytest.raises(ValueError) as info:
            module.lstm_backward(ups["d_out"], ups["d_h_n"], ups["d_c_n"], cache)
        assert name in str(info.value) and spelled in str(info.value), str(info.value)


def test_the_callers_arrays_are_not_changed(backend):
    """Nor read after the forward: W_hr changed then leaves the backward as it was."""
    p = problem(6, 3, 4, 5, 3, lengths=[6, 2, 0], peepholes=True, seed=3)
    ups = upstream(6, 3, 5, 3)
    before = {k: v.copy() for k, v in {**p, **ups}.items() if isinstance(v, np.ndarray)}
    outs, cache = forward("lstm", p, backend)
    expected = backward("lstm", ups, cache)
    for k, v in before.items():
        np.testing.assert_array_equal({**p, **ups}[k], v, err_msg=k)
    _, cache = forward("lstm", p, backend)
    p["W_hr"] += 1.0
    got = backward("lstm", ups, cache)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_bfloat16_compute_is_refused_by_name():
    p = problem(3, 2, 3, 4, 2, np.float32)
    for run in (fastrnn.lstm_forward, R.lstm_forward):
        with pytest.raises(ValueError, match="bfloat16.*projection"):
            run(**p, compute_dtype="bfloat16")
    with pytest.raises(ValueError, match="bfloat16.*proj"):
        fastrnn.LSTM(3, 4, proj_size=2, compute_dtype="bfloat16")
    layer = fastrnn.LSTM(3, 4, proj_size=2)
    with pytest.raises(ValueError, match="bfloat16.*proj"):
        layer.compute_dtype = "bfloat16"
    assert layer.compute_dtype is None


# --- layers ---------------------------------------------------------------------------------


def _reverse(a, lengths):
    """Each sequence's first lengths[b] steps reversed, its padding left in place."""
    a = a.copy()
    for b, n in enumerate(lengths):
        a[:n, b] = a[:n, b][::-1].copy()
    return a


def _stack_by_hand(params, x, h0, c0, lengths, masks, ups, L, P):
    """A bidirectional stack of L layers from reference calls: the reverse
    direction reads each sequence backwards within its length; dropout's
    masks between layers.  Returns (output, h_n, c_n, dx, dh0, dc0, grads)."""
    sfx = ("", "_reverse")
    inp, caches, h_n, c_n = x, [], [], []
    for layer in range(L):
        outs = []
        for d in range(2):
            i = 2 * layer + d

            def w(kind):
                return params.get(f"{kind}_l{layer}{sfx[d]}")

            out, h, c, cache = R.lstm_forward(
                inp if d == 0 else _reverse(inp, lengths), h0[i], c0[i], w("weight_ih"),
                w("weight_hh"), w("bias_ih"), w("bias_hh"), W_ch=w("weight_ch"),
                W_hr=w("weight_hr"), lengths=lengths)
            outs.append(out if d == 0 else _reverse(out, lengths))
            caches.append(cache)
            h_n.append(h)
            c_n.append(c)
        inp = np.concatenate(outs, axis=2)
        if layer < L - 1:
            inp = inp * masks[layer]
    output = inp
    grads, dh0, dc0 = {}, [None] * 2 * L, [None] * 2 * L
    d_inp = ups["d_output"]
    for layer in reversed(range(L)):
        dx = 0
        for d in range(2):
            i = 2 * layer + d
            d_out = d_inp[:, :, d * P:(d + 1) * P]
            g = R.lstm_backward(d_out if d == 0 else _reverse(d_out, lengths),
                                ups["d_h_n"][i], ups["d_c_n"][i], caches[i])
            dx = dx + (g.dx if d == 0 else _reverse(g.dx, lengths))
            dh0[i], dc0[i] = g.dh0, g.dc0
            for kind, field in (("weight_ih", "dW_ih"), ("weight_hh", "dW_hh"),
                                ("bias_ih", "db_ih"), ("bias_hh", "db_hh"),
                                ("weight_ch", "dW_ch"), ("weight_hr", "dW_hr")):
                if f"{kind}_l{layer}{sfx[d]}" in params:
                    grads[f"{kind}_l{layer}{sfx[d]}"] = getattr(g, field)
        d_inp = dx * masks[layer - 1] if layer > 0 else dx
    return output, np.stack(h_n), np.stack(c_n), d_inp, np.stack(dh0), np.stack(dc0), grads


@pytest.mark.parametrize("peepholes", [False, True], ids=["plain", "peepholes"])
def test_a_stacked_bidirectional_layer_matches_the_stack_by_hand(backend, peepholes):
    """Two bidirectional layers with P = 2 < H = 5 (the second reads 2*P
    features), lengths with a 0, dropout and hx: outputs, states and every
    gradient as the same stack of reference calls."""
    T, B, I, H, P, L = 8, 4, 3, 5, 2, 2  # noqa: E741
    layer = fastrnn.LSTM(I, H, num_layers=L, bidirectional=True, dropout=0.3, proj_size=P,
                         peepholes=peepholes, seed=7, dtype=np.float64, backend=backend)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I))
    h0, c0 = rng.standard_normal((2 * L, B, P)), rng.standard_normal((2 * L, B, H))
    lengths = [8, 0, 5, 3]
    ups = {"d_output": rng.standard_normal((T, B, 2 * P)),
           "d_h_n": rng.standard_normal((2 * L, B, P)),
           "d_c_n": rng.standard_normal((2 * L, B, H))}
    out, (h_n, c_n) = layer(x, (h0, c0), lengths=lengths)
    masks = [m.copy() for m in layer._tape["masks"]]
    assert len(masks) == 1 and masks[0].shape == (T, B, 2 * P) and (masks[0] == 0).any()
    dx, (dh0, dc0) = layer.backward(ups["d_output"], ups["d_h_n"], ups["d_c_n"])
    *want, want_grads = _stack_by_hand(layer.state_dict(), x, h0, c0, lengths, masks, ups, L, P)
    got = (out, h_n, c_n, dx, dh0, dc0)
    names = ("output", "h_n", "c_n", "dx", "dh0", "dc0")
    shapes = [(T, B, 2 * P), (2 * L, B, P), (2 * L, B, H), (T, B, I), (2 * L, B, P),
              (2 * L, B, H)]
    for name, a, b, shape in zip(names, got, want, shapes):
        assert a.shape == shape, name
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=name)
    assert list(layer.grads) == list(layer.state_dict())
    assert set(want_grads) == set(layer.grads)
    for name, g in want_grads.items():
        assert layer.grads[name].shape == layer.state_dict()[name].shape, name
        np.testing.assert_allclose(layer.grads[name], g, rtol=1e-10, atol=1e-12, err_msg=name)


def test_the_layers_gradients_are_the_losss_derivatives(fast_backend):
    """Central differences of the layer's loss (sin of the output, and h_n
    and c_n weighted) in a few entries of W_hr, W_hh's P columns, the second
    layer's reverse-direction input columns, and h0 and c0."""
    T, B, I, H, P = 7, 2, 3, 5, 3  # noqa: E741
    layer = fastrnn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=P, seed=7,
                         dtype=np.float64, backend=fast_backend)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, I))
    hx = (rng.standard_normal((4, B, P)), rng.standard_normal((4, B, H)))
    a, b = rng.standard_normal((4, B, P)), rng.standard_normal((4, B, H))
    lengths = [7, 4]

    def loss():
        out, (h_n, c_n) = layer(x, hx, lengths=lengths)
        return np.sin(out).sum() + (a * h_n).sum() + (b * c_n).sum()

    out, _ = layer(x, hx, lengths=lengths)
    _, (dh0, dc0) = layer.backward(np.cos(out), a, b)
    checks = [(layer._params[n], layer.grads[n], index) for n, index in [
        ("weight_hr_l0", (1, 4)), ("weight_hr_l0_reverse", (2, 0)), ("weight_hr_l1", (0, 2)),
        ("weight_hr_l1_reverse", (2, 3)), ("weight_hh_l0", (17, 2)),
        ("weight_hh_l1_reverse", (3, 1)), ("weight_ih_l1", (12, 4)),
        ("weight_ih_l1_reverse", (6, 5))]]
    checks += [(hx[0], dh0, (1, 0, 2)), (hx[0], dh0, (3, 1, 0)), (hx[1], dc0, (2, 1, 4)),
               (hx[1], dc0, (0, 0, 1))]
    eps = 1e-6
    for w, grad, index in checks:
        saved = w[index]
        losses = []
        for step in (eps, -eps):
            w[index] = saved + step
            losses.append(loss())
        w[index] = saved
        numeric = (losses[0] - losses[1]) / (2 * eps)
        assert grad[index] == pytest.approx(numeric, rel=1e-6, abs=1e-9), (w.shape, index)


def test_the_parameters_have_pytorchs_names_shapes_and_scale():
    layer = fastrnn.LSTM(3, 6, num_layers=2, bidirectional=True, proj_size=2, seed=0)
    expected = {}
    for k in range(2):
        for sfx in ("", "_reverse"):
            expected.update({f"weight_ih_l{k}{sfx}": (24, 3 if k == 0 else 4),
                             f"weight_hh_l{k}{sfx}": (24, 2), f"bias_ih_l{k}{sfx}": (24,),
                             f"bias_hh_l{k}{sfx}": (24,), f"weight_hr_l{k}{sfx}": (2, 6)})
    state = layer.state_dict()
    assert [(n, a.shape) for n, a in state.items()] == list(expected.items())
    assert [n for n, _ in layer.named_parameters()] == list(expected)
    bound = np.float32(1 / np.sqrt(6))  # PyTorch's uniform(-1/sqrt(H), 1/sqrt(H))
    for name, a in state.items():
        assert a.dtype == np.float32 and np.abs(a).max() <= bound, name
        assert a.std() > bound / 4, name  # not zeros nor a constant
    both = fastrnn.LSTM(3, 6, proj_size=2, peepholes=True)
    assert {n: a.shape for n, a in both.state_dict().items()} == {
        "weight_ih_l0": (24, 3), "weight_hh_l0": (24, 2), "bias_ih_l0": (24,),
        "bias_hh_l0": (24,), "weight_ch_l0": (18,), "weight_hr_l0": (2, 6)}


def test_the_layers_shapes_and_its_checks():
    """Output (T, B, D*P), h_n (L*D, B, P), c_n (L*D, B, H) batched, batch
    first and unbatched; states and upstream gradients of H columns where P
    are due (and the reverse) are refused by name."""
    L, D, T, B, I, H, P = 2, 2, 5, 3, 4, 6, 2  # noqa: E741
    kw = dict(num_layers=L, bidirectional=True, proj_size=P, dtype=np.float64, seed=1,
              backend="numpy")
    layer = fastrnn.LSTM(I, H, **kw)
    x = np.ones((T, B, I))
    out, (h_n, c_n) = layer(x)
    assert (out.shape, h_n.shape, c_n.shape) == ((T, B, D * P), (L * D, B, P), (L * D, B, H))
    dx, (dh0, dc0) = layer.backward(np.ones_like(out), np.ones_like(h_n), np.ones_like(c_n))
    assert (dx.shape, dh0.shape, dc0.shape) == (x.shape, h_n.shape, c_n.shape)
    first = fastrnn.LSTM(I, H, batch_first=True, **kw)
    out_bf, _ = first(x.transpose(1, 0, 2))
    assert out_bf.shape == (B, T, D * P)
    single, (h1, c1) = layer(x[:, 0])
    assert (single.shape, h1.shape, c1.shape) == ((T, D * P), (L * D, P), (L * D, H))
    np.testing.assert_allclose(single, out[:, 0], rtol=1e-13)
    h0, c0 = np.zeros((L * D, B, P)), np.zeros((L * D, B, H))
    for hx, name in [((np.zeros((L * D, B, H)), c0), "h0"), ((h0, np.zeros((L * D, B, P))), "c0")]:
        with pytest.raises(ValueError, match=name):
            layer(x, hx)
    out, (h_n, c_n) = layer(x, (h0, c0))
    for args, name in [((np.zeros((T, B, D * H)), None, None), "d_output"),
                       ((out, np.zeros((L * D, B, H)), None), "d_h_n"),
                       ((out, None, np.zeros((L * D, B, P))), "d_c_n")]:
        with pytest.raises(ValueError, match=name):
            layer.backward(*args)


@pytest.mark.parametrize("value, exc", [
    (-1, ValueError), (6, ValueError), (7, ValueError), (2.0, TypeError), ("2", TypeError),
    (None, TypeError),
])
def test_the_option_is_checked(value, exc):
    """PyTorch's rules: 0 <= proj_size < hidden_size, an integer; the
    message names the argument (not Python's unexpected keyword)."""
    with pytest.raises(exc) as info:
        fastrnn.LSTM(3, 6, proj_size=value)
    message = str(info.value)
    assert "proj_size" in message and "keyword" not in message, message
    if isinstance(value, int) and value >= 6:
        assert "hidden_size" in message, message


def test_the_option_is_fixed_and_only_the_layer_has_it():
    layer = fastrnn.LSTM(3, 5, proj_size=np.int64(2))
    assert layer.proj_size == 2 and type(layer.proj_size) is int
    with pytest.raises(AttributeError, match="proj_size is fixed"):
        layer.proj_size = 0
    assert layer.proj_size == 2
    assert "proj_size=2" in repr(layer) and "proj_size" not in repr(fastrnn.LSTM(3, 5))
    assert fastrnn.LSTM(3, 5).proj_size == 0 and fastrnn.LSTM(3, 5, proj_size=0).proj_size == 0
    with pytest.raises(TypeError, match="proj_size"):
        fastrnn.LSTMCell(3, 4, proj_size=2)  # torch.nn.LSTMCell has none either


def test_files_keep_the_projection(tmp_path):
    layer = fastrnn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, seed=3)
    layer.save(tmp_path / "p.npz")
    loaded = fastrnn.LSTM.load(tmp_path / "p.npz")
    assert loaded.proj_size == 2 and repr(loaded) == repr(layer)
    x = np.ones((4, 2, 3), np.float32)
    out, (h_n, c_n) = layer(x)
    got, (h2, c2) = loaded(x)
    assert out.shape == (4, 2, 4)
    for a, b in ((got, out), (h2, h_n), (c2, c_n)):
        np.testing.assert_array_equal(a, b)
    # a file saved before the projection existed (no such key) is a plain LSTM
    fastrnn.LSTM(3, 5, seed=3).save(tmp_path / "old.npz")
    with np.load(tmp_path / "old.npz") as f:
        entries = dict(f)
    config = json.loads(str(entries["__config__"]))
    del config["proj_size"]
    entries["__config__"] = np.array(json.dumps(config))
    np.savez(tmp_path / "old.npz", **entries)
    assert fastrnn.LSTM.load(tmp_path / "old.npz").proj_size == 0


def test_a_state_dict_of_the_other_kind_is_refused():
    layer = fastrnn.LSTM(3, 5, proj_size=2)
    plain = fastrnn.LSTM(3, 5)
    with pytest.raises(ValueError, match=r"missing \['weight_hr_l0'\]"):
        layer.load_state_dict(plain.state_dict())
    with pytest.raises(ValueError, match=r"unexpected \['weight_hr_l0'\]"):
        plain.load_state_dict(layer.state_dict())
    with pytest.raises(ValueError, match=r"weight_hr_l0.*\(2, 5\)"):
        layer.load_state_dict({**layer.state_dict(), "weight_hr_l0": np.zeros((3, 5))})


# --- PyTorch ---------------------------------------------------------------------------------

TI, TH, TP, TT, TB = 5, 6, 3, 7, 4
TLENGTHS = [7, 3, 1, 5]  # unsorted, one of length 1 (torch refuses 0)


def _torch_run(torch, module, x, hx, lengths, ups):
    """torch's output (padded), final states, and the gradients of x, hx and
    every parameter of sum(out * U) + sum(h_n * A) + sum(c_n * C)."""
    inp = x if lengths is None else torch.nn.utils.rnn.pack_padded_sequence(
        x, torch.tensor(lengths), batch_first=module.batch_first, enforce_sorted=False)
    out, (h_n, c_n) = module(inp, hx)
    if lengths is not None:
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=module.batch_first,
                                                        total_length=x.shape[
                                                            1 if module.batch_first else 0])
    loss = sum((v * u).sum() for v, u in zip((out, h_n, c_n), ups))
    grads = torch.autograd.grad(loss, [x, *hx, *module.parameters()])
    return [out, h_n, c_n], list(grads)


def _torch_problem(torch, L, D, dtype, batch_first=False, P=TP):
    g = torch.Generator().manual_seed(1)

    def randn(*shape, grad=True):
        return torch.randn(shape, generator=g, dtype=dtype, requires_grad=grad)

    x = randn(*((TB, TT, TI) if batch_first else (TT, TB, TI)))
    hx = (randn(L * D, TB, P), randn(L * D, TB, TH))
    ups = (randn(*x.shape[:2], D * P, grad=False), randn(L * D, TB, P, grad=False),
           randn(L * D, TB, TH, grad=False))
    return x, hx, ups


def test_a_torch_state_dict_gives_torchs_results_and_goes_back(backend):
    """torch.nn.LSTM(proj_size, 2 layers, bidirectional) weights loaded into
    fastrnn.LSTM: torch's outputs, states and every gradient (float64, packed
    lengths); and a fastrnn layer's weights loaded into torch give its outputs."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    kw = dict(num_layers=2, bidirectional=True, proj_size=TP)
    ref = torch.nn.LSTM(TI, TH, **kw).double()
    layer = fastrnn.LSTM(TI, TH, **kw, dtype=np.float64, backend=backend)
    layer.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    assert list(layer.state_dict()) == list(ref.state_dict())
    x, hx, ups = _torch_problem(torch, 2, 2, torch.float64)
    want, want_grads = _torch_run(torch, ref, x, hx, TLENGTHS, ups)
    n = lambda t: t.detach().numpy()  # noqa: E731
    out, (h_n, c_n) = layer(n(x), (n(hx[0]), n(hx[1])), lengths=TLENGTHS)
    dx, (dh0, dc0) = layer.backward(*map(n, ups))
    got_grads = [dx, dh0, dc0, *(layer.grads[name] for name, _ in ref.named_parameters())]
    for a, b in zip([out, h_n, c_n, *got_grads], want + want_grads):
        assert a.shape == tuple(b.shape)
        np.testing.assert_allclose(a, n(b), rtol=1e-10, atol=1e-12)
    # fastrnn's own weights (another seed) into torch
    mine = fastrnn.LSTM(TI, TH, **kw, dtype=np.float64, seed=5, backend=backend)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in mine.state_dict().items()})
    theirs, _ = _torch_run(torch, ref, x, hx, None, ups)
    out, (h_n, c_n) = mine(n(x), (n(hx[0]), n(hx[1])))
    for a, b in zip((out, h_n, c_n), theirs):
        np.testing.assert_allclose(a, n(b), rtol=1e-10, atol=1e-12)


TORCH_CONFIGS = {
    "1-layer": {},
    "2-layer-bidirectional": dict(num_layers=2, bidirectional=True),
    "batch-first-no-bias": dict(batch_first=True, bias=False, num_layers=2),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("packed", [False, True], ids=["tensor", "packed"])
@pytest.mark.parametrize("config", TORCH_CONFIGS)
def test_the_torch_module_matches_torch(config, packed, dtype):
    torch = pytest.importorskip("torch")
    ft = pytest.importorskip("fastrnn.torch")
    kw = {**TORCH_CONFIGS[config], "proj_size": TP}
    dtype = getattr(torch, dtype)
    torch.manual_seed(0)
    ref = torch.nn.LSTM(TI, TH, **kw).to(dtype)
    fast = ft.LSTM(TI, TH, **kw).to(dtype)
    fast.load_state_dict(ref.state_dict())
    L, D = kw.get("num_layers", 1), 2 if kw.get("bidirectional") else 1
    x, hx, ups = _torch_problem(torch, L, D, dtype, kw.get("batch_first", False))
    lengths = TLENGTHS if packed else None
    want, want_grads = _torch_run(torch, ref, x, hx, lengths, ups)
    got, got_grads = _torch_run(torch, fast, x, hx, lengths, ups)
    assert len(got_grads) == len(want_grads)
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-11)
    for a, b in zip(got + got_grads, want + want_grads):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(a, b, **tol)


def test_convert_swaps_a_projected_lstm_without_a_warning():
    torch = pytest.importorskip("torch")
    ft = pytest.importorskip("fastrnn.torch")
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({
        "rnn": torch.nn.LSTM(TI, TH, num_layers=2, bidirectional=True, proj_size=TP),
        "head": torch.nn.Linear(2 * TP, 2)}).double()
    reference = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ft.convert(model) is model
    assert type(model["rnn"]) is ft.LSTM and model["rnn"].proj_size == TP
    x = torch.randn(TT, TB, TI, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    results = []
    for m in (reference, model):
        out, (h_n, c_n) = m["rnn"](x)
        loss = m["head"](out).square().sum() + h_n.sum() + c_n.square().sum()
        results.append([loss, *torch.autograd.grad(loss, list(m.parameters()))])
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-11)
