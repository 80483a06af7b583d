"""The API contract: bad input raises clearly, odd layouts work, inputs stay unchanged."""
import re
import warnings

import numpy as np
import pytest

import fastrnn
from fastrnn import _backends
from _helpers import make_rnn_problem, upstream

T, B, I, H = 4, 3, 2, 5


@pytest.fixture
def problem():
    return make_rnn_problem(T, B, I, H, lengths=[4, 0, 2])


def _with(problem, **changes):
    return {**problem, **changes}


f32 = np.float32
BAD_FORWARD = [
    # (changes to the problem, extra keywords, exception, words the message must contain)
    (dict(x=np.zeros((T, B))), {}, ValueError, ["x", "(T, B, I)"]),
    (dict(x=np.zeros((0, B, I))), {}, ValueError, ["x", "T >= 1"]),
    # 2**31 rows without the memory: a broadcast view
    (dict(x=np.broadcast_to(np.zeros(1), (2**16, 2**15, 1))), {}, ValueError, ["x", "2**31"]),
    (dict(x=np.zeros((T, B, I), np.int64)), {}, TypeError, ["x", "float32 or float64"]),
    (dict(x=np.zeros((T, B, I), np.complex128)), {}, TypeError, ["x", "float32 or float64"]),
    (dict(x="abc"), {}, TypeError, ["x"]),
    (dict(x=np.zeros((T, B, I), f32)), {}, TypeError, ["W_hh", "float64", "float32"]),
    (dict(W_ih=np.zeros((H, I + 1))), {}, ValueError, ["W_ih", "(H, I)", f"({H}, {I})"]),
    (dict(W_ih=np.zeros((H, I), f32)), {}, TypeError, ["W_ih", "float32"]),
    (dict(W_hh=np.zeros((H, H + 1))), {}, ValueError, ["W_hh", "(H, H)"]),
    (dict(W_hh=np.zeros(H)), {}, ValueError, ["W_hh", "(H, H)"]),
    (dict(b_ih=np.zeros(H + 1)), {}, ValueError, ["b_ih", f"({H},)"]),
    (dict(b_hh=np.zeros((1, H))), {}, ValueError, ["b_hh", "(H,)"]),
    (dict(b_hh=np.zeros(H, f32)), {}, TypeError, ["b_hh", "float32"]),
    (dict(h0=np.zeros((B + 1, H))), {}, ValueError, ["h0", "(B, H)", f"({B}, {H})"]),
    (dict(h0=np.zeros((B, H), f32)), {}, TypeError, ["h0"]),
    (dict(lengths=[1, 2]), {}, ValueError, ["lengths", "(B,)"]),
    (dict(lengths=[1, 2, T + 1]), {}, ValueError, ["lengths", "<= T"]),
    (dict(lengths=[1, -1, 2]), {}, ValueError, ["lengths", "0 <="]),
    (dict(lengths=[1.0, 2.0, 3.0]), {}, TypeError, ["lengths", "integers"]),
    (dict(lengths=[True, False, True]), {}, TypeError, ["lengths", "integers"]),
    ({}, dict(nonlinearity="sigmoid"), ValueError, ["nonlinearity", "tanh", "relu"]),
    ({}, dict(nonlinearity=None), ValueError, ["nonlinearity"]),
    ({}, dict(backend="torch"), ValueError, ["backend", "numba", "cython"]),
]


@pytest.mark.parametrize("changes, kwargs, exc, words", BAD_FORWARD)
def test_bad_forward_input_raises_naming_the_argument(backend, problem, changes, kwargs, exc, words):
    if "backend" not in kwargs:
        kwargs = {**kwargs, "backend": backend}
    with pytest.raises(exc) as info:
        fastrnn.rnn_forward(**_with(problem, **changes), **kwargs)
    for word in words:
        assert word in str(info.value), f"{word!r} not in {info.value}"


@pytest.fixture
def cache(backend, problem):
    return fastrnn.rnn_forward(**problem, backend=backend)[2]


BAD_BACKWARD = [
    (dict(d_out=np.zeros((T, B, H + 1))), ValueError, ["d_out", "(T, B, H)"]),
    (dict(d_out=np.zeros((T, B, H), f32)), TypeError, ["d_out", "float32"]),
    (dict(d_h_n=np.zeros((B, H, 1))), ValueError, ["d_h_n", "(B, H)"]),
    (dict(d_h_n=np.zeros((B, H), np.int32)), TypeError, ["d_h_n"]),
]


@pytest.mark.parametrize("changes, exc, words", BAD_BACKWARD)
def test_bad_backward_input_raises(cache, changes, exc, words):
    args = {"d_out": None, "d_h_n": None, **changes}
    with pytest.raises(exc) as info:
        fastrnn.rnn_backward(args["d_out"], args["d_h_n"], cache)
    for word in words:
        assert word in str(info.value)


def test_backward_needs_a_training_cache(backend, problem):
    _, _, cache = fastrnn.rnn_forward(**problem, backend=backend, training=False)
    with pytest.raises(ValueError, match="training=False"):
        fastrnn.rnn_backward(None, None, cache)
    with pytest.raises(TypeError, match="cache"):
        fastrnn.rnn_backward(None, None, {"out": 1})


def test_backward_rejects_a_cache_of_another_cell(backend, problem):
    _, _, cache = fastrnn.rnn_forward(**problem, backend=backend)
    cache.cell = "lstm"
    with pytest.raises(ValueError, match="lstm_forward"):
        fastrnn.rnn_backward(None, None, cache)


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


