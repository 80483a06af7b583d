"""User-written cells (fastrnn.cells.Cell) on every backend.

The example cells of examples/cells (GRU, peephole LSTM, minGRU) are held to
independent results: the built-in cells' reference (fastrnn.reference) for
the GRU and the peephole LSTM, a hand-written NumPy loop and finite
differences for minGRU; forward and every gradient, float32 and float64,
with lengths (0 and T among them) and initial states.  Then: shapes awkward
for the Cython engine (1 unit, 1 row, odd sizes, T*B past its packed-path
and chunk thresholds) and its threaded layouts; cells of 1, 2 and 5 gates;
inference (training=False); inputs left as they were; the gradient check and
the input it names; Numba's compile errors; bad descriptions and bad calls;
Python threads running several cells at once; the cells' layers
(cell.layer); and that importing fastrnn leaves Numba unimported.


Numba compiles a cell once per process, dtype and backend (1-3 s), so the
cells live at module level and most tests run in float64.
"""
import importlib
import importlib.util
import pathlib
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastrnn
from fastrnn import reference
from fastrnn.cells import Cell, CellCompileError, CellLayers, GradientCheckError, sigmoid, tanh

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


def _example(name):
    """examples/cells/<name>.py, imported under a name of its own (``gru``
    alone could be any module)."""
    spec = importlib.util.spec_from_file_location(f"cell_example_{name}",
                                                  ROOT / "examples" / "cells" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GRU_EXAMPLE, PEEPHOLE_EXAMPLE, MIN_GRU_EXAMPLE = map(_example, ("gru", "peephole_lstm", "min_gru"))
GRU, PEEPHOLE, MIN_GRU = GRU_EXAMPLE.GRU, PEEPHOLE_EXAMPLE.PEEPHOLE_LSTM, MIN_GRU_EXAMPLE.MIN_GRU
EXAMPLE_CELLS = {"gru": GRU, "peephole_lstm": PEEPHOLE, "min_gru": MIN_GRU}


# ---- helpers ------------------------------------------------------------------------------

def _problem(cell, T, B, I, H, dtype=np.float64, seed=0):  # noqa: E741
    """Keyword arguments of ``cell.forward``, every input given and random,
    and the upstream gradients (d_out, d_<state>_n, ...)."""
    rng = np.random.default_rng(seed)
    k = 1 / np.sqrt(H)

    def normal(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)

    def uniform(*shape):
        return rng.uniform(-k, k, shape).astype(dtype)

    GH = cell.G * H
    args = {"x": normal(T, B, I)}
    args.update((name, normal(B, H, scale=0.5)) for name in cell.initial)
    args.update(W_ih=uniform(GH, I), b_ih=uniform(GH))
    if cell.recurrent:
        args.update(W_hh=uniform(GH, H), b_hh=uniform(GH))
    args.update((name, normal(H, scale=0.5)) for name in cell.params)
    upstream = (normal(T, B, H),) + tuple(normal(B, H) for _ in cell.states)
    return args, upstream


def _lengths(T, B, seed=0):
    """(B,) lengths in 0..T, with T first and 0 last where B allows both."""
    lengths = np.random.default_rng(seed).integers(0, T + 1, B)
    if B > 0:
        lengths[0] = T
    if B > 1:
        lengths[-1] = 0
    return lengths


def _float64(arrays):
    """A dict or tuple of arrays in float64 (for the references)."""
    if isinstance(arrays, dict):
        return {k: v.astype(np.float64) for k, v in arrays.items()}
    return tuple(v.astype(np.float64) for v in arrays)


def _ran_on(cell, backend, x):
    """The backend a call really runs on: the Cython engine runs recurrent
    cells of up to 4 gates over at least one step and row, Numba the rest."""
    engine = cell.recurrent and cell.G <= 4 and min(x.shape[:2]) > 0
    return "numba" if backend == "cython" and not engine else backend


def _run(cell, args, upstream, backend, lengths=None):
    """Forward then backward: (out, states_n, grads)."""
    out, *states, cache = cell.forward(**args, lengths=lengths, backend=backend)
    assert cache.backend == _ran_on(cell, backend, np.asarray(args["x"]))
    return out, tuple(states), cell.backward(*upstream, cache=cache)


def _assert_close(got, want, dtype, name):
    """``got`` against the float64 ``want``, within TOL relative to max(1, |want|)."""
    assert got is not None, f"{name}: None"
    assert got.dtype == dtype, f"{name}: dtype {got.dtype}, expected {np.dtype(dtype)}"
    assert got.shape == want.shape, f"{name}: shape {got.shape}, expected {want.shape}"
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    err = float(np.max(np.abs(got.astype(np.float64) - want), initial=0.0))
    assert err <= TOL[np.dtype(dtype)] * scale, f"{name}: max error {err:.3g} (scale {scale:.3g})"


def _assert_results_close(got, want, dtype):
    """Two runs' (out, states_n, grads) within TOL (``want`` any float dtype)."""
    (out, states, grads), (out0, states0, grads0) = got, want
    _assert_close(out, out0.astype(np.float64), dtype, "out")
    for i, (a, b) in enumerate(zip(states, states0)):
        _assert_close(a, b.astype(np.float64), dtype, f"state {i}")
    for name, a, b in zip(grads._fields, grads, grads0):
        _assert_close(a, b.astype(np.float64), dtype, name)


def _assert_results_equal(got, want):
    """Two runs' (out, states_n, grads), element by element, bit for bit."""
    (out, states, grads), (out0, states0, grads0) = got, want
    np.testing.assert_array_equal(out, out0)
    for a, b in zip(states + tuple(grads), states0 + tuple(grads0)):
        np.testing.assert_array_equal(a, b)


# ---- against the built-in cells -----------------------------------------------------------

def _check_gru(backend, dtype, T, B, I, H, seed=0):  # noqa: E741
    """The user GRU against fastrnn.reference.gru_forward / gru_backward."""
    args, upstream = _problem(GRU, T, B, I, H, dtype, seed)
    lengths = _lengths(T, B, seed)
    out, (h_n,), grads = _run(GRU, args, upstream, backend, lengths)
    ref_out, ref_h_n, cache = reference.gru_forward(**_float64(args), lengths=lengths)
    ref = reference.gru_backward(*_float64(upstream), cache)
    assert grads._fields == ref._fields
    _assert_close(out, ref_out, dtype, "out")
    _assert_close(h_n, ref_h_n, dtype, "h_n")
    for name in ref._fields:
        _assert_close(getattr(grads, name), getattr(ref, name), dtype, name)


def _check_peephole(backend, dtype, T, B, I, H, seed=0):  # noqa: E741
    """The user peephole LSTM against fastrnn.reference.lstm_forward(W_ch=...)
    and lstm_backward; dW_ch against (dp_i, dp_f, dp_o)."""
    args, upstream = _problem(PEEPHOLE, T, B, I, H, dtype, seed)
    lengths = _lengths(T, B, seed)
    out, (h_n, c_n), grads = _run(PEEPHOLE, args, upstream, backend, lengths)
    a = _float64(args)
    W_ch = np.concatenate([a.pop("p_i"), a.pop("p_f"), a.pop("p_o")])
    ref_out, ref_h_n, ref_c_n, cache = reference.lstm_forward(**a, W_ch=W_ch, lengths=lengths)
    ref = reference.lstm_backward(*_float64(upstream), cache)
    for name, got, want in (("out", out, ref_out), ("h_n", h_n, ref_h_n), ("c_n", c_n, ref_c_n)):
        _assert_close(got, want, dtype, name)
    for name in ("dx", "dh0", "dc0", "dW_ih", "dW_hh", "db_ih", "db_hh"):
        _assert_close(getattr(grads, name), getattr(ref, name), dtype, name)
    for name, block in zip(("dp_i", "dp_f", "dp_o"), np.split(ref.dW_ch, 3)):
        _assert_close(getattr(grads, name), block, dtype, name)


def test_gru_cell_is_the_builtin_gru(backend, dtype):
    _check_gru(backend, dtype, T=9, B=4, I=5, H=6)


# (H, B, T, I): one unit, one row, odd sizes; T > 4 and T*B > 64 take the
# engine's packed path, T*B = 1190 several chunks of it, forward and backward.
SHAPES = [(1, 1, 1, 1), (7, 3, 5, 4), (33, 17, 70, 3), (1, 17, 70, 2), (33, 1, 70, 5),
          (7, 17, 5, 4), (33, 3, 1, 6)]


@pytest.mark.parametrize("H, B, T, I", SHAPES, ids=lambda v: str(v))
def test_gru_cell_at_awkward_shapes(fast_backend, H, B, T, I):  # noqa: E741
    _check_gru(fast_backend, np.float64, T, B, I, H, seed=H + B + T)


def test_gru_cell_at_a_packed_shape_in_float32(fast_backend):
    _check_gru(fast_backend, np.float32, T=70, B=17, I=3, H=33)


@pytest.fixture
def engine_path(kernel_path):
    """conftest's kernel_path (BLAS or the loops for Numba; the engine's
    threads and layouts for Cython), with its batch split forced on the user
    cells' engine as well (fastrnn._testing.engine_layout sets it on the
    built-in cells' modules only)."""
    split = {"serial": -1, "parallel": 0, "batch-shares": 1}[kernel_path]
    try:
        modules = [importlib.import_module(f"fastrnn.kernels.cell_cython_{level}")
                   for level in fastrnn.cpu_isa_levels()]
    except ImportError:  # not built: the Numba paths still run
        modules = []
    for m in modules:
        m._set_split(split)
    yield kernel_path
    for m in modules:
        m._set_split(-1)


@pytest.mark.parametrize("check", [_check_gru, _check_peephole], ids=["gru", "peephole_lstm"])
def test_cells_on_every_kernel_path(fast_backend, engine_path, check):
    check(fast_backend, np.float64, T=70, B=17, I=3, H=33, seed=1)


def test_peephole_cell_is_the_builtin_peephole_lstm(backend):
    _check_peephole(backend, np.float64, T=8, B=5, I=4, H=7)


def test_peephole_cell_in_float32(fast_backend):
    _check_peephole(fast_backend, np.float32, T=20, B=5, I=4, H=9, seed=2)


# ---- one, two and five gates --------------------------------------------------------------

def _elman_forward(x, r, s, p):
    return (np.tanh(x[0] + r[0]),)


def _elman_backward(x, r, s, p, d):
    da = d[0] * (1 - np.tanh(x[0] + r[0]) ** 2)
    return (da,), (da,), (0.0,), ()


def _coupled_forward(x, r, s, p):
    """A GRU without reset gate, its recurrent term of n scaled by a gain per unit."""
    z = sigmoid(x[0] + r[0])
    n = tanh(x[1] + p[0] * r[1])
    return ((1 - z) * n + z * s[0],)


def _coupled_backward(x, r, s, p, d):
    z = sigmoid(x[0] + r[0])
    n = tanh(x[1] + p[0] * r[1])
    dz = d[0] * (s[0] - n) * z * (1 - z)
    dn = d[0] * (1 - z) * (1 - n * n)
    return (dz, dn), (dz, dn * p[0]), (d[0] * z,), (dn * r[1],)


FIVE = (1.0, 0.5, -0.25, 0.125, 0.3)


def _five_forward(x, r, s, p):
    """h = tanh(sum_k FIVE[k] (x[k] + r[k])) + h_{t-1} / 2."""
    a = (FIVE[0] * (x[0] + r[0]) + FIVE[1] * (x[1] + r[1]) + FIVE[2] * (x[2] + r[2])
         + FIVE[3] * (x[3] + r[3]) + FIVE[4] * (x[4] + r[4]))
    return (np.tanh(a) + 0.5 * s[0],)


def _five_backward(x, r, s, p, d):
    a = (FIVE[0] * (x[0] + r[0]) + FIVE[1] * (x[1] + r[1]) + FIVE[2] * (x[2] + r[2])
         + FIVE[3] * (x[3] + r[3]) + FIVE[4] * (x[4] + r[4]))
    da = d[0] * (1 - np.tanh(a) ** 2)
    g = (FIVE[0] * da, FIVE[1] * da, FIVE[2] * da, FIVE[3] * da, FIVE[4] * da)
    return g, g, (0.5 * d[0],), ()


GATES = {
    "one": Cell("elman", gates=("a",), forward=_elman_forward, backward=_elman_backward),
    "two": Cell("coupled", gates=("z", "n"), params=("gain",), forward=_coupled_forward,
                backward=_coupled_backward),
    "five": Cell("five", gates=("a", "b", "c", "d", "e"), forward=_five_forward,
                 backward=_five_backward),
}


@pytest.mark.parametrize("name", GATES)
def test_cells_of_one_two_and_five_gates(fast_backend, name):
    """The examples have 2 to 4 gates; the engine sizes its tiles by the
    gates (two vectors of columns for one or two gates, G vectors from 3, at
    most 4): a cell of 5 runs on the Numba loops, and says so."""
    cell = GATES[name]
    cell.check_gradients()
    T, B = 30, 3  # 90 rows: the engine's packed path
    args, upstream = _problem(cell, T, B, 2, 5)
    lengths = _lengths(T, B)
    _assert_results_close(_run(cell, args, upstream, fast_backend, lengths),
                          _run(cell, args, upstream, "numpy", lengths), np.float64)


# ---- minGRU: no W_hh ----------------------------------------------------------------------

def _min_gru_by_hand(x, h0, W_ih, b_ih, lengths):
    """h_t = (1 - z) h_{t-1} + z h~, z = sigmoid(x_t W_z^T + b_z), h~ = x_t W_h^T + b_h."""
    T, B, _ = x.shape
    H = h0.shape[1]
    h, out = h0.copy(), np.zeros((T, B, H))
    for t in range(T):
        a = x[t] @ W_ih.T + b_ih
        z = 1 / (1 + np.exp(-a[:, :H]))
        new = (1 - z) * h + z * a[:, H:]
        going = (t < lengths)[:, None]
        h = np.where(going, new, h)
        out[t] = np.where(going, new, 0)
    return out, h


def test_min_gru_is_the_hand_written_loop_and_the_reference(backend, dtype):
    T, B, I, H = 11, 4, 3, 5  # noqa: E741
    args, upstream = _problem(MIN_GRU, T, B, I, H, dtype)
    assert set(args) == {"x", "h0", "W_ih", "b_ih"}
    lengths = _lengths(T, B)
    out, (h_n,), grads = _run(MIN_GRU, args, upstream, backend, lengths)
    want_out, want_h_n = _min_gru_by_hand(**_float64(args), lengths=lengths)
    _assert_close(out, want_out, dtype, "out")
    _assert_close(h_n, want_h_n, dtype, "h_n")
    assert grads._fields == ("dx", "dh0", "dW_ih", "db_ih")
    # The compiled backward against the reference's, which runs the user's backward on arrays.
    _, _, ref = _run(MIN_GRU, _float64(args), _float64(upstream), "numpy", lengths)
    for name in grads._fields:
        _assert_close(getattr(grads, name), getattr(ref, name), dtype, name)


def test_min_gru_gradients_are_the_hand_written_loops(dtype):
    """The reference backward (float64) against central differences of the
    hand-written loop, along a random direction of each input."""
    T, B, I, H = 7, 3, 2, 4  # noqa: E741
    args, upstream = _problem(MIN_GRU, T, B, I, H, np.float64, seed=3)
    lengths = _lengths(T, B, seed=3)
    _, _, grads = _run(MIN_GRU, args, upstream, "numpy", lengths)
    d_out, d_h_n = upstream
    rng, eps = np.random.default_rng(4), 1e-6

    def loss(a):
        out, h_n = _min_gru_by_hand(**a, lengths=lengths)
        return np.sum(out * d_out) + np.sum(h_n * d_h_n)

    for name, value in args.items():
        v = rng.standard_normal(value.shape)
        numeric = (loss({**args, name: value + eps * v})
                   - loss({**args, name: value - eps * v})) / (2 * eps)
        analytic = np.sum(getattr(grads, "d" + name) * v)
        assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric)), name


