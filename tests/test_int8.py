"""int8 compute (``compute_dtype="int8"``, dynamic quantization, inference
only): the quantization arithmetic of ``fastrnn.quantization``, the kernels'
integer products against it bit for bit on every tile path (AMX, AVX512_VNNI,
32-bit multiplies), the kernels' forward at every instruction-set level and
engine layout against the int8 reference (tight) and against float64 (the
documented bound), zeros, huge values, inf and NaN, the QuantizedWeight's
cached panels, and the argument checks."""
import contextlib
import copy
import functools
import importlib
import pickle

import numpy as np
import pytest

import fastrnn
from fastrnn import _tuning
from fastrnn import reference as R
from fastrnn._spec import CELLS
from fastrnn._testing import (as_float64, engine_layout, forward, random_problem,
                              scaled_error)
from fastrnn.quantization import QuantizedWeight, int8_matmul, int_products, quantize_rows

# Kernel against the int8 reference, one step from the same states: the same
# integer products and the same float32 rescaling (bit for bit: see
# test_int8_products_match_the_numpy_definition), so only the float32 order
# of the gate arithmetic and the engine's fast tanh differ (2.4e-7 measured).
INT8_STEP_VS_REFERENCE = 1e-5
# Over a sequence, an h_t that the two put within a float32 rounding of a
# quantization boundary quantizes one int8 step apart at the next product:
# one unit of h moves by max|h| / 127 <= 8e-3, times a weight of at most
# 1/sqrt(H) (1 at H = 1), and the steps after carry that.  Measured: 1.8e-7
# on SHAPES (no flip), 5e-4 on an LSTM (T, B, I, H) = (200, 16, 64, 64) and
# 3e-4 on a GRU (100, 4, 31, 257) (one flip each).
INT8_SEQUENCE_VS_REFERENCE = 2e-2
# Against float64 (the reference in float64, no quantization), relative to
# max(1, max|expected|): the 8 bits of x_t, h_{t-1} and the weights,
# accumulated over the steps.  Worst measured over 10 seeds at every level,
# B = 16, I = H = 64, T up to 4096: Elman 3.2e-2, LSTM 1.6e-2, GRU 1.7e-2
# (the table in test_int8_error_against_float64; docs/precision.md).
INT8_VS_FLOAT64 = {"rnn": 5e-2, "lstm": 3e-2, "gru": 3e-2}

# (T, B, I, H): H in {1, 7, 33, 257}, B in {1, 3, 17}, I not a multiple of 4;
# T * B past the engine's 64-row blocks and B past an AMX tile's 16 rows.
SHAPES = [(9, 1, 5, 1), (7, 3, 1, 7), (6, 17, 31, 33), (5, 3, 31, 257), (3, 17, 5, 257),
          (24, 1, 1, 33)]
SHAPE_IDS = "T{}-B{}-I{}-H{}".format

try:
    LEVELS = [lv for lv in fastrnn.built_isa_levels() if lv in fastrnn.cpu_isa_levels()]
except ImportError:  # the Cython kernels are not built
    LEVELS = []

needs_cython = pytest.mark.skipif("cython" not in fastrnn.available_backends(),
                                  reason="the cython backend is unavailable")


def _modules(level):
    """The Cython kernel module of every cell at ``level``."""
    return [importlib.import_module(f"fastrnn.kernels.{cell}_cython_{level}") for cell in CELLS]


def _tile_paths():
    """(level, amx, id) for every int8 tile path this machine runs: each
    level on its default tiles and, where those are AMX's, again with AMX
    off (AVX512_VNNI)."""
    paths = []
    for level in LEVELS:
        m = _modules(level)[0]
        if m._amx():
            paths.append((level, True, f"{level}-amx"))
        paths.append((level, False, f"{level}-{'vnni' if m._has_vnni() else 'int32'}"))
    return paths


TILE_PATHS = _tile_paths()


@contextlib.contextmanager
def _amx(level, on):
    """The int8 products of ``level``'s kernels on AMX (its default, where the
    CPU and the OS allow it) or kept off it, restored to the default after."""
    modules = _modules(level)
    for m in modules:
        m._set_amx(-1 if on else 0)
    try:
        yield
    finally:
        for m in modules:
            m._set_amx(-1)


@pytest.fixture(params=TILE_PATHS or [None], ids=lambda p: p[2] if p else "not-built")
def tiles(request, restore_level):
    """Every int8 tile path, forced (the level, and AMX on or off): (level,
    the level's LSTM kernel module)."""
    if request.param is None:
        pytest.skip("the Cython kernels are not built")
    level, on, _ = request.param
    fastrnn.set_isa_level(level)
    with _amx(level, on):
        m = importlib.import_module(f"fastrnn.kernels.lstm_cython_{level}")
        assert m._amx() == on
        yield level, m


