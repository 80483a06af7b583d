"""Every backend's forward and backward against the float64 reference."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastrnn
from fastrnn import reference as R
from _helpers import as_float64, assert_close, make_rnn_problem, upstream


def check_against_reference(backend, problem, nonlinearity, dtype, d_out, d_h_n):
    out, h_n, cache = fastrnn.rnn_forward(**problem, nonlinearity=nonlinearity, backend=backend)
    ref = as_float64(problem)
    r_out, r_h_n, r_cache = R.rnn_forward(**ref, nonlinearity=nonlinearity)
    assert_close(out, r_out, dtype, "out")
    assert_close(h_n, r_h_n, dtype, "h_n")
    grads = fastrnn.rnn_backward(d_out, d_h_n, cache)
    r_grads = R.rnn_backward(None if d_out is None else d_out.astype(np.float64),
                             None if d_h_n is None else d_h_n.astype(np.float64), r_cache)
    for name, g, r in zip(grads._fields, grads, r_grads):
        assert_close(g, r, dtype, name)
    inf_out, inf_h_n, inf_cache = fastrnn.rnn_forward(
        **problem, nonlinearity=nonlinearity, backend=backend, training=False)
    assert inf_cache is None
    np.testing.assert_array_equal(inf_out, out)
    np.testing.assert_array_equal(inf_h_n, h_n)


@st.composite
def problems(draw):
    T = draw(st.integers(1, 9))
    B = draw(st.integers(1, 5))
    lengths = draw(st.one_of(st.none(), st.lists(st.integers(0, T), min_size=B, max_size=B)))
    return dict(T=T, B=B, I=draw(st.integers(1, 7)), H=draw(st.integers(1, 9)),
                bias=(draw(st.booleans()), draw(st.booleans())), h0=draw(st.booleans()),
                lengths=lengths, seed=draw(st.integers(0, 2**31)),
                nonlinearity=draw(st.sampled_from(["tanh", "relu"])),
                upstream=draw(st.sampled_from(["both", "d_out", "d_h_n"])))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=problems())
def test_matches_reference(backend, dtype, kernel_path, case):
    T, B, H = case["T"], case["B"], case["H"]
    problem = make_rnn_problem(T, B, case["I"], H, dtype, seed=case["seed"], bias=case["bias"],
                               h0=case["h0"], lengths=case["lengths"])
    d_out, d_h_n = upstream(T, B, H, dtype, seed=case["seed"] + 1)
    if case["upstream"] == "d_out":
        d_h_n = None
    elif case["upstream"] == "d_h_n":
        d_out = None
    check_against_reference(backend, problem, case["nonlinearity"], dtype, d_out, d_h_n)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (30, 1, 64, 64), (12, 16, 40, 72), (5, 33, 17, 130)],
                         ids=lambda s: "T{}-B{}-I{}-H{}".format(*s))
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_larger_shapes(fast_backend, dtype, kernel_path, shape, nonlinearity):
    T, B, I, H = shape
    lengths = list(np.random.default_rng(0).integers(0, T + 1, B)) if B > 1 else None
    if lengths:
        lengths[0], lengths[-1] = 0, T
    problem = make_rnn_problem(T, B, I, H, dtype, seed=11, lengths=lengths)
    d_out, d_h_n = upstream(T, B, H, dtype)
    check_against_reference(fast_backend, problem, nonlinearity, dtype, d_out, d_h_n)


def test_any_backend_accepts_any_backends_cache(backend, fast_backend):
    """The cache has the same fields whichever backend made it."""
    problem = make_rnn_problem(4, 3, 2, 5, lengths=[4, 0, 2])
    d_out, d_h_n = upstream(4, 3, 5)
    _, _, cache = fastrnn.rnn_forward(**problem, backend=backend)
    _, _, other = fastrnn.rnn_forward(**problem, backend=fast_backend)
    for a, b in zip(fastrnn.rnn_backward(d_out, d_h_n, cache),
                    fastrnn.rnn_backward(d_out, d_h_n, other)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # NumPy notes the NaN
def test_nan_and_inf_propagate(backend):
    problem = make_rnn_problem(3, 2, 2, 3, lengths=[3, 3])
    problem["x"][1, 0, 0] = np.nan
    problem["x"][0, 1, 1] = np.inf
    out, h_n, _ = fastrnn.rnn_forward(**problem, backend=backend, nonlinearity="relu")
    assert np.isnan(out[1:, 0]).all() and np.isnan(h_n[0]).all()
    assert not np.isnan(out[0, 0]).any()
    out, _, _ = fastrnn.rnn_forward(**problem, backend=backend)
    assert np.isnan(out[1, 0]).all()
    assert np.isfinite(out[:, 1]).all()  # tanh(inf) = 1 keeps the other sequence finite