# ---- inference, inputs, None arguments ----------------------------------------------------

@pytest.mark.parametrize("name", EXAMPLE_CELLS)
def test_inference_is_the_training_forward_without_cache(backend, name):
    """T*B = 1190 rows: the engine's inference keeps a ring of steps (fewer
    than T), its training all of them."""
    cell = EXAMPLE_CELLS[name]
    args, _ = _problem(cell, 70, 17, 3, 33)
    lengths = _lengths(70, 17)
    train = cell.forward(**args, lengths=lengths, backend=backend)
    infer = cell.forward(**args, lengths=lengths, backend=backend, training=False)
    assert train[-1] is not None and infer[-1] is None
    assert len(infer) == len(train) == 2 + cell.S
    for got, want in zip(infer[:-1], train[:-1]):
        _assert_close(got, want.astype(np.float64), np.float64, name)


@pytest.mark.parametrize("name", EXAMPLE_CELLS)
def test_inputs_are_left_as_they_were(backend, name):
    """Forward and backward write to no argument; a second backward from the
    same cache gives the same gradients (the cache is not written either)."""
    cell = EXAMPLE_CELLS[name]
    args, upstream = _problem(cell, 10, 7, 3, 5)  # T*B = 70: the engine's packed path
    lengths = _lengths(10, 7).astype(np.int32)
    saved = ({k: v.copy() for k, v in args.items()}, [u.copy() for u in upstream],
             lengths.copy())
    out, *_, cache = cell.forward(**args, lengths=lengths, backend=backend)
    first = cell.backward(*upstream, cache=cache)
    second = cell.backward(*upstream, cache=cache)
    for k, v in saved[0].items():
        np.testing.assert_array_equal(args[k], v, err_msg=k)
    for u, v in zip(upstream, saved[1]):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_array_equal(lengths, saved[2])
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("T, B", [(0, 3), (4, 0)], ids=["no-steps", "no-sequences"])
def test_no_steps_or_no_sequences(backend, T, B):
    """As the built-in functions: T = 0 passes the states (and their
    gradients) through, B = 0 gives empty results and zero weight gradients."""
    if backend == "cython":  # in a process of its own, which the engine may kill
        code = (f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); import test_cells; "
                f"test_cells._check_gru('cython', test_cells.np.float64, {T}, {B}, 4, 5)")
        result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, f"exit status {result.returncode}: {result.stderr[-2000:]}"
    else:
        _check_gru(backend, np.float64, T, B, 4, 5)


