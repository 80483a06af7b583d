"""fastrnn.training given bad input: every call raises ValueError or TypeError
naming the argument, and changes nothing it was given (optimisers, their
parameters and state, gradients)."""
import copy

import numpy as np
import pytest

import fastrnn
from fastrnn.training import (SGD, Adagrad, Adam, Linear, clip_grad_norm, clip_grad_value,
                              global_norm, mse, truncated_bptt)


def params():
    return {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float32)}


def good_grads():
    return {"w": np.full((2, 3), 0.5, np.float32), "b": np.full(3, 0.25, np.float32)}


OPTIMISERS = [SGD, lambda p, **kw: SGD(p, momentum=0.9, **kw), Adagrad, Adam]
IDS = ["SGD", "SGD-momentum", "Adagrad", "Adam"]

BAD_GRADS = [
    ({"w": np.ones((2, 3)), "b": np.ones(())}, ValueError, r"grads\['b'\].*shape"),  # a scalar
    ({"w": np.ones((2, 3)), "b": np.ones(1)}, ValueError, r"grads\['b'\].*shape"),
    ({"w": np.ones(3), "b": np.ones(3)}, ValueError, r"grads\['w'\].*shape"),  # a row
    ({"w": np.ones((2, 3)), "b": np.ones(3, complex)}, TypeError, r"grads\['b'\].*real"),
    ({"w": np.ones((2, 3)), "b": np.array(["1", "2", "3"])}, TypeError, r"grads\['b'\].*real"),
    ({"w": np.ones((2, 3)), "x": np.ones(3)}, ValueError, "does not hold: 'x'"),
    ([np.ones((2, 3))], TypeError, "grads must be a dict"),
]


@pytest.mark.parametrize("make", OPTIMISERS, ids=IDS)
@pytest.mark.parametrize("grads, exc, match", BAD_GRADS)
def test_a_bad_gradient_changes_nothing(make, grads, exc, match):
    p = params()
    opt = make(p, lr=0.1)
    opt.step(good_grads())  # some state to keep
    before = copy.deepcopy((p, opt.state, opt.t))
    with pytest.raises(exc, match=match):
        opt.step(grads)
    after = (p, opt.state, opt.t)
    assert after[2] == before[2]
    for name in p:
        assert np.array_equal(after[0][name], before[0][name])
    assert opt.state.keys() == before[1].keys()
    for name, slots in opt.state.items():
        for slot, value in slots.items():
            assert np.array_equal(value, before[1][name][slot])


BAD_STATE = [
    (lambda s, o: {k: v for k, v in s.items() if k != "t"}, ValueError, "no 't'"),
    (lambda s, o: {**s, "t": np.array(-5)}, ValueError, "non-negative integer"),
    (lambda s, o: {**s, "t": np.array(2.5)}, ValueError, "non-negative integer"),
    (lambda s, o: {**s, f"{o._slots[0]}.x": np.zeros(3)}, ValueError, "unknown parameter 'x'"),
    (lambda s, o: {**s, "bogus.w": np.zeros((2, 3))}, ValueError, "keeps"),
    (lambda s, o: {**s, f"{o._slots[0]}.w": np.zeros(7)}, ValueError, "shape"),
    (lambda s, o: [1, 2], TypeError, "state must be a dict"),
]


@pytest.mark.parametrize("make", OPTIMISERS, ids=IDS)
@pytest.mark.parametrize("edit, exc, match", BAD_STATE)
def test_a_bad_state_dict_changes_nothing(make, edit, exc, match):
    p = params()
    opt = make(p, lr=0.1)
    opt.step(good_grads())
    state = opt.state_dict()
    before = copy.deepcopy((opt.state, opt.t))
    with pytest.raises(exc, match=match):
        opt.load_state_dict(edit(state, opt))
    assert opt.t == before[1] and opt.state.keys() == before[0].keys()
    fresh = make(params(), lr=0.1)
    fresh.load_state_dict(state)  # the good state still loads
    assert fresh.t == opt.t