@pytest.fixture(params=["per-step", "chunks"])
def int8_chunks(request, monkeypatch):
    """The forward's two ways with the input term (_tuning.int8_kept_steps):
    each step its own, right before its recurrent term (where the int8
    weights fit the L2 cache), or chunks of steps first (here 2 steps, as
    where they do not)."""
    steps = 1 if request.param == "per-step" else 2
    monkeypatch.setattr(_tuning, "int8_kept_steps", lambda T, B, I, H, G: min(T, steps))
    return request.param


def _int8(cell, problem, backend="reference", **options):
    """The outputs of an int8 inference: a dict out, h_n[, c_n]."""
    return forward(cell, problem, backend, training=False, compute_dtype="int8", **options)[0]


def _check(got, want, bound, what):
    """Absolute error of every output within ``bound`` (NaN fails)."""
    for name in want:
        assert got[name].dtype == np.float32 and got[name].shape == want[name].shape
        err = float(np.max(np.abs(got[name].astype(np.float64) - want[name]), initial=0.0))
        assert err <= bound, f"{name}: {err:.3g} from {what} (bound {bound:g})"


def _check_float64(cell, got, exact):
    for name in exact:
        err, scale = scaled_error(got[name], exact[name])
        assert err <= INT8_VS_FLOAT64[cell] * scale, f"{name}: {err:.3g} from float64"


def _check_steps(cell, problem, lengths=None, **options):
    """The kernel against the int8 reference one step at a time, each step
    from the kernel's own states: INT8_STEP_VS_REFERENCE."""
    T, B = problem["x"].shape[:2]
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    states = {name: problem[name] for name in CELLS[cell].initial}
    for t in range(T):
        step = {**problem, **states, "x": problem["x"][t:t + 1],
                "lengths": (t < lengths).astype(np.int64)}
        got = _int8(cell, step, "cython", **options)
        _check(got, _int8(cell, step, **options), INT8_STEP_VS_REFERENCE,
               f"the int8 reference at step {t}")
        states = {s0: got[s_n] for s0, s_n in zip(CELLS[cell].initial, CELLS[cell].finals)}


def _lengths(T, B):
    """Sequences of every length kind: all T, 0 steps, T - 1, then all T."""
    return np.array([T, 0, T - 1][:B] + [T] * max(0, B - 3))


# ---- the arithmetic, in NumPy (fastrnn.quantization) ----------------------

def test_quantize_rows_is_symmetric_per_row_rounding_half_to_even():
    # 127 / amax = 1 here, so these are the values rint sees: ties go to even.
    a = np.array([[127, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, -126.5, 3.49, 0, -127]],
                 np.float32)
    q, scale = quantize_rows(a)
    assert q.dtype == np.int8 and scale.dtype == np.float32
    np.testing.assert_array_equal(q, [[127, 0, 2, 2, 0, -2, -2, 126, -126, 3, 0, -127]])
    np.testing.assert_array_equal(scale, [1])


def test_quantize_rows_error_is_half_a_step():
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((50, 37)) * rng.uniform(1e-3, 1e3, (50, 1))).astype(np.float32)
    q, scale = quantize_rows(a)
    amax = np.abs(a).max(axis=1)
    np.testing.assert_array_equal(scale, amax / np.float32(127))
    # Each row's largest |value| is +-127 exactly; every value within half a
    # step (plus float32's rounding of a * (127 / amax)).
    np.testing.assert_array_equal(np.abs(q).max(axis=1), 127)
    err = np.abs(q * scale[:, None].astype(np.float64) - a)
    assert (err <= 0.5 * scale[:, None] * (1 + 1e-5)).all()
    assert q.min() >= -127


def test_quantize_rows_of_zeros_tiny_and_non_finite_values():
    tiny = np.float32(2.0 ** -120)
    a = np.array([[0, 0, 0], [tiny, -tiny / 2, 0], [np.nextafter(tiny, 0), 0, 1e-45],
                  [1, np.inf, 2], [np.nan, 0, 1], [-np.inf, 0, 0], [1e30, -3e30, 0],
                  [np.finfo(np.float32).max, 1, -1]], np.float32)
    q, scale = quantize_rows(a)
    # Zeros and rows below 2**-120 (127 / amax would overflow): scale 0, q 0.
    assert scale[0] == 0 and scale[2] == 0 and not q[[0, 2]].any()
    # 2**-120 itself is quantized (a subnormal scale), ties to even: -63.5 -> -64.
    assert scale[1] == tiny / np.float32(127) and q[1].tolist() == [127, -64, 0]
    # inf or NaN anywhere in a row: scale NaN (every product it enters NaN), q 0.
    assert np.isnan(scale[3:6]).all() and not q[3:6].any()
    # Huge finite rows quantize like any other.
    assert q[6].tolist() == [42, -127, 0] and scale[6] == np.float32(3e30) / np.float32(127)
    assert q[7].tolist() == [127, 0, 0] and np.isfinite(scale[7])


