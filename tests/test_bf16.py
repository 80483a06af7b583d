"""bfloat16 compute (``compute_dtype="bfloat16"``): the rounding, the kernels'
forward and backward at every instruction-set level against the bf16
reference (tight) and against float64 (the documented bound), and the
argument checks."""
import numpy as np
import pytest

import fastrnn
from fastrnn import reference as R
from fastrnn._spec import CELLS
from fastrnn._testing import (as_float64, backward, forward, random_problem, random_upstream,
                              scaled_error)

# Kernel against the bf16 reference, one step from the same states: the same
# bf16 operands, so only the float32 order of the sums differs (1e-7
# measured).  Over a whole sequence an h_t that the two sums put on either
# side of a bf16 rounding boundary rounds one bf16 ulp apart, and the steps
# after carry that (up to 3e-5 measured at H = 257): SEQUENCE.  Against
# float64: bf16's 8 bits, accumulated over the steps.
BF16_STEP_VS_REFERENCE = 1e-5
BF16_SEQUENCE_VS_REFERENCE = 2e-3
BF16_VS_FLOAT64 = 3e-2
# The backward, from the kernel's own cache: the same rounding points, so
# as tight as a step, up to the same boundary effect where H is large (a
# da_t rounded one bf16 ulp apart: 9e-4 measured at H = 257).
BF16_BACKWARD_VS_REFERENCE = {False: 1e-5, True: 2e-3}  # keyed by H > 100

SHAPES = [(9, 1, 5, 1), (7, 3, 4, 7), (6, 17, 9, 33), (5, 3, 31, 257), (40, 2, 3, 9), (3, 5, 8, 16)]


def test_round_bf16_is_round_to_nearest_even():
    one = np.float32(1)
    ulp = np.float32(2.0 ** -7)  # bf16's spacing at 1
    a = np.array([one + ulp / 2, one + 3 * ulp / 2, one + ulp / 2 + np.float32(2.0 ** -20),
                  -(one + ulp / 2), np.finfo(np.float32).max, np.inf, -np.inf, 0.0, -0.0, np.nan],
                 np.float32)
    r = R.round_bf16(a)
    assert r.dtype == np.float32
    np.testing.assert_array_equal(r[:8], [1, 1 + 2 * ulp, 1 + ulp, -1, np.inf, np.inf, -np.inf, 0])
    assert np.signbit(r[8]) and np.isnan(r[9])
    assert (R.round_bf16(a).view(np.uint32) & 0xFFFF == 0).all()


def test_round_bf16_matches_ml_dtypes():
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is not installed")
    a = np.random.default_rng(0).standard_normal(10000).astype(np.float32) * 100
    np.testing.assert_array_equal(R.round_bf16(a), a.astype(ml_dtypes.bfloat16).astype(np.float32))


def _check(got, want, bound, what):
    for name in want:
        assert got[name].dtype == np.float32
        err, scale = scaled_error(got[name], np.asarray(want[name], np.float64))
        assert err <= bound * scale, f"{name}: {err:.3g} from {what}"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-B{}-I{}-H{}".format(*s))
@pytest.mark.parametrize("cell", CELLS)
def test_kernels_match_the_bf16_reference(level, cell, shape, kernel_path):
    T, B, I, H = shape
    lengths = np.array([T, 0, T - 1][:B] + [T] * max(0, B - 3))
    problem = random_problem(T, B, I, H, np.float32, cell=cell, seed=H, lengths=lengths)
    kw = dict(training=False, compute_dtype="bfloat16")
    # Step by step from the kernel's own states: tight.
    states = {name: problem[name] for name in CELLS[cell].initial}
    for t in range(T):
        step = {**problem, **states, "x": problem["x"][t:t + 1],
                "lengths": (t < lengths).astype(np.int64)}
        got, _ = forward(cell, step, "cython", **kw)
        want, _ = forward(cell, step, **kw)
        _check(got, want, BF16_STEP_VS_REFERENCE, f"the bf16 reference at step {t}")
        states = {s0: got[s_n] for s0, s_n in zip(CELLS[cell].initial, CELLS[cell].finals)}
    # The whole sequence, against the bf16 reference and against float64.
    got, _ = forward(cell, problem, "cython", **kw)
    _check(got, forward(cell, problem, **kw)[0], BF16_SEQUENCE_VS_REFERENCE, "the bf16 reference")
    exact, _ = forward(cell, as_float64(problem), training=False)
    _check(got, exact, BF16_VS_FLOAT64, "float64")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-B{}-I{}-H{}".format(*s))