def test_changing_the_output_leaves_the_gradients(backend):
    args, upstream = _problem(GRU, 6, 3, 4, 5)
    out, _, cache = GRU.forward(**args, backend=backend)
    before = GRU.backward(*upstream, cache=cache)
    if out.flags.writeable:
        out *= 0.5  # a caller's own use of its output
    for field, a, b in zip(before._fields, GRU.backward(*upstream, cache=cache), before):
        np.testing.assert_array_equal(a, b, err_msg=field)


def test_none_biases_and_parameters_are_zeros_with_none_gradients(backend):
    args, upstream = _problem(PEEPHOLE, 6, 3, 4, 5)
    zeroed = {**args, "b_hh": np.zeros_like(args["b_hh"]), "p_f": np.zeros_like(args["p_f"])}
    out0, states0, grads0 = _run(PEEPHOLE, zeroed, upstream, backend)
    out, states, grads = _run(PEEPHOLE, {**args, "b_hh": None, "p_f": None}, upstream, backend)
    assert grads.db_hh is None and grads.dp_f is None
    given = [f for f in grads._fields if f not in ("db_hh", "dp_f")]
    _assert_results_equal((out, states, [getattr(grads, f) for f in given]),
                          (out0, states0, [getattr(grads0, f) for f in given]))