def test_quantize_weight_per_row():
    rng = np.random.default_rng(1)
    W = rng.uniform(-0.3, 0.3, (12, 7)).astype(np.float32)
    W[4] = 0  # an all-zero row: scale 0 and zeros
    qw = fastrnn.quantize_weight(W)
    assert isinstance(qw, fastrnn.QuantizedWeight) and qw.shape == (12, 7) and qw.ndim == 2
    assert qw.q.dtype == np.int8 and qw.scale.dtype == np.float32 and qw.scale.shape == (12,)
    assert qw.scale[4] == 0 and not qw.q[4].any()
    amax = np.abs(W).max(axis=1)
    np.testing.assert_array_equal(qw.scale, amax / np.float32(127))
    with np.errstate(divide="ignore", invalid="ignore"):
        want = np.clip(np.rint(W * (np.float32(127) / amax)[:, None]), -127, 127)
    want[4] = 0
    np.testing.assert_array_equal(qw.q, want)
    # dequantize: q * scale, within half a step of W.
    deq = qw.dequantize()
    assert deq.dtype == np.float32
    np.testing.assert_array_equal(deq, qw.q.astype(np.float32) * qw.scale[:, None])
    assert (np.abs(deq - W) <= 0.5 * qw.scale[:, None] * (1 + 1e-5)).all()
    # float64 is rounded to float32 first; a QuantizedWeight passes through.
    assert fastrnn.quantize_weight(W.astype(np.float64)) == qw
    assert fastrnn.quantize_weight(qw) is qw


def test_quantized_weight_is_read_only_and_compares_by_value():
    W = np.random.default_rng(2).standard_normal((5, 3)).astype(np.float32)
    qw = fastrnn.quantize_weight(W)
    for a in (qw.q, qw.scale):
        with pytest.raises(ValueError, match="read-only"):
            a[0] = 1
    same = fastrnn.QuantizedWeight(qw.q.copy(), qw.scale.copy())
    assert same == qw and not same != qw and same is not qw
    assert fastrnn.QuantizedWeight(qw.q, qw.scale * 2) != qw
    with pytest.raises(TypeError):
        hash(qw)
    # The constructor takes its own copies: changing the arrays given changes nothing.
    q, s = qw.q.copy(), qw.scale.copy()
    made = fastrnn.QuantizedWeight(q, s)
    q[:] = 0
    s[:] = 0
    assert made == qw
    assert "QuantizedWeight" in repr(qw) and "(5, 3)" in repr(qw)
    # Immutable for good, so the kernels may keep packed forms of it: the
    # arrays cannot be rebound, nor made writable again.
    for name in ("q", "scale"):
        with pytest.raises(AttributeError):
            setattr(qw, name, np.zeros_like(getattr(qw, name)))
        with pytest.raises(ValueError):
            getattr(qw, name).flags.writeable = True


@pytest.mark.parametrize("q, scale, error, says", [
    (np.array([[-128, 1]], np.int8), [1.0], ValueError, r"\[-127, 127\]"),
    (np.array([[1, 1]], np.int8), [1.0, 2.0], ValueError, r"scale must have shape \(rows,\)"),
    (np.array([[1, 1]], np.int16), [1.0], TypeError, "must be an int8 matrix"),
    (np.array([1, 1], np.int8), [1.0], TypeError, "must be an int8 matrix"),
])
def test_quantized_weight_constructor_checks(q, scale, error, says):
    with pytest.raises(error, match=says):
        fastrnn.QuantizedWeight(q, scale)


@pytest.mark.parametrize("W, error, says", [
    (np.array([[1, 2], [np.nan, 1]], np.float32), ValueError, "row 1 holds an inf or a NaN"),
    (np.array([[1, np.inf]], np.float64), ValueError, "row 0 holds an inf or a NaN"),
    pytest.param(np.array([[1e300, 0]]), ValueError, "finite",  # inf in float32
                 marks=pytest.mark.filterwarnings("ignore:overflow encountered in cast")),
    (np.ones((2, 2), np.int32), TypeError, "float32 or float64"),
    (np.ones(3, np.float32), ValueError, "must be a matrix"),
])
def test_quantize_weight_refuses(W, error, says):
    with pytest.raises(error, match=says):
        fastrnn.quantize_weight(W)


def test_int_products_are_exact():
    # The largest sums there are: 127 * 127 * K, exact (no int16 pairs, no float).
    K = 4099
    full = np.full((2, K), 127, np.int8)
    full[1] = -127
    got = int_products(full, full)
    assert got.dtype == np.int64
    assert got.tolist() == [[127 * 127 * K, -127 * 127 * K], [-127 * 127 * K, 127 * 127 * K]]
    rng = np.random.default_rng(3)
    qa, qw = (rng.integers(-127, 128, (4, 300)).astype(np.int8) for _ in range(2))
    want = [[sum(int(a) * int(w) for a, w in zip(ra, rw)) for rw in qw] for ra in qa]
    assert int_products(qa, qw).tolist() == want


