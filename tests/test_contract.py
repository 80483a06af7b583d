"""The API contract: bad input raises clearly, odd layouts work, inputs stay unchanged."""
import re
import warnings

import numpy as np
import pytest

import fastrnn
from fastrnn._spec import CELLS
from fastrnn._testing import backward, forward, random_upstream
from fastrnn._testing import random_problem

T, B, I, H = 4, 3, 2, 5


@pytest.fixture(params=CELLS)
def cell(request):
    return request.param


@pytest.fixture
def problem(cell):
    # with the cell's extra weights (the LSTM's peepholes), so that they are
    # held to the contract too; the plain LSTM is in test_backends and test_torch
    return random_problem(T, B, I, H, cell=cell, lengths=[4, 0, 2], extras=True)


def _with(problem, **changes):
    return {**problem, **changes}


f32 = np.float32
# (cells, changes to the problem as a function of G, extra keywords, exception,
#  words the message must contain as a function of G); "*" is every cell.
GH = {1: "H", 3: "3*H", 4: "4*H"}
BAD_FORWARD = [
    ("*", lambda G: dict(x=np.zeros((T, B))), {}, ValueError, lambda G: ["x", "(T, B, I)"]),
    ("*", lambda G: dict(x=np.zeros((T, B, 0))), {}, ValueError, lambda G: ["x", "I >= 1"]),
    # 2**31 rows without the memory: a broadcast view
    ("*", lambda G: dict(x=np.broadcast_to(np.zeros(1), (2**16, 2**15, 1))), {}, ValueError,
     lambda G: ["x", "2**31"]),
    ("*", lambda G: dict(x=np.zeros((T, B, I), np.int64)), {}, TypeError,
     lambda G: ["x", "float32 or float64"]),
    ("*", lambda G: dict(x=np.zeros((T, B, I), np.complex128)), {}, TypeError,
     lambda G: ["x", "float32 or float64"]),
    ("*", lambda G: dict(x="abc"), {}, TypeError, lambda G: ["x"]),
    ("*", lambda G: dict(x=np.zeros((T, B, I), f32)), {}, TypeError,
     lambda G: ["W_hh", "float64", "float32"]),
    ("*", lambda G: dict(W_ih=np.zeros((G * H, I + 1))), {}, ValueError,
     lambda G: ["W_ih", f"({GH[G]}, I)", f"({G * H}, {I})"]),
    ("*", lambda G: dict(W_ih=np.zeros((G * H, I), f32)), {}, TypeError, lambda G: ["W_ih", "float32"]),
    ("*", lambda G: dict(W_ih=None), {}, TypeError, lambda G: ["W_ih", "None"]),
    ("*", lambda G: dict(W_hh=np.zeros((G * H, H + 1))), {}, ValueError,
     lambda G: ["W_hh", f"({GH[G]}, H)"]),
    ("*", lambda G: dict(W_hh=np.zeros(H)), {}, ValueError, lambda G: ["W_hh", f"({GH[G]}, H)"]),
    ("*", lambda G: dict(b_ih=np.zeros(G * H + 1)), {}, ValueError, lambda G: ["b_ih", f"({G * H},)"]),
    ("*", lambda G: dict(b_hh=np.zeros((1, G * H))), {}, ValueError, lambda G: ["b_hh", f"({GH[G]},)"]),
    ("*", lambda G: dict(b_hh=np.zeros(G * H, f32)), {}, TypeError, lambda G: ["b_hh", "float32"]),
    ("*", lambda G: dict(h0=np.zeros((B + 1, H))), {}, ValueError,
     lambda G: ["h0", "(B, H)", f"({B}, {H})"]),
    ("*", lambda G: dict(h0=np.zeros((B, H), f32)), {}, TypeError, lambda G: ["h0"]),
    ("lstm", lambda G: dict(c0=np.zeros((B, H + 1))), {}, ValueError,
     lambda G: ["c0", "(B, H)", f"({B}, {H})"]),
    ("lstm", lambda G: dict(c0=np.zeros((B, H), f32)), {}, TypeError, lambda G: ["c0", "float32"]),
    ("*", lambda G: dict(lengths=[1, 2]), {}, ValueError, lambda G: ["lengths", "(B,)"]),
    ("*", lambda G: dict(lengths=[1, 2, T + 1]), {}, ValueError, lambda G: ["lengths", "<= T"]),
    ("*", lambda G: dict(lengths=[1, -1, 2]), {}, ValueError, lambda G: ["lengths", "0 <="]),
    ("*", lambda G: dict(lengths=[1.0, 2.0, 3.0]), {}, TypeError, lambda G: ["lengths", "integers"]),
    ("*", lambda G: dict(lengths=[True, False, True]), {}, TypeError,
     lambda G: ["lengths", "integers"]),
    ("rnn", lambda G: {}, dict(nonlinearity="sigmoid"), ValueError,
     lambda G: ["nonlinearity", "tanh", "relu"]),
    ("rnn", lambda G: {}, dict(nonlinearity=None), ValueError, lambda G: ["nonlinearity"]),
    ("*", lambda G: {}, dict(backend="torch"), ValueError, lambda G: ["backend", "numba", "cython"]),
]