@pytest.mark.parametrize("cell", CELLS)
def test_backward_matches_the_bf16_reference(level, cell, shape, kernel_path):
    """BPTT of a bf16 forward: against the reference's backward of the same
    cache (tight), and against float64 gradients."""
    T, B, I, H = shape
    lengths = [T, 0, T - 1][:B] + [T] * max(0, B - 3)
    problem = random_problem(T, B, I, H, np.float32, cell=cell, seed=H, lengths=lengths)
    ups = random_upstream(cell, T, B, H, np.float32)
    outs, cache = forward(cell, problem, "cython", compute_dtype="bfloat16")
    assert cache.compute == "bfloat16"
    inference, _ = forward(cell, problem, "cython", training=False, compute_dtype="bfloat16")
    for name in outs:
        np.testing.assert_array_equal(outs[name], inference[name])
    got = backward(cell, ups, cache)
    _check({k: v for k, v in got.items() if v is not None}, backward(cell, ups, cache, R),
           BF16_BACKWARD_VS_REFERENCE[H > 100], "the bf16 reference's backward")
    _, exact_cache = forward(cell, as_float64(problem))
    exact = backward(cell, as_float64(ups), exact_cache, R)
    _check({k: v for k, v in got.items() if v is not None},
           {k: v for k, v in exact.items() if v is not None}, BF16_VS_FLOAT64, "float64")


# Sequences of several of the backward's chunks of rows
# (_tuning.BACKWARD_CHUNK_ROWS), with a chunk of an odd number of rows (B odd)
# and an odd G*H: the bf16 weight-gradient GEMMs pair rows inside a chunk and
# pad the pairs.  Hundreds of steps: the sequence's bound (a da_t rounded one
# bf16 ulp apart carries on: 6e-4 measured at T = 700, with and without the
# engine's own GEMMs).
CHUNKED = [(700, 3, 5, 9), (520, 2, 33, 17), (1100, 1, 2, 40)]


@pytest.mark.parametrize("shape", CHUNKED, ids=lambda s: "T{}-B{}-I{}-H{}".format(*s))
@pytest.mark.parametrize("cell", CELLS)
def test_backward_in_chunks_matches_the_bf16_reference(level, cell, shape):
    T, B, I, H = shape
    lengths = [T, 0, T - 1][:B] + [T] * max(0, B - 3)
    problem = random_problem(T, B, I, H, np.float32, cell=cell, seed=H, lengths=lengths)
    ups = random_upstream(cell, T, B, H, np.float32)
    _, cache = forward(cell, problem, "cython", compute_dtype="bfloat16")
    got = {k: v for k, v in backward(cell, ups, cache).items() if v is not None}
    _check(got, backward(cell, ups, cache, R), BF16_SEQUENCE_VS_REFERENCE,
           "the bf16 reference's backward")


@pytest.mark.parametrize("cell", CELLS)
def test_bf16_differs_from_float32_by_the_rounding(cell):
    """The mode is on: its result is not float32's, and the reference's bf16
    and float32 results differ by as much (a check that cannot pass by
    ignoring the keyword)."""
    problem = random_problem(20, 4, 16, 32, np.float32, cell=cell, seed=3)
    bf16, _ = forward(cell, problem, training=False, compute_dtype="bfloat16")
    f32, _ = forward(cell, problem, training=False)
    assert np.abs(bf16["out"] - f32["out"]).max() > 1e-4


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_inputs_are_not_modified(backend):
    if backend not in fastrnn.available_backends():
        pytest.skip(f"{backend} unavailable")
    problem = random_problem(6, 3, 5, 7, np.float32, cell="lstm")
    copies = {k: v.copy() for k, v in problem.items() if isinstance(v, np.ndarray)}
    forward("lstm", problem, backend, training=False, compute_dtype="bfloat16")
    for k, v in copies.items():
        np.testing.assert_array_equal(problem[k], v)


def test_ml_dtypes_bfloat16_names_the_mode():
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is not installed")
    problem = random_problem(5, 2, 3, 4, np.float32)
    a, _ = forward("rnn", problem, training=False, compute_dtype=ml_dtypes.bfloat16)
    b, _ = forward("rnn", problem, training=False, compute_dtype="bfloat16")
    np.testing.assert_array_equal(a["out"], b["out"])