def test_int8_matmul_is_a_product_within_the_quantization_error():
    rng = np.random.default_rng(4)
    K = 64
    a = rng.standard_normal((9, K)).astype(np.float32)
    W = rng.uniform(-1 / 8, 1 / 8, (20, K)).astype(np.float32)
    qw = fastrnn.quantize_weight(W)
    got = int8_matmul(a, qw)
    assert got.dtype == np.float32 and got.shape == (9, 20)
    assert np.array_equal(int8_matmul(a, W), got)  # float weights are quantized first
    # |a.w - qa.qw sa sw| <= sum_k |a_k| sw/2 + |w_k| sa/2 + sa sw/4
    sa = np.abs(a).max(axis=1)[:, None] / 127
    sw = qw.scale[None, :]
    bound = (np.abs(a).sum(1)[:, None] * sw / 2 + np.abs(W).sum(1)[None, :] * sa / 2
             + K * sa * sw / 4) * (1 + 1e-4)
    err = np.abs(got - a.astype(np.float64) @ W.T.astype(np.float64))
    assert (err <= bound).all()
    assert err.max() > 1e-4  # and it is quantized: not float32's product


# ---- the kernels' products, bit for bit -----------------------------------

def _adversarial_rows(rng, K):
    """Operand rows for the kernels' products: random of several scales,
    zeros, below 2**-120 and at it, huge, inf and NaN, every value at +-amax
    (the largest integer sums, which 16-bit pair sums would saturate), and
    ties to even."""
    rows = [rng.standard_normal(K) * s for s in (1e-3, 1, 1e3)]
    rows += [np.zeros(K), np.full(K, 2.0 ** -121),
             np.full(K, 2.0 ** -120) * rng.choice([-1, 1], K), rng.standard_normal(K) * 1e30,
             np.full(K, 3.0), np.full(K, -3.0), np.where(np.arange(K) % 2, 127.0, -127.0)]
    # amax 127, so 127 / amax = 1: these halves are ties for rint.
    rows.append(np.resize([127, 0.5, 1.5, 2.5, -0.5, -1.5, -126.5], K))
    nan, inf = rng.standard_normal(K), rng.standard_normal(K)
    nan[K // 2] = np.nan
    inf[-1] = -np.inf
    rows += [nan, inf]
    return np.array(rows, np.float32)


@pytest.mark.parametrize("rows, K, N", [(1, 1, 1), (3, 5, 7), (17, 31, 33), (70, 64, 48),
                                        (5, 257, 16), (2, 1000, 3), (130, 100, 257)])
@pytest.mark.parametrize("cell", CELLS)
def test_int8_products_match_the_numpy_definition(tiles, cell, rows, K, N):
    """``_int8_product``: the engine's quantization, packed panels, tiles and
    rescaling on ``a @ W.T`` give fastrnn.quantization.int8_matmul bit for
    bit, NaN rows included (the same NaN), on every tile path."""
    level, _ = tiles
    kernels = importlib.import_module(f"fastrnn.kernels.{cell}_cython_{level}")
    rng = np.random.default_rng(rows * K + N)
    a = (rng.standard_normal((rows, K)) * rng.uniform(1e-2, 1e2, (rows, 1))).astype(np.float32)
    a = np.concatenate([a, _adversarial_rows(rng, K)])
    W = rng.uniform(-1, 1, (N, K)).astype(np.float32)
    W[0] = 0  # a row of scale 0
    if N > 2:
        W[1] = 1  # every weight 127: with the +-amax rows, the largest sums
    qw = fastrnn.quantize_weight(W)
    got = kernels._int8_product(a, qw)
    with np.errstate(over="ignore"):  # 1e30 rows: products past float32's range are inf
        want = int8_matmul(a, qw)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.isnan(want).any() and np.isfinite(want).any()  # the check sees both
    differ = np.flatnonzero((got.view(np.uint32) != want.view(np.uint32)).any(axis=1))
    assert differ.size == 0, f"rows {differ[:5]} differ: {got[differ[0]]} != {want[differ[0]]}"


# ---- the forward ----------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: SHAPE_IDS(*s))
@pytest.mark.parametrize("cell", CELLS)
def test_kernels_match_the_int8_reference(level, cell, shape, kernel_path, int8_chunks):
    T, B, I, H = shape
    lengths = _lengths(T, B)
    problem = random_problem(T, B, I, H, np.float32, cell=cell, seed=H, lengths=lengths)
    # Step by step from the kernel's own states: tight.
    _check_steps(cell, problem, lengths)
    # The whole sequence, against the int8 reference and against float64.
    got = _int8(cell, problem, "cython")
    _check(got, _int8(cell, problem), INT8_SEQUENCE_VS_REFERENCE, "the int8 reference")
    _check_float64(cell, got, forward(cell, as_float64(problem), training=False)[0])


RNN_RELU = dict(nonlinearity="relu")
OPTIONS = {  # id: (cell, random_problem's keywords, the forward's options)
    "rnn-relu": ("rnn", {}, RNN_RELU),
    "rnn-no-bias": ("rnn", dict(bias=(False, False)), {}),
    "lstm-peepholes": ("lstm", dict(extras=["W_ch"]), {}),
    "lstm-peepholes-zero-states": ("lstm", dict(extras=["W_ch"], h0=False), {}),
    "lstm-b_ih-only": ("lstm", dict(bias=(True, False)), {}),
    "gru-b_hh-only": ("gru", dict(bias=(False, True)), {}),
    "gru-zero-state-no-bias": ("gru", dict(h0=False, bias=(False, False)), {}),
}


@pytest.mark.parametrize("cell, kwargs, options", OPTIONS.values(), ids=OPTIONS)
def test_options_match_the_int8_reference(cell, kwargs, options, kernel_path, int8_chunks):
    """Peepholes, no biases or one, zero initial states (None), relu."""
    T, B, I, H = 8, 5, 7, 19
    lengths = _lengths(T, B)
    problem = random_problem(T, B, I, H, np.float32, cell=cell, seed=7, lengths=lengths,
                             **kwargs)
    _check_steps(cell, problem, lengths, **options)
    got = _int8(cell, problem, "cython", **options)
    _check(got, _int8(cell, problem, **options), INT8_SEQUENCE_VS_REFERENCE,
           "the int8 reference")


@needs_cython
@pytest.mark.parametrize("cell", CELLS)
def test_sequences_of_length_zero_keep_their_initial_states(cell):
    T, B = 5, 4
    problem = random_problem(T, B, 6, 9, np.float32, cell=cell, seed=5,
                             lengths=np.array([0, T, 0, 2]))
    for backend in ("cython", "reference"):
        got = _int8(cell, problem, backend)
        assert not got["out"][:, [0, 2]].any() and not got["out"][2:, 3].any()
        for s0, s_n in zip(CELLS[cell].initial, CELLS[cell].finals):
            np.testing.assert_array_equal(got[s_n][[0, 2]], problem[s0][[0, 2]])
    empty = _int8(cell, {**problem, "lengths": np.zeros(B, np.int64)}, "cython")
    assert not empty["out"].any()
    for s0, s_n in zip(CELLS[cell].initial, CELLS[cell].finals):
        np.testing.assert_array_equal(empty[s_n], problem[s0])


@pytest.mark.parametrize("cell", CELLS)
def test_amx_and_vnni_tiles_give_the_same_forward(cell, kernel_path, int8_chunks, restore_level):
    """The same integer sums on AMX tiles as on vpdpbusd, rescaled alike:
    the whole forward bit for bit.  B = 70: more rows than a block of 64
    and than a tile's 16; I = 100: two AMX blocks of 64 bytes."""
    level = next((lv for lv, on, _ in TILE_PATHS if on), None)
    if level is None:
        pytest.skip("the int8 products do not run on AMX here")
    fastrnn.set_isa_level(level)
    for T, B, I, H in [(4, 70, 100, 20), (5, 3, 31, 257), (6, 17, 5, 33)]:
        problem = random_problem(T, B, I, H, np.float32, cell=cell, seed=B,
                                 lengths=_lengths(T, B))
        on = _int8(cell, problem, "cython")
        with _amx(level, False):
            off = _int8(cell, problem, "cython")
        for name in on:
            np.testing.assert_array_equal(on[name], off[name], err_msg=name)


LAYOUTS = {  # the engine's threads, its batch split (fastrnn._testing.engine_layout)
    # and the row groups' steps and most groups a claim (the kernels' _set_groups)
    "one thread": (1, -1, (8, 0)),
    "units": (3, 0, (8, 0)),
    "fixed row shares": (3, 2, (8, 0)),
    "row groups": (3, 1, (8, 0)),
    "row groups one at a time for a phase": (3, 1, (1, 1)),
}


@contextlib.contextmanager
def _row_groups(steps, most):
    modules = [m for level in LEVELS for m in _modules(level)]
    for m in modules:
        m._set_groups(steps, most)
    try:
        yield
    finally:
        for m in modules:
            m._set_groups(8, 0)


@needs_cython
@pytest.mark.parametrize("cell", CELLS)
def test_row_groups_give_the_same_forward(level, cell, int8_chunks):
    """Under the batch split int8's threads hand groups of rows over to one
    another (kernels/engine.h, "row groups"): the forward is the same bit
    for bit on one thread, on three in fixed shares of the rows, with the
    groups, and with the groups taken one at a time for one phase (as many
    hand-overs as there can be)."""
    for T, B, I, H in [(20, 17, 5, 33), (9, 8, 31, 20), (11, 40, 3, 7)]:
        problem = random_problem(T, B, I, H, np.float32, cell=cell, seed=B,
                                 lengths=_lengths(T, B))
        results = {}
        for name, (threads, split, groups) in LAYOUTS.items():
            with engine_layout(threads, split), _row_groups(*groups):
                results[name] = _int8(cell, problem, "cython")
        for name, got in results.items():
            for out in got:
                np.testing.assert_array_equal(got[out], results["one thread"][out],
                                              err_msg=f"{name}: {out}")


@needs_cython
@pytest.mark.parametrize("cell", CELLS)
def test_int8_differs_from_float32_by_the_quantization(cell):
    """The mode is on: its result is not float32's (by more than the step
    bound, which the kernel keeps to the int8 reference)."""
    problem = random_problem(20, 4, 16, 32, np.float32, cell=cell, seed=3)
    for backend in ("cython", "reference"):
        int8 = _int8(cell, problem, backend)
        f32, _ = forward(cell, problem, backend, training=False)
        assert np.abs(int8["out"] - f32["out"]).max() > 1e-3


# The float64 runs, made once for every level.
@functools.lru_cache(maxsize=None)
def _float64_run(cell, T):
    problem = random_problem(T, 16, 64, 64, np.float32, cell=cell, seed=T)
    return problem, forward(cell, as_float64(problem), training=False)[0]


@pytest.mark.parametrize("T", [16, 256, 4096])
@pytest.mark.parametrize("cell", CELLS)
def test_int8_error_against_float64(level, cell, T):
    """The documented bound (INT8_VS_FLOAT64) at B = 16, I = H = 64,
    PyTorch's initialisation, over short and long sequences."""
    problem, exact = _float64_run(cell, T)
    got = _int8(cell, problem, "cython")
    errors = [scaled_error(got[name], exact[name]) for name in exact]
    worst = max(err / scale for err, scale in errors)
    print(f"int8 against float64: {cell} T={T} {level}: {worst:.2e}")
    _check_float64(cell, got, exact)


# ---- zeros, huge values, inf and NaN ------------------------------------

@pytest.mark.parametrize("cell", CELLS)
def test_zero_rows_give_the_reference(level, cell, kernel_path):
    """Rows of zeros (scale 0) in x and in h0, and zero weight rows."""
    T, B, I, H = 5, 4, 9, 11
    problem = random_problem(T, B, I, H, np.float32, cell=cell, seed=9)
    problem["x"][:, 1] = 0  # a sequence of zeros
    problem["x"][2] = 0  # a step of zeros
    for name in CELLS[cell].initial:
        problem[name][[0, 1]] = 0  # zero states: h_{t-1} rows of scale 0 at step 0
    problem["W_hh"][:H] = 0  # a gate block of zero rows: scale 0
    assert (fastrnn.quantize_weight(problem["W_hh"]).scale[:H] == 0).all()
    got = _int8(cell, problem, "cython")
    assert all(np.isfinite(v).all() for v in got.values())
    _check_steps(cell, problem)
    _check(got, _int8(cell, problem), INT8_SEQUENCE_VS_REFERENCE, "the int8 reference")
    # All zeros and no biases: every product 0 (scale 0), every state and output 0.
    zeros = {**problem, "x": np.zeros_like(problem["x"]), "b_ih": None, "b_hh": None,
             **{name: np.zeros_like(problem[name]) for name in CELLS[cell].initial}}
    for backend in ("cython", "reference"):
        for name, value in _int8(cell, zeros, backend).items():
            np.testing.assert_array_equal(value, 0, err_msg=f"{backend} {name}")


@pytest.mark.parametrize("cell", CELLS)
def test_huge_inputs_give_finite_reference_results(level, cell, kernel_path):
    """x of 1e30 (finite): the products are huge, the gates saturate, the
    outputs are finite and the reference's."""
    T, B, I, H = 6, 3, 7, 10
    problem = random_problem(T, B, I, H, np.float32, cell=cell, seed=11)
    problem["x"][:, 0] *= np.float32(1e30)
    problem["x"][3, 2, 4] = -1e30
    got = _int8(cell, problem, "cython")
    assert all(np.isfinite(v).all() for v in got.values())
    _check_steps(cell, problem)
    _check(got, _int8(cell, problem), INT8_SEQUENCE_VS_REFERENCE, "the int8 reference")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("cell", CELLS)
def test_inf_or_nan_in_x_gives_nan_in_its_sequence(level, cell, kernel_path, bad):
    """A non-finite x value quantizes its row with the scale NaN: from that
    step on its sequence's outputs and final states are NaN, every unit (never
    a finite wrong number, never a crash); the other sequences, and one whose
    bad value comes past its length, are untouched.  Kernel and reference
    alike."""
    T, B, I, H = 6, 4, 5, 7
    lengths = np.array([T, T, 2, T])
    problem = random_problem(T, B, I, H, np.float32, cell=cell, seed=13, lengths=lengths)
    clean = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in problem.items()}
    problem["x"][2, 0, 1] = bad  # sequence 0 from step 2
    problem["x"][T - 1, 1, I - 1] = bad  # sequence 1 at its last step
    problem["x"][4, 2, 0] = bad  # sequence 2, past its length (2)
    want = _int8(cell, clean)
    for backend in ("reference", "cython"):
        got = _int8(cell, problem, backend)
        out = got["out"]
        assert np.isnan(out[2:, 0]).all() and np.isnan(out[T - 1, 1]).all(), backend
        for name in CELLS[cell].finals:
            assert np.isnan(got[name][:2]).all(), f"{backend} {name}"
            assert np.isfinite(got[name][2:]).all(), f"{backend} {name}"
        assert np.isfinite(out[:2, 0]).all() and np.isfinite(out[:T - 1, 1]).all()
        assert np.isfinite(out[:, 2:]).all()
        # Before the bad value, and in the other sequences, as without it.
        np.testing.assert_allclose(out[:2, 0], want["out"][:2, 0], rtol=0,
                                   atol=INT8_SEQUENCE_VS_REFERENCE)
        np.testing.assert_allclose(out[:T - 1, 1], want["out"][:T - 1, 1], rtol=0,
                                   atol=INT8_SEQUENCE_VS_REFERENCE)
        np.testing.assert_allclose(out[:, 2:], want["out"][:, 2:], rtol=0,
                                   atol=INT8_SEQUENCE_VS_REFERENCE)
    # The kernel's finite values are the reference's, and its NaNs in the same places.
    ref, kernel = _int8(cell, problem), _int8(cell, problem, "cython")
    for name in ref:
        np.testing.assert_array_equal(np.isnan(kernel[name]), np.isnan(ref[name]))
        np.testing.assert_allclose(kernel[name], ref[name], rtol=0,
                                   atol=INT8_SEQUENCE_VS_REFERENCE)