# ---- the gradient check -------------------------------------------------------------------

@pytest.mark.parametrize("name", EXAMPLE_CELLS)
def test_check_gradients_passes_for_the_examples(name):
    cell = EXAMPLE_CELLS[name]
    errors = cell.check_gradients()
    assert len(errors) == cell.G * (1 + cell.recurrent) + cell.S + cell.P
    assert max(errors.values()) < 1e-5


def _gru_backward_without_z_factor(x, r, s, p, d):
    """The example GRU's backward with dz missing its factor (1 - z)."""
    reset, z = sigmoid(x[0] + r[0]), sigmoid(x[1] + r[1])
    n = tanh(x[2] + reset * r[2])
    dn = d[0] * (1 - z) * (1 - n * n)
    dz = d[0] * (s[0] - n) * z
    dreset = dn * r[2] * reset * (1 - reset)
    return (dreset, dz, dn), (dreset, dz, dn * reset), (d[0] * z,), ()


def _peephole_backward_without_dc_peepholes(x, r, s, p, d):
    """The example peephole LSTM's backward with dL/dc_{t-1} missing the
    paths through the peepholes of i and f."""
    dx, dr, (dh, dc), dp = PEEPHOLE_EXAMPLE.backward(x, r, s, p, d)
    di, df = dx[0], dx[1]
    return dx, dr, (dh, dc - di * p[0] - df * p[1]), dp