@pytest.mark.parametrize("kwargs, error, says", [
    (dict(compute_dtype="bfloat16", dtype=np.float64), ValueError, "needs float32 arrays"),
    (dict(compute_dtype="float16"), ValueError, "compute_dtype must be None, 'bfloat16'"),
    (dict(compute_dtype="float64"), ValueError, "compute_dtype must be None, 'bfloat16'"),
    (dict(compute_dtype=3), TypeError, "compute_dtype must be None"),
    (dict(compute_dtype="bfloat16", backend="numba"), ValueError, "runs on the cython backend"),
])
def test_bad_compute_dtype_is_refused(kwargs, error, says):
    kwargs = dict(kwargs)
    dtype = kwargs.pop("dtype", np.float32)
    kwargs.setdefault("training", False)
    problem = random_problem(4, 2, 3, 5, dtype, cell="gru")
    if kwargs.get("backend") == "numba" and "numba" not in fastrnn.available_backends():
        pytest.skip("numba unavailable")
    with pytest.raises(error, match=says):
        fastrnn.gru_forward(**problem, **kwargs)


def test_naming_the_arrays_own_dtype_is_the_plain_computation():
    problem = random_problem(4, 2, 3, 5, np.float32, cell="gru")
    a, _ = forward("gru", problem, training=False, compute_dtype="float32")
    b, _ = forward("gru", problem, training=False)
    np.testing.assert_array_equal(a["out"], b["out"])


@pytest.mark.parametrize("cls", [fastrnn.RNN, fastrnn.LSTM, fastrnn.GRU])
def test_layers_run_the_functions_bf16_mode(cls, tmp_path):
    """A layer's compute_dtype reaches the kernels, forward and backward, and
    is saved with the layer (a file saved without it loads as None)."""
    if "cython" not in fastrnn.available_backends():
        pytest.skip("the cython backend is unavailable")
    layer = cls(5, 7, compute_dtype="bfloat16", seed=1)
    assert layer.compute_dtype == "bfloat16" and "compute_dtype='bfloat16'" in repr(layer)
    x = np.random.default_rng(2).standard_normal((6, 3, 5)).astype(np.float32)
    out, _ = layer(x)
    cell = layer._cell
    params = dict(layer.named_parameters())
    weights = [params[n + "_l0"] for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    states = (None, None) if cell == "lstm" else (None,)
    want = getattr(fastrnn, cell + "_forward")(x, *states, *weights, compute_dtype="bfloat16")
    np.testing.assert_array_equal(out, want[0])
    layer.backward(np.ones_like(out))
    grads = getattr(fastrnn, cell + "_backward")(np.ones_like(out), *states, want[-1])
    np.testing.assert_array_equal(layer.grads["weight_hh_l0"], grads.dW_hh)
    layer.save(tmp_path / "m.npz")
    assert cls.load(tmp_path / "m.npz").compute_dtype == "bfloat16"
    layer.compute_dtype = None
    np.testing.assert_array_equal(layer(x)[0], getattr(fastrnn, cell + "_forward")(
        x, *states, *weights)[0])
    with pytest.raises(ValueError, match="needs float32"):
        cls(5, 7, dtype=np.float64, compute_dtype="bfloat16")


def test_a_cell_runs_bf16():
    if "cython" not in fastrnn.available_backends():
        pytest.skip("the cython backend is unavailable")
    cell = fastrnn.GRUCell(4, 6, compute_dtype="bfloat16", seed=0)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    p = dict(cell.named_parameters())
    want = fastrnn.gru_forward(x[None], None, p["weight_ih"], p["weight_hh"], p["bias_ih"],
                               p["bias_hh"], compute_dtype="bfloat16")[1]
    np.testing.assert_array_equal(cell(x), want)


@pytest.mark.parametrize("backend", ["numpy", "cython"])
def test_bfloat16_arrays_are_taken(backend):
    """ml_dtypes.bfloat16 arrays widen to float32 (exactly) and select bf16
    products; compute_dtype may still ask for float32's."""
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is not installed")
    if backend not in fastrnn.available_backends():
        pytest.skip(f"{backend} unavailable")
    problem = random_problem(6, 3, 5, 7, np.float32, cell="gru")
    as_bf16 = {k: (v.astype(ml_dtypes.bfloat16) if k in ("x", "W_hh") else v)
               for k, v in problem.items()}
    widened = {k: (v.astype(np.float32) if k in ("x", "W_hh") else v) for k, v in as_bf16.items()}
    got, cache = forward("gru", as_bf16, backend)
    want, _ = forward("gru", widened, backend, compute_dtype="bfloat16")
    assert got["out"].dtype == np.float32 and cache.compute == "bfloat16"
    np.testing.assert_array_equal(got["out"], want["out"])
    plain, _ = forward("gru", as_bf16, backend, compute_dtype="float32", training=False)
    np.testing.assert_array_equal(plain["out"], forward("gru", widened, backend,
                                                        training=False)[0]["out"])
    assert as_bf16["x"].dtype == ml_dtypes.bfloat16  # not modified