@pytest.mark.parametrize("cell_, changes, kwargs, exc, words",
                         [(c, *case[1:]) for c in CELLS for case in BAD_FORWARD if case[0] in ("*", c)])
def test_bad_forward_input_raises_naming_the_argument(backend, cell_, changes, kwargs, exc, words):
    G = CELLS[cell_].G
    problem = random_problem(T, B, I, H, cell=cell_, lengths=[4, 0, 2])
    if "backend" not in kwargs:
        kwargs = {**kwargs, "backend": backend}
    with pytest.raises(exc) as info:
        getattr(fastrnn, f"{cell_}_forward")(**_with(problem, **changes(G)), **kwargs)
    for word in words(G):
        assert word in str(info.value), f"{word!r} not in {info.value}"


@pytest.fixture
def cache(cell, backend, problem):
    return forward(cell, problem, backend)[1]


BAD_BACKWARD = [
    (dict(d_out=np.zeros((T, B, H + 1))), ValueError, ["d_out", "(T, B, H)"]),
    (dict(d_out=np.zeros((T, B, H), f32)), TypeError, ["d_out", "float32"]),
    (dict(d_h_n=np.zeros((B, H, 1))), ValueError, ["d_h_n", "(B, H)"]),
    (dict(d_h_n=np.zeros((B, H), np.int32)), TypeError, ["d_h_n"]),
]
LSTM_BAD_BACKWARD = [
    (dict(d_c_n=np.zeros((B + 1, H))), ValueError, ["d_c_n", "(B, H)"]),
    (dict(d_c_n=np.zeros((B, H), f32)), TypeError, ["d_c_n", "float32"]),
]


@pytest.mark.parametrize("changes, exc, words", BAD_BACKWARD)
def test_bad_backward_input_raises(cell, cache, changes, exc, words):
    with pytest.raises(exc) as info:
        backward(cell, changes, cache)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("changes, exc, words", LSTM_BAD_BACKWARD)
def test_bad_lstm_cell_state_gradient_raises(backend, changes, exc, words):
    _, cache = forward("lstm", random_problem(T, B, I, H, cell="lstm"), backend)
    with pytest.raises(exc) as info:
        backward("lstm", changes, cache)
    for word in words:
        assert word in str(info.value)


def test_backward_needs_a_training_cache(cell, backend, problem):
    _, cache = forward(cell, problem, backend, training=False)
    with pytest.raises(ValueError, match="training=False"):
        backward(cell, {}, cache)
    with pytest.raises(TypeError, match="cache"):
        backward(cell, {}, {"out": 1})


@pytest.mark.parametrize("cell_, other", [(c, o) for c in CELLS for o in CELLS if c != o])
def test_backward_rejects_a_cache_of_another_cell(cell_, other, backend):
    cell = cell_
    _, cache = forward(other, random_problem(T, B, I, H, cell=other), backend)
    with pytest.raises(ValueError, match=f"{other}_forward"):
        backward(cell, {}, cache)


def _layouts(problem):
    """The same problem as read-only, Fortran-ordered and strided arrays."""
    def readonly(a):
        a = a.copy()
        a.flags.writeable = False
        return a

    def strided(a):
        big = np.zeros(a.shape + (2,), a.dtype)
        big[..., 0] = a
        return big[..., 0]

    for name, f in [("readonly", readonly), ("fortran", np.asfortranarray), ("strided", strided)]:
        yield name, {k: f(v) if isinstance(v, np.ndarray) else v for k, v in problem.items()}


def test_layouts_give_the_same_answers(cell, backend, problem):
    ups = random_upstream(cell, T, B, H)
    outs, cache = forward(cell, problem, backend)
    grads = backward(cell, ups, cache)
    for layout, p in _layouts({**problem, **ups}):
        u = {name: p.pop(name) for name in ups}
        o, c = forward(cell, p, backend)
        for name in outs:
            np.testing.assert_array_equal(o[name], outs[name], err_msg=layout)
        for name, g in backward(cell, u, c).items():
            np.testing.assert_allclose(g, grads[name], rtol=1e-13, atol=1e-14, err_msg=layout)


def test_inputs_are_not_modified(cell, backend, problem):
    ups = random_upstream(cell, T, B, H)
    args = {**problem, "lengths": np.array(problem["lengths"])}
    before = {k: v.copy() for k, v in {**args, **ups}.items()}
    _, cache = forward(cell, args, backend)
    backward(cell, ups, cache)
    for k, v in {**args, **ups}.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_changing_inputs_after_forward_does_not_change_gradients(cell, backend, problem):
    args = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in problem.items()}
    ups = random_upstream(cell, T, B, H)
    expected = backward(cell, ups, forward(cell, args, backend)[1])
    _, cache = forward(cell, args, backend)
    for k in ("x", "h0", "c0", "W_ih", "W_hh"):
        if k in args:
            args[k] += 1.0
    for name, g in backward(cell, ups, cache).items():
        np.testing.assert_array_equal(g, expected[name], err_msg=name)