def _peephole_backward_with_wrong_dp_o(x, r, s, p, d):
    dx, dr, ds, (dp_i, dp_f, dp_o) = PEEPHOLE_EXAMPLE.backward(x, r, s, p, d)
    return dx, dr, ds, (dp_i, dp_f, 2 * dp_o)


@pytest.mark.parametrize("cell, backward, named", [
    (GRU, _gru_backward_without_z_factor, "gate 'z'"),
    (PEEPHOLE, _peephole_backward_without_dc_peepholes, "'c'"),
    (PEEPHOLE, _peephole_backward_with_wrong_dp_o, "'p_o'"),
], ids=["gate", "state", "parameter"])
def test_check_gradients_names_the_wrong_derivative(cell, backward, named):
    wrong = Cell("wrong", gates=cell.gates, states=cell.states, params=cell.params,
                 forward=cell.forward_fn, backward=backward)
    with pytest.raises(GradientCheckError, match=named) as info:
        wrong.check_gradients()
    assert "cell 'wrong'" in str(info.value)


# ---- Numba cannot compile it --------------------------------------------------------------

def _forward_with_a_dict(x, r, s, p):
    return (np.tanh(x[0] + r[0]) * len(dict(gain=1)),)  # dict(...) runs in Python only


UNCOMPILABLE = Cell("uncompilable", gates=("a",), forward=_forward_with_a_dict,
                    backward=_elman_backward)