# ---- QuantizedWeights: passing them, their cached panels -----------------

@needs_cython
@pytest.mark.parametrize("cell", CELLS)
def test_quantized_weights_select_int8_and_give_the_same_results(cell):
    problem = random_problem(7, 3, 6, 13, np.float32, cell=cell, seed=17)
    quantized = {**problem, "W_ih": fastrnn.quantize_weight(problem["W_ih"]),
                 "W_hh": fastrnn.quantize_weight(problem["W_hh"])}
    for backend in ("cython", "reference"):
        # compute_dtype is implied; float weights are quantized by the call alike.
        implied, _ = forward(cell, quantized, backend, training=False)
        named = _int8(cell, quantized, backend)
        from_floats = _int8(cell, problem, backend)
        for name in implied:
            np.testing.assert_array_equal(implied[name], named[name])
            np.testing.assert_array_equal(implied[name], from_floats[name])


@needs_cython
@pytest.mark.parametrize("cell", CELLS)
def test_cached_panels_give_identical_results(cell, restore_level):
    """The kernels keep each QuantizedWeight's packed panels on it, one per
    layout: one weight used again, at every level and tile path in turn (and
    back), gives what a fresh one gives, bit for bit."""
    problem = random_problem(5, 3, 37, 70, np.float32, cell=cell, seed=19)
    shared = {**problem, "W_ih": fastrnn.quantize_weight(problem["W_ih"]),
              "W_hh": fastrnn.quantize_weight(problem["W_hh"])}
    first = _int8(cell, shared, "cython")
    assert shared["W_hh"]._panels  # packed and kept
    again = _int8(cell, shared, "cython")
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    for level, on, _ in TILE_PATHS + TILE_PATHS[::-1]:
        fastrnn.set_isa_level(level)
        with _amx(level, on):
            fresh = {**problem, "W_ih": fastrnn.quantize_weight(problem["W_ih"]),
                     "W_hh": fastrnn.quantize_weight(problem["W_hh"])}
            reused, new = _int8(cell, shared, "cython"), _int8(cell, fresh, "cython")
            for name in new:
                np.testing.assert_array_equal(reused[name], new[name], err_msg=f"{level} {on}")