def test_training_output_is_read_only(cell, backend, problem):
    outs, _ = forward(cell, problem, backend)
    with pytest.raises(ValueError, match="read-only"):
        outs["out"][0] = 1.0
    outs["h_n"][0] = 1.0  # the final states are not saved, so they stay writable
    outs, _ = forward(cell, problem, backend, training=False)
    outs["out"][0] = 1.0


def test_array_likes_are_accepted(cell, backend, problem):
    outs, _ = forward(cell, problem, backend)
    listed = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in problem.items()}
    np.testing.assert_array_equal(forward(cell, listed, backend)[0]["out"], outs["out"])


def test_float32_stays_float32(cell, backend):
    p = random_problem(T, B, I, H, np.float32, cell=cell, extras=True)
    outs, cache = forward(cell, p, backend)
    grads = backward(cell, random_upstream(cell, T, B, H, np.float32), cache)
    assert {a.dtype for a in (*outs.values(), *grads.values())} == {np.dtype(np.float32)}


@pytest.mark.parametrize("cell, extras", [(c, False) for c in CELLS]
                         + [(c, True) for c, spec in CELLS.items() if spec.extras],
                         ids=[*CELLS, *(f"{c}-extras" for c, s in CELLS.items() if s.extras)])
def test_one_and_two_threads_agree(cell, fast_backend, kernel_path, extras):
    p = random_problem(20, 16, 24, 40, np.float32, cell=cell, lengths=list(range(4, 20)),
                       extras=extras)
    ups = random_upstream(cell, 20, 16, 40, np.float32)
    results = []
    try:
        for n in (1, 2):
            fastrnn.set_num_threads(n)
            outs, cache = forward(cell, p, fast_backend)
            results.append({**outs, **backward(cell, ups, cache)})
    finally:
        fastrnn.set_num_threads(fastrnn._threads.cpu_count())
    for name, a in results[0].items():
        np.testing.assert_allclose(a, results[1][name], rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("n, exc", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                    ("2", TypeError), (True, TypeError)])
def test_set_num_threads_rejects_bad_counts(n, exc):
    with pytest.raises(exc, match="n must"):
        fastrnn.set_num_threads(n)


def test_set_num_threads_reaches_the_blas_pools():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    fastrnn.rnn_forward(**random_problem(2, 2, 2, 2), backend=fastrnn.get_default_backend())
    try:
        fastrnn.set_num_threads(1)
        assert fastrnn.get_num_threads() == 1
        blas = threadpoolctl.threadpool_info()
        assert blas and all(p["num_threads"] == 1 for p in blas)
    finally:
        fastrnn.set_num_threads(fastrnn._threads.cpu_count())


@pytest.mark.parametrize("T, B, H", [(64, 1, 8), (3, 2, 8), (40, 16, 64)],
                         ids=["short-small", "few-steps", "engine"])
def test_the_kernels_leave_the_blas_pools_at_fastrnns_count(T, B, H):
    """The Cython kernels keep OpenBLAS to one thread for products their own
    threads share, or for small ones (so its pool does not wake and spin),
    and set it back to fastrnn's count afterwards, whichever path ran."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if "cython" not in fastrnn.available_backends():
        pytest.skip("the Cython backend is not built")
    try:
        fastrnn.set_num_threads(2)
        for cell in CELLS:
            p = random_problem(T, B, H, H, cell=cell)
            _, cache = forward(cell, p, "cython")
            backward(cell, random_upstream(cell, T, B, H), cache)
            counts = {d["filepath"]: d["num_threads"] for d in threadpoolctl.threadpool_info()
                      if d["internal_api"] == "openblas"}
            assert counts and set(counts.values()) == {2}, (cell, counts)
    finally:
        fastrnn.set_num_threads(fastrnn._threads.cpu_count())


@pytest.fixture
def rnn_problem():
    return random_problem(T, B, I, H, lengths=[4, 0, 2])


def test_unavailable_backend_says_why_and_fallback_warns_once(fresh_backends, rnn_problem):
    fresh_backends._failed["cython"] = "it was not built (test)"
    with pytest.raises(fastrnn.BackendUnavailableError, match=re.escape("not built (test)")):
        fastrnn.rnn_forward(**rnn_problem, backend="cython")
    with pytest.warns(RuntimeWarning, match="using the numba backend"):
        fastrnn.rnn_forward(**rnn_problem)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastrnn.rnn_forward(**rnn_problem)
    assert fastrnn.available_backends() == ["numba", "numpy"]
    assert fastrnn.unavailable_backends() == {"cython": "it was not built (test)"}


def test_default_backend_can_be_set(fresh_backends, rnn_problem):
    assert fastrnn.get_default_backend() == fastrnn.available_backends()[0]
    fastrnn.set_default_backend("numpy")
    assert fastrnn.rnn_forward(**rnn_problem)[2].backend == "numpy"
    with pytest.raises(ValueError, match="backend"):
        fastrnn.set_default_backend("fortran")
    fastrnn.set_default_backend(None)
    assert fastrnn.get_default_backend() == fastrnn.available_backends()[0]