def test_a_cell_numba_cannot_compile_names_numbas_reason(fast_backend):
    args, _ = _problem(UNCOMPILABLE, 4, 2, 3, 5)
    out = UNCOMPILABLE.forward(**args, backend="numpy")[0]
    np.testing.assert_allclose(out[0], np.tanh(args["x"][0] @ args["W_ih"].T + args["b_ih"]
                                               + args["h0"] @ args["W_hh"].T + args["b_hh"]))
    for _ in range(2):  # the same error again: nothing half-compiled is kept
        with pytest.raises(CellCompileError, match="Numba's reason") as info:
            UNCOMPILABLE.forward(**args, backend=fast_backend)
        message = str(info.value)
        assert "cell 'uncompilable'" in message and "dict()" in message, message
        assert isinstance(info.value, TypeError)


# ---- bad descriptions and bad calls -------------------------------------------------------

def _carried(x, r, s, p):  # a second state, carried along unchanged
    return np.tanh(x[0] + r[0]), s[1]


@pytest.mark.parametrize("change, error, match", [
    (dict(forward=lambda x, r, s, p: (s[0], s[0])), TypeError, "forward must return"),
    (dict(forward=lambda x, r, s, p: s[0]), TypeError, "forward must return"),
    (dict(backward=lambda x, r, s, p, d: ((d[0],), (d[0],), (d[0],))), TypeError,
     r"backward must return a tuple \(dx, dr, ds, dp\)"),
    (dict(backward=lambda x, r, s, p, d: ((d[0], d[0]), (d[0],), (d[0],), ())), TypeError,
     "dx"),
    (dict(backward=lambda x, r, s, p, d: ((d[0],), (d[0],), (d[0],), (d[0],))), TypeError,
     "dp"),
    (dict(recurrent=False, forward=lambda x, r, s, p: (np.tanh(x[0]),),
          backward=lambda x, r, s, p, d: ((d[0],), (d[0],), (0.0,), ())), TypeError, "dr"),
    (dict(gates=("a", "a")), ValueError, "distinct"),
    (dict(gates=("a b",)), ValueError, "identifiers"),
    (dict(states=("h", "class"), forward=_carried,
          backward=lambda x, r, s, p, d: ((d[0],), (d[0],), (0.0, d[1]), ())), ValueError,
     "identifiers"),
    (dict(params=("W_ih",)), ValueError, "W_ih"),
    (dict(gates=()), ValueError, "at least one"),
], ids=["forward-arity", "forward-not-tuple", "backward-arity", "backward-dx", "backward-dp",
        "non-recurrent-dr", "duplicate-gates", "gate-name", "keyword-state", "param-clash",
        "no-gates"])