@needs_cython
def test_used_weights_copy_and_pickle():
    """A QuantizedWeight that the kernels have packed copies and pickles as
    its values (read-only again, without the packed forms), and the copy
    gives the same forward."""
    cell = "lstm"
    problem = random_problem(4, 2, 9, 12, np.float32, cell=cell, seed=23)
    used = {**problem, "W_ih": fastrnn.quantize_weight(problem["W_ih"]),
            "W_hh": fastrnn.quantize_weight(problem["W_hh"])}
    first = _int8(cell, used, "cython")
    assert used["W_hh"]._panels
    for copied in (copy.deepcopy(used["W_hh"]), copy.copy(used["W_hh"]),
                   pickle.loads(pickle.dumps(used["W_hh"]))):
        assert copied == used["W_hh"] and copied is not used["W_hh"] and not copied._panels
        with pytest.raises(ValueError):
            copied.q[0, 0] = 1
        again = _int8(cell, {**used, "W_hh": copied}, "cython")
        for name in first:
            np.testing.assert_array_equal(first[name], again[name])


@pytest.mark.parametrize("backend", ["numpy", "cython"])
@pytest.mark.parametrize("quantized", [False, True], ids=["float-weights", "quantized"])
@pytest.mark.parametrize("cell", CELLS)
def test_inputs_are_not_modified(backend, cell, quantized):
    if backend not in fastrnn.available_backends():
        pytest.skip(f"{backend} unavailable")
    problem = random_problem(6, 3, 5, 7, np.float32, cell=cell, lengths=[6, 0, 4],
                             extras=["W_ch"] if cell == "lstm" else ())
    if quantized:
        problem["W_ih"] = fastrnn.quantize_weight(problem["W_ih"])
        problem["W_hh"] = fastrnn.quantize_weight(problem["W_hh"])
    copies = {k: (v.copy() if isinstance(v, np.ndarray) else
                  QuantizedWeight(v.q, v.scale) if isinstance(v, QuantizedWeight) else v)
              for k, v in problem.items()}
    problem["x"].flags.writeable = False  # read-only x is fine too
    fn = getattr(fastrnn, f"{cell}_forward")
    fn(**problem, training=False, compute_dtype="int8", backend=backend)
    for k, v in copies.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(problem[k], v, err_msg=k)
        elif isinstance(v, QuantizedWeight):
            assert problem[k] == v and not problem[k].q.flags.writeable
            assert not problem[k].scale.flags.writeable