BAD_CONSTRUCTION = [
    (lambda p: Adam(p, betas=(1.0, 0.999)), ValueError, r"betas\[0\]"),
    (lambda p: Adam(p, betas=(0.9, 1.5)), ValueError, r"betas\[1\]"),
    (lambda p: Adam(p, betas=(float("nan"), 0.9)), ValueError, r"betas\[0\]"),
    (lambda p: Adam(p, betas=(0.9,)), ValueError, "betas must be two"),
    (lambda p: Adam(p, eps=-1e-8), ValueError, "eps"),
    (lambda p: Adagrad(p, eps=float("nan")), ValueError, "eps"),
    (lambda p: SGD(p, lr=float("inf")), ValueError, "lr"),
    (lambda p: SGD(p, lr="0.1"), TypeError, "lr"),
    (lambda p: SGD(p, momentum=1.0), ValueError, "momentum"),
    (lambda p: SGD({"w": np.arange(3)}), TypeError, r"params\['w'\].*floating"),
    (lambda p: SGD(list(p.values())), TypeError, "named_parameters"),
    (lambda p: SGD([np.zeros(2), np.zeros(2)]), TypeError, "named_parameters"),
    (lambda p: SGD({}), ValueError, "empty"),
    (lambda p: SGD([("w", p["w"]), ("w", p["b"])]), ValueError, "twice"),
]


@pytest.mark.parametrize("make, exc, match", BAD_CONSTRUCTION)
def test_bad_optimiser_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make(params())


def test_pytorch_style_parameters_say_what_to_pass():
    layer = fastrnn.LSTM(3, 4)
    with pytest.raises(TypeError, match="named_parameters"):
        SGD(layer.parameters())
    SGD(layer.named_parameters())  # the right one


BAD_CLIPPING = [
    (lambda g: clip_grad_value(g, 0.1), {"w": np.ones(2), "b": [1.0, 2.0]}, TypeError,
     r"grads\['b'\] must be a NumPy array"),
    (lambda g: clip_grad_norm(g, 0.1), {"w": np.ones(2), "b": [1.0, 2.0]}, TypeError,
     r"grads\['b'\] must be a NumPy array"),
    (lambda g: clip_grad_value(g, 0.1), {"w": np.ones(2), "b": np.ones(2, int)}, TypeError,
     "floating"),
    (lambda g: clip_grad_value(g, float("nan")), good_grads(), ValueError, "clip_value"),
    (lambda g: clip_grad_norm(g, -1), good_grads(), ValueError, "max_norm"),
    (lambda g: clip_grad_norm(g, 1.0, norm_type=0), good_grads(), ValueError, "norm_type"),
    (lambda g: clip_grad_norm(g, 1.0, norm_type=-2), good_grads(), ValueError, "norm_type"),
    (lambda g: clip_grad_norm(g, 1.0, norm_type=float("nan")), good_grads(), ValueError,
     "norm_type"),
    (lambda g: clip_grad_norm(g, 1.0, norm_type="fro"), good_grads(), TypeError, "norm_type"),
    (lambda g: clip_grad_value(g, 0.1), "grads", TypeError, "grads must be an array, a dict"),
    (lambda g: clip_grad_norm(g, 0.1), np.ones(3, int), TypeError, "grads must be floating"),
]


@pytest.mark.parametrize("call, grads, exc, match", BAD_CLIPPING)
def test_bad_clipping_changes_nothing(call, grads, exc, match):
    before = copy.deepcopy(grads)
    with pytest.raises(exc, match=match):
        call(grads)
    if isinstance(grads, dict):
        for k, v in grads.items():
            assert np.array_equal(v, before[k])


def test_a_read_only_gradient_is_refused_before_any_is_clipped():
    big, frozen = np.full(3, 5.0), np.full(3, 5.0)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match=r"grads\['b'\] is read-only"):
        clip_grad_value({"a": big, "b": frozen}, 1.0)
    assert (big == 5).all()


@pytest.mark.parametrize("norm_type", [1, 2, np.inf, 0.5, 3, 7.5, 400.0])
def test_clip_grad_norm_types_match_torch(norm_type):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    grads = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    tensors = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads.values()]
    for t, g in zip(tensors, grads.values()):
        t.grad = torch.from_numpy(g.copy())
    expected = torch.nn.utils.clip_grad_norm_(tensors, 0.5, norm_type=norm_type)
    norm = clip_grad_norm(grads, 0.5, norm_type=norm_type)
    assert norm == pytest.approx(float(expected), rel=1e-12)
    for t, g in zip(tensors, grads.values()):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-6)
    assert global_norm(grads, norm_type) == pytest.approx(min(norm, 0.5), rel=1e-5)