def test_layouts_give_the_same_answers(backend, problem):
    d_out, d_h_n = upstream(T, B, H)
    out, h_n, cache = fastrnn.rnn_forward(**problem, backend=backend)
    grads = fastrnn.rnn_backward(d_out, d_h_n, cache)
    for layout, p in _layouts({**problem, "d_out": d_out, "d_h_n": d_h_n}):
        d_o, d_h = p.pop("d_out"), p.pop("d_h_n")
        o, h, c = fastrnn.rnn_forward(**p, backend=backend)
        np.testing.assert_array_equal(o, out, err_msg=layout)
        np.testing.assert_array_equal(h, h_n, err_msg=layout)
        for a, b in zip(fastrnn.rnn_backward(d_o, d_h, c), grads):
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14, err_msg=layout)


def test_inputs_are_not_modified(backend, problem):
    d_out, d_h_n = upstream(T, B, H)
    args = {**problem, "lengths": np.array(problem["lengths"])}
    before = {k: v.copy() for k, v in args.items()}
    ups = d_out.copy(), d_h_n.copy()
    _, _, cache = fastrnn.rnn_forward(**args, backend=backend)
    fastrnn.rnn_backward(d_out, d_h_n, cache)
    for k, v in args.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    np.testing.assert_array_equal(d_out, ups[0])
    np.testing.assert_array_equal(d_h_n, ups[1])


def test_changing_inputs_after_forward_does_not_change_gradients(backend, problem):
    args = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in problem.items()}
    d_out, d_h_n = upstream(T, B, H)
    _, _, cache = fastrnn.rnn_forward(**args, backend=backend)
    expected = fastrnn.rnn_backward(d_out, d_h_n, cache)
    _, _, cache = fastrnn.rnn_forward(**args, backend=backend)
    for k in ("x", "h0", "W_ih", "W_hh"):
        args[k] += 1.0
    for a, b in zip(fastrnn.rnn_backward(d_out, d_h_n, cache), expected):
        np.testing.assert_array_equal(a, b)


def test_training_output_is_read_only(backend, problem):
    out, h_n, _ = fastrnn.rnn_forward(**problem, backend=backend)
    with pytest.raises(ValueError, match="read-only"):
        out[0] = 1.0
    h_n[0] = 1.0  # h_n is not saved, so it stays writable
    out, _, _ = fastrnn.rnn_forward(**problem, backend=backend, training=False)
    out[0] = 1.0


def test_array_likes_are_accepted(backend, problem):
    out, _, _ = fastrnn.rnn_forward(**problem, backend=backend)
    listed = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in problem.items()}
    np.testing.assert_array_equal(fastrnn.rnn_forward(**listed, backend=backend)[0], out)


def test_float32_stays_float32(backend):
    p = make_rnn_problem(T, B, I, H, np.float32)
    out, h_n, cache = fastrnn.rnn_forward(**p, backend=backend)
    grads = fastrnn.rnn_backward(*upstream(T, B, H, np.float32), cache)
    assert {a.dtype for a in (out, h_n, *grads)} == {np.dtype(np.float32)}


def test_one_and_two_threads_agree(fast_backend, kernel_path):
    p = make_rnn_problem(20, 16, 24, 40, np.float32, lengths=list(range(4, 20)))
    d_out, d_h_n = upstream(20, 16, 40, np.float32)
    results = []
    try:
        for n in (1, 2):
            fastrnn.set_num_threads(n)
            out, h_n, cache = fastrnn.rnn_forward(**p, backend=fast_backend)
            results.append((out, h_n, *fastrnn.rnn_backward(d_out, d_h_n, cache)))
    finally:
        fastrnn.set_num_threads(fastrnn._threads.cpu_count())
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n, exc", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                    ("2", TypeError), (True, TypeError)])
def test_set_num_threads_rejects_bad_counts(n, exc):
    with pytest.raises(exc, match="n must"):
        fastrnn.set_num_threads(n)


def test_set_num_threads_reaches_the_blas_pools():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    fastrnn.rnn_forward(**make_rnn_problem(2, 2, 2, 2), backend=fastrnn.get_default_backend())
    try:
        fastrnn.set_num_threads(1)
        assert fastrnn.get_num_threads() == 1
        blas = threadpoolctl.threadpool_info()
        assert blas and all(p["num_threads"] == 1 for p in blas)
    finally:
        fastrnn.set_num_threads(fastrnn._threads.cpu_count())


@pytest.fixture
def fresh_backends(monkeypatch):
    """Backend state as in a new process, restored afterwards."""
    monkeypatch.setattr(_backends, "_loaded", {})
    monkeypatch.setattr(_backends, "_failed", {})
    monkeypatch.setattr(_backends, "_warned_fallback", False)
    monkeypatch.setattr(_backends, "_default", None)
    return _backends


def test_unavailable_backend_says_why_and_fallback_warns_once(fresh_backends, problem):
    fresh_backends._failed["cython"] = "it was not built (test)"
    with pytest.raises(fastrnn.BackendUnavailableError, match=re.escape("not built (test)")):
        fastrnn.rnn_forward(**problem, backend="cython")
    with pytest.warns(RuntimeWarning, match="using the numba backend"):
        fastrnn.rnn_forward(**problem)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fastrnn.rnn_forward(**problem)
    assert fastrnn.available_backends() == ["numba", "numpy"]
    assert fastrnn.unavailable_backends() == {"cython": "it was not built (test)"}


def test_default_backend_can_be_set(fresh_backends, problem):
    assert fastrnn.get_default_backend() == fastrnn.available_backends()[0]
    fastrnn.set_default_backend("numpy")
    assert fastrnn.rnn_forward(**problem)[2].backend == "numpy"
    with pytest.raises(ValueError, match="backend"):
        fastrnn.set_default_backend("fortran")
    fastrnn.set_default_backend(None)
    assert fastrnn.get_default_backend() == fastrnn.available_backends()[0]