def test_bad_descriptions_fail_at_construction(change, error, match):
    description = dict(gates=("a",), forward=_elman_forward, backward=_elman_backward)
    with pytest.raises(error, match=match):
        Cell("bad", **{**description, **change})


@pytest.fixture(scope="module")
def gru_call():
    """A float64 GRU problem (T, B, I, H) = (5, 3, 4, 6), its upstream
    gradients, and the cache of a minGRU's forward (another cell's)."""
    args, upstream = _problem(GRU, 5, 3, 4, 6)
    other = MIN_GRU.forward(**_problem(MIN_GRU, 5, 3, 4, 6)[0], backend="numpy")[-1]
    return args, upstream, other


def _with(args, **changes):
    return {**args, **changes}


BAD_CALLS = {  # what: (call(args, upstream, other cache), error, what the message names)
    "W_ih rows": (lambda a, u, o: GRU.forward(**_with(a, W_ih=a["W_ih"][:-1])),
                  ValueError, "W_ih"),
    "W_ih columns": (lambda a, u, o: GRU.forward(**_with(a, W_ih=a["W_ih"][:, :-1])),
                     ValueError, "W_ih"),
    "W_hh shape": (lambda a, u, o: GRU.forward(**_with(a, W_hh=a["W_hh"][:, :-1])),
                   ValueError, "W_hh"),
    "b_ih shape": (lambda a, u, o: GRU.forward(**_with(a, b_ih=a["b_ih"][:-1])),
                   ValueError, "b_ih"),
    "h0 shape": (lambda a, u, o: GRU.forward(**_with(a, h0=a["h0"][:-1])), ValueError, "h0"),
    "mixed dtypes": (lambda a, u, o: GRU.forward(**_with(
        {k: v.astype(np.float32) for k, v in a.items()}, W_hh=a["W_hh"])), TypeError, "W_hh"),
    "lengths > T": (lambda a, u, o: GRU.forward(**a, lengths=[6, 1, 1]), ValueError, "lengths"),
    "lengths < 0": (lambda a, u, o: GRU.forward(**a, lengths=[-1, 1, 1]), ValueError,
                    "lengths"),
    "missing W_hh": (lambda a, u, o: GRU.forward(a["x"], a["h0"], a["W_ih"]), TypeError,
                     "W_hh"),
    "foreign cache": (lambda a, u, o: GRU.backward(*u, cache=o), ValueError, "min_gru"),
    "no cache": (lambda a, u, o: GRU.backward(*u, cache=None), ValueError, "cache"),
    "d_states": (lambda a, u, o: GRU.backward(u[0], cache=GRU.forward(**a)[-1]), TypeError,
                 "d_h_n"),
}


@pytest.mark.parametrize("what", BAD_CALLS)
def test_bad_calls_raise_naming_the_argument(gru_call, what):
    call, error, match = BAD_CALLS[what]
    with pytest.raises(error, match=match):
        call(*gru_call)


# ---- threads ------------------------------------------------------------------------------

def _threads_job(name, backend, seed):
    """One call of a cell, forward and backward.  Two shapes (36 rows:
    BLAS's products; 135: the engine's packed path), each with data of its
    own for each seed: calls that mix up their buffers give other numbers."""
    cell = EXAMPLE_CELLS[name]
    T, B = (12, 3) if seed % 2 else (15, 9)
    args, upstream = _problem(cell, T, B, 4, 6, seed=seed)
    return _run(cell, args, upstream, backend, _lengths(T, B, seed))