@needs_cython
def test_strided_and_fortran_arrays_give_the_same_results():
    problem = random_problem(5, 3, 6, 7, np.float32, cell="gru", seed=3)
    base = _int8("gru", problem, "cython")
    wide = np.zeros((5, 3, 12), np.float32)
    wide[:, :, ::2] = problem["x"]
    other = {**problem, "x": wide[:, :, ::2], "W_ih": np.asfortranarray(problem["W_ih"]),
             "h0": np.asfortranarray(problem["h0"])}
    got = _int8("gru", other, "cython")
    for name in base:
        np.testing.assert_array_equal(got[name], base[name])


# ---- refusals -------------------------------------------------------------

def _quantized(problem):
    return {**problem, "W_ih": fastrnn.quantize_weight(problem["W_ih"]),
            "W_hh": fastrnn.quantize_weight(problem["W_hh"])}


REFUSED = [  # (id, cell, change to the problem, keywords, error, message)
    ("training", "lstm", None, dict(training=True, compute_dtype="int8"), ValueError,
     "inference only"),
    ("training-by-default", "gru", None, dict(compute_dtype="int8"), ValueError,
     "inference only"),
    ("quantized-training", "rnn", _quantized, dict(training=True), ValueError, "inference only"),
    ("float64", "lstm", as_float64, dict(compute_dtype="int8"), ValueError,
     "needs float32 arrays"),
    # The weights are float32 (int8 and float32 scales), x float64: x is what to change.
    ("float64-quantized", "lstm", lambda p: _quantized(as_float64(p)), {}, TypeError,
     "x has dtype float64"),
    ("only-W_ih", "gru", lambda p: {**p, "W_ih": fastrnn.quantize_weight(p["W_ih"])}, {},
     TypeError, "W_hh must be a QuantizedWeight too"),
    ("only-W_hh", "rnn", lambda p: {**p, "W_hh": fastrnn.quantize_weight(p["W_hh"])}, {},
     TypeError, "W_ih must be a QuantizedWeight too"),
    ("quantized-bfloat16", "lstm", _quantized, dict(compute_dtype="bfloat16"), ValueError,
     "run int8 compute only"),
    ("quantized-float32", "gru", _quantized, dict(compute_dtype="float32"), ValueError,
     "run int8 compute only"),
    ("projection", "lstm", lambda p: {**p, "W_hr": np.ones((5, 5), np.float32)},
     dict(compute_dtype="int8"), ValueError, "does not run the lstm cell with W_hr"),
    ("projection-quantized", "lstm",
     lambda p: _quantized({**p, "W_hr": np.ones((5, 5), np.float32)}), {}, ValueError,
     "does not run the lstm cell with W_hr"),
    ("reset-before", "gru", None, dict(compute_dtype="int8", reset_after=False), ValueError,
     "does not run the gru cell with reset_after=False"),
    ("wrong-shape", "lstm",
     lambda p: {**_quantized(p), "W_ih": fastrnn.quantize_weight(np.ones((20, 4), np.float32))},
     {}, ValueError, r"W_ih must have shape \(4\*H, I\)"),
]


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("name, cell, change, kwargs, error, says", REFUSED,
                         ids=[r[0] for r in REFUSED])
def test_refused(name, cell, change, kwargs, error, says, backend):
    if backend not in fastrnn.available_backends():
        pytest.skip(f"{backend} unavailable")
    problem = random_problem(4, 2, 3, 5, np.float32, cell=cell)
    problem = change(problem) if change else problem
    kwargs = {"training": False, **kwargs}
    if name == "training-by-default":
        del kwargs["training"]  # the functions' default: training=True
    with pytest.raises(error, match=says):
        getattr(fastrnn, f"{cell}_forward")(**problem, **kwargs, backend=backend)
    with pytest.raises(error, match=says):  # the reference, likewise
        getattr(R, f"{cell}_forward")(**problem, **kwargs)


@pytest.mark.parametrize("quantized", [False, True], ids=["float-weights", "quantized"])
def test_numba_is_refused(quantized):
    if "numba" not in fastrnn.available_backends():
        pytest.skip("numba unavailable")
    problem = random_problem(4, 2, 3, 5, np.float32, cell="lstm")
    problem = _quantized(problem) if quantized else problem
    with pytest.raises(ValueError, match="runs on the cython backend"):
        fastrnn.lstm_forward(**problem, training=False, compute_dtype="int8", backend="numba")