@pytest.mark.parametrize("p", [0.5, 1, 2, 3, 7.5, np.inf])
def test_global_norm_is_the_p_norm_of_every_element(p):
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal((4, 3)).astype(np.float32), None, rng.standard_normal(6)]
    flat = np.concatenate([grads[0].ravel().astype(np.float64), grads[2]])
    assert global_norm(grads, p) == pytest.approx(np.linalg.norm(flat, ord=p), rel=1e-12)
    # A large norm_type neither overflows (1e30 ** 7.5) nor underflows to zero.
    assert global_norm([flat * 1e30], p) == pytest.approx(1e30 * np.linalg.norm(flat, p), rel=1e-12)
    assert global_norm([flat * 1e-30], p) == pytest.approx(1e-30 * np.linalg.norm(flat, p),
                                                          rel=1e-12)


def test_clipping_takes_a_single_array_as_torch_takes_a_tensor():
    torch = pytest.importorskip("torch")
    g = np.random.default_rng(2).standard_normal((5, 4)) * 3
    t = torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
    t.grad = torch.from_numpy(g.copy())
    expected = torch.nn.utils.clip_grad_norm_(t, 1.0, norm_type=3.0)
    assert clip_grad_norm(g, 1.0, norm_type=3.0) == pytest.approx(float(expected), rel=1e-12)
    np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-6)
    g = np.linspace(-2, 2, 20).reshape(5, 4)
    t.grad = torch.from_numpy(g.copy())
    torch.nn.utils.clip_grad_value_(t, 0.1)
    clip_grad_value(g, 0.1)
    np.testing.assert_array_equal(g, t.grad.numpy())
    frozen = np.ones(3)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="grads is read-only"):
        clip_grad_value(frozen, 0.5)


BAD_BPTT = [
    (dict(layer=None), TypeError, "layer must be"),
    (dict(x=None), TypeError, "x must be floating"),
    (dict(x=np.ones((4, 3))), ValueError, r"x must have shape \(T, B, I\)"),
    (dict(loss_and_grad=None), TypeError, "loss_and_grad must be callable"),
    (dict(on_window=3), TypeError, "on_window"),
]


@pytest.mark.parametrize("change, exc, match", BAD_BPTT)
def test_bad_truncated_bptt_arguments(change, exc, match):
    args = dict(layer=fastrnn.GRU(3, 4), x=np.ones((4, 2, 3), np.float32), k=2,
                loss_and_grad=lambda out, a, b: (0.0, np.zeros_like(out)), on_window=None)
    args.update(change)
    on_window = args.pop("on_window")
    with pytest.raises(exc, match=match):
        truncated_bptt(args["layer"], args["x"], args["k"], args["loss_and_grad"],
                       on_window=on_window)


def test_mse_and_linear_refuse_what_they_would_cast():
    with pytest.raises(TypeError, match="predictions must be floating"):
        mse(np.ones((2, 1, 3), int), np.ones((2, 1, 3)))
    with pytest.raises(TypeError, match="targets must be real"):
        mse(np.ones((2, 1, 3)), np.ones((2, 1, 3), complex))
    head = Linear(3, 2)
    h = np.ones((4, 3), np.float32)
    head(h)
    for dy in (np.ones((4, 2), complex), np.array([["1", "2"]] * 4)):
        with pytest.raises(TypeError, match="dy must be real floating"):
            head.backward(dy)


def test_linear_keeps_its_own_copy_of_h():
    head = Linear(3, 2, dtype=np.float64, seed=0)
    h = np.random.default_rng(1).standard_normal((4, 3))
    expected_dw = np.ones((4, 2)).T @ h
    head(h)
    h[:] = 0  # the caller reuses its buffer before backward
    head.backward(np.ones((4, 2)))
    np.testing.assert_allclose(head.grads["weight"], expected_dw)


@pytest.mark.parametrize("flag", ["False", 0, 1, None])
def test_training_flags_are_booleans(flag):
    x, W = np.ones((2, 1, 3), np.float32), np.ones((4, 3), np.float32)
    with pytest.raises(TypeError, match="training must be True or False"):
        fastrnn.rnn_forward(x, None, W, np.ones((4, 4), np.float32), training=flag)
    with pytest.raises(TypeError, match="mode must be True or False"):
        fastrnn.GRU(3, 4).train(flag)


def test_dtype_none_is_refused():
    with pytest.raises(TypeError, match="dtype must be float32 or float64, got None"):
        fastrnn.LSTM(3, 4, dtype=None)