def test_threads_running_different_cells_at_once():
    backends = [b for b in ("numba", "cython") if b in fastrnn.available_backends()]
    if not backends:
        pytest.skip("neither Numba nor the Cython kernels are available here")
    jobs = [(name, backend, seed) for name in EXAMPLE_CELLS for backend in backends
            for seed in range(6)]
    alone = {job: _threads_job(*job) for job in jobs}
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda job: (job, _threads_job(*job)), jobs * 4))
    for job, result in together:
        _assert_results_equal(result, alone[job])


# ---- layers -------------------------------------------------------------------------------

TORCH_NAMES = {"W_ih": "weight_ih", "W_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}


def _hx(states):
    """A cell's (B, H) states as a one-layer module passes them: (1, B, H)
    each, a tuple where there are several."""
    states = tuple(s[None] for s in states)
    return states if len(states) > 1 else states[0]


def _states(hx):
    """What a module returns as its states (an array, or a tuple of them) as a tuple."""
    return hx if isinstance(hx, tuple) else (hx,)


@pytest.mark.parametrize("name", EXAMPLE_CELLS)
def test_cell_layers_are_the_functional_api(fast_backend, name):
    """One layer: its parameters (PyTorch's names, the cell's own zero), its
    forward and backward against cell.forward / cell.backward, and its
    inference (eval) against its training forward."""
    cell = EXAMPLE_CELLS[name]
    T, B, I, H, G = 6, 4, 3, 5, cell.G  # noqa: E741
    layer = cell.layer(I, H, dtype=np.float64, seed=0, backend=fast_backend)
    assert isinstance(layer, CellLayers) and isinstance(layer, cell.Layer)
    shapes = {"W_ih": (G * H, I), "W_hh": (G * H, H), "b_ih": (G * H,), "b_hh": (G * H,)}
    names = {n: f"{TORCH_NAMES.get(n, n)}_l0" for n in cell.weights + cell.params}
    params = dict(layer.named_parameters())
    assert {k: v.shape for k, v in params.items()} == {names[n]: shapes.get(n, (H,))
                                                       for n in names}
    assert all(v.dtype == np.float64 for v in params.values())
    for n in cell.weights:
        assert 0 < np.max(np.abs(params[names[n]])) <= 1 / np.sqrt(H), n
    for n in cell.params:
        np.testing.assert_array_equal(params[names[n]], 0, err_msg=n)

    args, upstream = _problem(cell, T, B, I, H)
    layer.load_state_dict({names[n]: args[n] for n in names})
    states = tuple(args[s] for s in cell.initial)
    lengths = _lengths(T, B)
    out, hx = layer(args["x"], _hx(states), lengths)
    dx, dhx = layer.backward(upstream[0], *(u[None] for u in upstream[1:]))
    want_out, want_states, want = _run(cell, args, upstream, fast_backend, lengths)
    np.testing.assert_array_equal(out, want_out)
    for got, wanted in zip(_states(hx), want_states):
        np.testing.assert_array_equal(got, wanted[None])
    np.testing.assert_array_equal(dx, want.dx)
    for got, s in zip(_states(dhx), cell.initial):
        np.testing.assert_array_equal(got, getattr(want, "d" + s)[None], err_msg=s)
    assert set(layer.grads) == set(names.values())
    for n, k in names.items():
        np.testing.assert_array_equal(layer.grads[k], getattr(want, "d" + n), err_msg=k)
    layer.eval()
    inference_out, inference_hx = layer(args["x"], _hx(states), lengths)
    np.testing.assert_array_equal(inference_out, out)
    for got, wanted in zip(_states(inference_hx), _states(hx)):
        np.testing.assert_array_equal(got, wanted)


def test_cell_layers_without_bias_have_no_bias():
    layer = GRU.layer(3, 4, bias=False, dtype=np.float64, seed=0, backend="numpy")
    assert [k for k, _ in layer.named_parameters()] == ["weight_ih_l0", "weight_hh_l0"]
    out, _ = layer(np.ones((2, 1, 3)))
    layer.backward(np.ones_like(out))
    assert set(layer.grads) == {"weight_ih_l0", "weight_hh_l0"}


# ---- importing ----------------------------------------------------------------------------

def test_importing_fastrnn_does_not_import_numba():
    code = "import sys, fastrnn, fastrnn.cells; assert 'numba' not in sys.modules, 'numba imported'"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
