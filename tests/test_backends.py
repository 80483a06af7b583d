"""Every backend's forward and backward against the float64 reference, for every cell."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastrnn
from fastrnn import reference as R
from fastrnn._spec import CELLS
from fastrnn._testing import backward, forward, random_upstream
from fastrnn._testing import as_float64, assert_close, random_problem



def check_against_reference(cell, backend, problem, dtype, ups, **kwargs):
    outs, cache = forward(cell, problem, backend, **kwargs)
    ref_outs, ref_cache = forward(cell, as_float64(problem), **kwargs)
    for name in outs:
        assert_close(outs[name], ref_outs[name], dtype, name)
    grads = backward(cell, ups, cache)
    ref_grads = backward(cell, as_float64(ups), ref_cache, R)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        assert_close(grads[name], ref_grads[name], dtype, name)
    inf_outs, inf_cache = forward(cell, problem, backend, training=False, **kwargs)
    assert inf_cache is None
    for name in outs:
        np.testing.assert_array_equal(inf_outs[name], outs[name])


@st.composite
def problems(draw):
    T = draw(st.integers(1, 9))
    B = draw(st.integers(1, 5))
    lengths = draw(st.one_of(st.none(), st.lists(st.integers(0, T), min_size=B, max_size=B)))
    return dict(T=T, B=B, I=draw(st.integers(1, 7)), H=draw(st.integers(1, 9)),
                bias=(draw(st.booleans()), draw(st.booleans())), h0=draw(st.booleans()),
                lengths=lengths, seed=draw(st.integers(0, 2**31)),
                nonlinearity=draw(st.sampled_from(["tanh", "relu"])),
                drop=draw(st.sampled_from([None, "d_out", "d_h_n", "d_c_n"])))


@pytest.mark.parametrize("cell", CELLS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=problems())
def test_matches_reference(cell, backend, dtype, kernel_path, case):
    T, B, H = case["T"], case["B"], case["H"]
    problem = random_problem(T, B, case["I"], H, dtype, cell=cell, seed=case["seed"],
                               bias=case["bias"], h0=case["h0"], lengths=case["lengths"])
    ups = random_upstream(cell, T, B, H, dtype, seed=case["seed"] + 1)
    if case["drop"] in ups:
        ups[case["drop"]] = None  # None means zeros
    kwargs = {"nonlinearity": case["nonlinearity"]} if cell == "rnn" else {}
    check_against_reference(cell, backend, problem, dtype, ups, **kwargs)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (30, 1, 64, 64), (12, 16, 40, 72), (5, 33, 17, 130)],
                         ids=lambda s: "T{}-B{}-I{}-H{}".format(*s))
@pytest.mark.parametrize("cell, nonlinearity", [("rnn", "tanh"), ("rnn", "relu"), ("lstm", None),
                                                ("gru", None)],
                         ids=["rnn-tanh", "rnn-relu", "lstm", "gru"])
def test_larger_shapes(fast_backend, dtype, kernel_path, shape, cell, nonlinearity):
    T, B, I, H = shape
    lengths = list(np.random.default_rng(0).integers(0, T + 1, B)) if B > 1 else None
    if lengths:
        lengths[0], lengths[-1] = 0, T
    problem = random_problem(T, B, I, H, dtype, cell=cell, seed=11, lengths=lengths)
    kwargs = {} if nonlinearity is None else {"nonlinearity": nonlinearity}
    check_against_reference(cell, fast_backend, problem, dtype, random_upstream(cell, T, B, H, dtype),
                            **kwargs)


@pytest.mark.parametrize("cell", CELLS)
def test_any_backend_accepts_any_backends_cache(cell, backend, fast_backend):
    """The cache has the same fields whichever backend made it."""
    problem = random_problem(4, 3, 2, 5, cell=cell, lengths=[4, 0, 2])
    ups = random_upstream(cell, 4, 3, 5)
    _, cache = forward(cell, problem, backend)
    _, other = forward(cell, problem, fast_backend)
    a, b = backward(cell, ups, cache), backward(cell, ups, other)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # NumPy notes the NaN
def test_nan_and_inf_propagate(backend):
    problem = random_problem(3, 2, 2, 3, lengths=[3, 3])
    problem["x"][1, 0, 0] = np.nan
    problem["x"][0, 1, 1] = np.inf
    out, h_n, _ = fastrnn.rnn_forward(**problem, backend=backend, nonlinearity="relu")
    assert np.isnan(out[1:, 0]).all() and np.isnan(h_n[0]).all()
    assert not np.isnan(out[0, 0]).any()
    out, _, _ = fastrnn.rnn_forward(**problem, backend=backend)
    assert np.isnan(out[1, 0]).all()
    assert np.isfinite(out[:, 1]).all()  # tanh(inf) = 1 keeps the other sequence finite


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # NumPy notes the NaN
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_nan_propagates_in_the_gated_cells(cell, backend):
    problem = random_problem(3, 2, 2, 3, cell=cell)
    problem["x"][1, 0, 0] = np.nan
    outs, _ = forward(cell, problem, backend)
    assert np.isnan(outs["out"][1:, 0]).all() and np.isnan(outs["h_n"][0]).all()
    assert np.isfinite(outs["out"][:, 1]).all() and np.isfinite(outs["out"][0]).all()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gates_are_safe_for_large_inputs(cell, backend, dtype, kernel_path):
    """Saturated sigmoids and tanh (|pre-activation| ~ 1e6): no overflow warning,
    no NaN, finite gradients, and the reference's values."""
    problem = random_problem(5, 3, 4, 6, dtype, cell=cell, seed=8, weight_scale=50.0)
    problem["x"] *= dtype.type(1e4)
    ups = random_upstream(cell, 5, 3, 6, dtype)
    with np.errstate(all="raise"):
        check_against_reference(cell, backend, problem, dtype, ups)
