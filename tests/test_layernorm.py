"""The layer-normalised cells (LayerNorm LSTM, LayerNorm GRU): the reference
against PyTorch's autograd and against finite differences, the fast kernels
(Numba; Cython for the LSTM) against the reference (float64 and float32, awkward shapes, lengths, LayerNorm
parameters given or not, upstream gradients None), inference against
training across several chunks, empty work, the input checks, inputs left
alone, non-contiguous inputs, and which backend a call and its backward run on."""
import re

import numpy as np
import pytest

import fastrnn
from fastrnn import layernorm as LN
from fastrnn import reference as R

CELL_IDS = ["lstm", "gru"]
# The fast backends of each cell (fastrnn.layernorm.NORM_BACKENDS, less the reference).
FAST = {cell: [b for b in LN.NORM_BACKENDS["layernorm_" + cell] if b != "numpy"]
        for cell in CELL_IDS}
CELL_BACKENDS = [(cell, b) for cell in CELL_IDS for b in FAST[cell] + ["numpy"]]
CELL_FAST = [(cell, b) for cell in CELL_IDS for b in FAST[cell]]


class Cell:
    """What the tests need to know of one cell: its gate count, states,
    LayerNorm parameters (name -> width in units of H: G or 1) and functions."""

    def __init__(self, name, G, states, norms):
        self.name, self.G, self.states = name, G, states
        self.params = {f"{p}_{n}": (G if n in "ih" else 1) for n in norms
                       for p in ("gamma", "beta")}
        self.initial = tuple(s + "0" for s in states)
        self.outputs = ("out",) + tuple(s + "_n" for s in states)
        self.upstream = tuple("d_" + o for o in self.outputs)
        self.inputs = ("x",) + self.initial + ("W_ih", "W_hh") + tuple(self.params)
        self.grads = tuple("d" + n for n in self.inputs)

    def forward(self, backend, problem, **kwargs):
        """Outputs as a dict and the cache; backend "reference" calls
        fastrnn.reference, None or a name calls fastrnn with that backend."""
        if backend == "reference":
            fn, kw = getattr(R, f"layernorm_{self.name}_forward"), {}
        else:
            fn, kw = getattr(fastrnn, f"layernorm_{self.name}_forward"), {"backend": backend}
        *outs, cache = fn(**problem, **kwargs, **kw)
        return dict(zip(self.outputs, outs)), cache

    def backward(self, upstream, cache, module=fastrnn):
        fn = getattr(module, f"layernorm_{self.name}_backward")
        return fn(*[upstream.get(u) for u in self.upstream], cache)


CELLS = {"lstm": Cell("lstm", 4, ("h", "c"), "ihc"), "gru": Cell("gru", 3, ("h",), "ih")}


def make_problem(cell, T, B, I, H, dtype=np.float64, *, lengths=None, params="all", seed=0):
    """Keyword arguments of the cell's forward: random arrays of ``dtype``;
    ``params`` "all", "none" or a list of the LayerNorm parameters to give."""
    rng = np.random.default_rng(seed)
    c = CELLS[cell]
    p = {"x": rng.standard_normal((T, B, I))}
    for s in c.initial:
        p[s] = 0.5 * rng.standard_normal((B, H))
    p["W_ih"] = rng.standard_normal((c.G * H, I)) / np.sqrt(I)
    p["W_hh"] = rng.standard_normal((c.G * H, H)) / np.sqrt(H)
    given = c.params if params == "all" else () if params == "none" else params
    for name, width in c.params.items():
        base = 1.0 if name.startswith("gamma") else 0.0
        value = base + 0.3 * rng.standard_normal(width * H)
        p[name] = value if name in given else None
    p = {k: (None if v is None else v.astype(dtype)) for k, v in p.items()}
    p["lengths"] = None if lengths is None else np.asarray(lengths, np.int64)
    return p


def make_upstream(cell, T, B, H, dtype=np.float64, *, none=(), seed=1):
    rng = np.random.default_rng(seed)
    shapes = {"d_out": (T, B, H), "d_h_n": (B, H), "d_c_n": (B, H)}
    return {u: None if u in none else rng.standard_normal(shapes[u]).astype(dtype)
            for u in CELLS[cell].upstream}


def some_lengths(T, B, seed=0):
    """Lengths with a 0 (the first sequence) and T (the last, where B > 1)."""
    lengths = np.random.default_rng(seed).integers(0, T + 1, B)
    lengths[0] = 0
    if B > 1:
        lengths[-1] = T
    return lengths


def as_float64(problem):
    return {k: (v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f"
                else v) for k, v in problem.items()}


def assert_scaled_close(actual, expected, rtol, atol=0.0, name=""):
    """|actual - expected| <= rtol * max(1, max |expected|) + atol, shapes equal."""
    assert actual.shape == expected.shape, f"{name}: {actual.shape} != {expected.shape}"
    if expected.size == 0:
        return
    scale = max(1.0, float(np.max(np.abs(expected))))
    err = float(np.max(np.abs(actual.astype(np.float64) - expected)))
    assert err <= rtol * scale + atol, f"{name}: max error {err:.3g} (scale {scale:.3g})"


# ---- the reference against PyTorch's autograd ---------------------------------

def torch_lstm(x, h0, c0, W_ih, W_hh, gamma_i, beta_i, gamma_h, beta_h, gamma_c, beta_c,
               lengths, eps=1e-5):
    """PyTorch's benchmark LayerNormLSTMCell over the steps, frozen past each length."""
    import torch
    F = torch.nn.functional
    H = W_hh.shape[1]
    h, c, outs = h0, c0, []
    for t in range(x.shape[0]):
        gates = (F.layer_norm(x[t] @ W_ih.T, (4 * H,), gamma_i, beta_i, eps)
                 + F.layer_norm(h @ W_hh.T, (4 * H,), gamma_h, beta_h, eps))
        i, f, g, o = gates.chunk(4, 1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c_new = F.layer_norm(f * c + i * g, (H,), gamma_c, beta_c, eps)
        h_new = o * torch.tanh(c_new)
        running = (t < lengths)[:, None]
        h, c = torch.where(running, h_new, h), torch.where(running, c_new, c)
        outs.append(torch.where(running, h_new, torch.zeros_like(h_new)))
    return torch.stack(outs), h, c


def torch_gru(x, h0, W_ih, W_hh, gamma_i, beta_i, gamma_h, beta_h, lengths, eps=1e-5):
    import torch
    F = torch.nn.functional
    H = W_hh.shape[1]
    h, outs = h0, []
    for t in range(x.shape[0]):
        xr, xz, xn = F.layer_norm(x[t] @ W_ih.T, (3 * H,), gamma_i, beta_i, eps).chunk(3, 1)
        hr, hz, hn = F.layer_norm(h @ W_hh.T, (3 * H,), gamma_h, beta_h, eps).chunk(3, 1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h_new = (1 - z) * n + z * h
        running = (t < lengths)[:, None]
        h = torch.where(running, h_new, h)
        outs.append(torch.where(running, h_new, torch.zeros_like(h_new)))
    return torch.stack(outs), h


@pytest.mark.parametrize("cell", CELL_IDS)
def test_reference_matches_torch_autograd(cell):
    torch = pytest.importorskip("torch")
    T, B, I, H = 6, 4, 5, 7
    c = CELLS[cell]
    p = make_problem(cell, T, B, I, H, lengths=[T, 0, 3, 1], seed=3)
    ups = make_upstream(cell, T, B, H, seed=4)
    outs, cache = c.forward("reference", p)
    grads = c.backward(ups, cache, R)

    tensors = {n: torch.tensor(p[n], requires_grad=True) for n in c.inputs}
    fn = torch_lstm if cell == "lstm" else torch_gru
    touts = fn(*(tensors[n] for n in c.inputs), torch.tensor(p["lengths"]))
    loss = sum((o * torch.tensor(ups[u])).sum() for o, u in zip(touts, c.upstream))
    loss.backward()
    for name, o in zip(c.outputs, touts):
        assert_scaled_close(outs[name], o.detach().numpy(), 1e-12, name=name)
    for n, g in zip(c.inputs, c.grads):
        assert_scaled_close(getattr(grads, g), tensors[n].grad.numpy(), 1e-12, name=g)


# ---- the reference against finite differences ---------------------------------

@pytest.mark.parametrize("cell", CELL_IDS)
def test_reference_gradients_match_finite_differences(cell):
    T, B, I, H = 5, 3, 3, 4
    c = CELLS[cell]
    p = make_problem(cell, T, B, I, H, lengths=[5, 0, 2], seed=5)
    ups = make_upstream(cell, T, B, H, seed=6)

    def loss(problem):
        outs, _ = c.forward("reference", problem, training=False)
        return sum(float(np.sum(outs[o] * ups[u])) for o, u in zip(c.outputs, c.upstream))

    _, cache = c.forward("reference", p)
    grads = c.backward(ups, cache, R)
    rng = np.random.default_rng(7)
    step = 1e-6
    for n, g in zip(c.inputs, c.grads):
        analytic = getattr(grads, g)
        assert analytic.shape == p[n].shape, g
        scale = max(1.0, float(np.max(np.abs(analytic))))
        for flat in rng.choice(p[n].size, size=min(6, p[n].size), replace=False):
            idx = np.unravel_index(flat, p[n].shape)
            plus, minus = p[n].copy(), p[n].copy()
            plus[idx] += step
            minus[idx] -= step
            numeric = (loss({**p, n: plus}) - loss({**p, n: minus})) / (2 * step)
            assert abs(numeric - analytic[idx]) <= 1e-6 * scale, (g, idx, numeric,
                                                                  analytic[idx])


# ---- Numba against the reference ----------------------------------------------

SHAPES = [(1, 1, 1, 1), (5, 3, 4, 6), (7, 2, 5, 33), (3, 4, 8, 1)]
VARIANTS = {  # lengths, LayerNorm parameters given, upstream gradients None, eps
    "plain": (None, "all", (), 1e-5),
    "zero-lengths-no-params-no-d_out": ("some", "none", ("d_out",), 1e-5),
    "full-lengths-some-params-no-d_n-eps": ("full", ["gamma_i", "beta_h", "gamma_c"],
                                            ("d_h_n", "d_c_n"), 0.05),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("T, B, I, H", SHAPES, ids=["x".join(map(str, s)) for s in SHAPES])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("cell, backend", CELL_FAST)
def test_fast_kernels_match_the_reference(cell, backend, dtype, T, B, I, H,  # noqa: E741
                                          variant):
    c = CELLS[cell]
    lengths, params, none, eps = VARIANTS[variant]
    lengths = {None: None, "some": some_lengths(T, B), "full": np.full(B, T)}[lengths]
    p = make_problem(cell, T, B, I, H, dtype, lengths=lengths, params=params, seed=T * B + H)
    p["eps"] = eps
    ups = make_upstream(cell, T, B, H, dtype, none=none)
    want, ref_cache = c.forward("reference", as_float64(p))
    want_grads = c.backward(as_float64(ups), ref_cache, R)
    got, cache = c.forward(backend, p)
    grads = c.backward(ups, cache)
    assert cache.backend == backend
    rtol, atol = (1e-10, 0.0) if dtype == np.float64 else (1e-4, 1e-6)
    for name in c.outputs:
        assert got[name].dtype == dtype, name
        assert_scaled_close(got[name], want[name], rtol, atol, name)
    assert type(grads) is type(want_grads)
    for g in c.grads:
        actual, expected = getattr(grads, g), getattr(want_grads, g)
        if g[1:] in c.params and p[g[1:]] is None:
            assert actual is None and expected is None, g
            continue
        assert actual.dtype == dtype, g
        assert_scaled_close(actual, expected, rtol, atol, g)


# ---- inference against training, through several chunks ----------------------

@pytest.mark.parametrize("B, lengths", [(1, None), (2, [1100, 700])], ids=["B1", "B2-lengths"])
@pytest.mark.parametrize("cell, backend", CELL_FAST)
def test_inference_matches_training_across_chunks(cell, backend, B, lengths):
    T, I, H = 1100, 2, 3
    assert T > 2 * LN.CHUNK_ROWS // B  # the forward runs at least three chunks
    c = CELLS[cell]
    p = make_problem(cell, T, B, I, H, lengths=lengths, seed=11)
    ups = make_upstream(cell, T, B, H, seed=12)
    train, cache = c.forward(backend, p)
    infer, none = c.forward(backend, p, training=False)
    assert none is None
    for name in c.outputs:
        # (Cython: the input products' GEMM over a chunk's rows or all of them
        # may round differently)
        if backend == "numba":
            np.testing.assert_array_equal(infer[name], train[name], err_msg=name)
        else:
            assert_scaled_close(infer[name], train[name], 1e-12, name=name)
    want, ref_cache = c.forward("reference", p)
    ref_infer, none = c.forward("reference", p, training=False)
    assert none is None
    for name in c.outputs:
        np.testing.assert_array_equal(ref_infer[name], want[name], err_msg=name)
        assert_scaled_close(train[name], want[name], 1e-10, name=name)
    grads, want_grads = c.backward(ups, cache), c.backward(ups, ref_cache, R)
    for g in c.grads:
        assert_scaled_close(getattr(grads, g), getattr(want_grads, g), 1e-10, name=g)


# ---- empty work ---------------------------------------------------------------

@pytest.mark.parametrize("T, B, lengths", [(0, 3, None), (0, 3, [0, 0, 0]), (4, 0, []),
                                            (0, 0, None)],
                         ids=["T0", "T0-lengths", "B0-lengths", "T0-B0"])
@pytest.mark.parametrize("cell, backend", CELL_BACKENDS)
def test_empty_work(cell, backend, T, B, lengths):
    I, H = 3, 2
    c = CELLS[cell]
    p = make_problem(cell, T, B, I, H, lengths=lengths, seed=2)
    ups = make_upstream(cell, T, B, H, seed=3)
    _, cache = c.forward(backend, p)
    for training in (True, False):
        outs, _ = c.forward(backend, p, training=training)
        assert outs["out"].shape == (T, B, H)
        for s, o in zip(c.initial, c.outputs[1:]):
            assert outs[o].shape == (B, H)
            if T == 0:
                np.testing.assert_array_equal(outs[o], p[s], err_msg=o)
    for upstream in (ups, {}):
        grads = c.backward(upstream, cache)
        for n, g in zip(c.inputs, c.grads):
            d = getattr(grads, g)
            assert d.shape == p[n].shape and d.dtype == np.float64, g
            u = upstream.get("d_" + n[:-1] + "_n") if n in c.initial else None
            if T == 0 and u is not None:  # the states pass straight through
                np.testing.assert_array_equal(d, u, err_msg=g)
            else:
                assert not d.any(), g


# ---- bad input ----------------------------------------------------------------

T_, B_, I_, H_ = 4, 3, 5, 6


def _bad_forward_cases():
    """(id, cells, change to the problem or call, exception, pattern)."""
    s = re.escape
    cases = [
        ("x-rank", CELL_IDS, {"x": np.zeros((T_, B_))}, ValueError, s("x must have shape")),
        ("x-int", CELL_IDS, {"x": np.zeros((T_, B_, I_), np.int64)}, TypeError, "x"),
        ("W_ih-shape", ["lstm"], {"W_ih": np.zeros((4 * H_, I_ + 1))}, ValueError,
         s("W_ih must have shape (4*H, I) = (24, 5)")),
        ("W_ih-shape", ["gru"], {"W_ih": np.zeros((3 * H_, I_ + 1))}, ValueError,
         s("W_ih must have shape (3*H, I) = (18, 5)")),
        ("W_hh-shape", ["lstm"], {"W_hh": np.zeros((4 * H_ + 1, H_))}, ValueError,
         s("W_hh must have shape (4*H, H)")),
        ("W_hh-float32", CELL_IDS, {"W_hh": "float32"}, TypeError, "W_hh"),
        ("h0-shape", CELL_IDS, {"h0": np.zeros((B_, H_ + 1))}, ValueError,
         s("h0 must have shape (B, H) = (3, 6)")),
        ("h0-float32", CELL_IDS, {"h0": "float32"}, TypeError, "h0"),
        ("c0-shape", ["lstm"], {"c0": np.zeros((B_ + 1, H_))}, ValueError,
         s("c0 must have shape (B, H) = (3, 6)")),
        ("gamma_i-shape", ["lstm"], {"gamma_i": np.ones(H_)}, ValueError,
         s("gamma_i must have shape (4*H,) = (24,)")),
        ("beta_h-shape", ["gru"], {"beta_h": np.ones((3 * H_, 1))}, ValueError,
         s("beta_h must have shape (3*H,) = (18,)")),
        ("gamma_c-shape", ["lstm"], {"gamma_c": np.ones(4 * H_)}, ValueError,
         s("gamma_c must have shape (H,) = (6,)")),
        ("beta_i-float32", CELL_IDS, {"beta_i": "float32"}, TypeError, "beta_i"),
        ("gamma_h-strings", CELL_IDS, {"gamma_h": "strings"}, TypeError, "gamma_h"),
        ("lengths-over", CELL_IDS, {"lengths": [T_ + 1, 0, 1]}, ValueError, "lengths"),
        ("lengths-negative", CELL_IDS, {"lengths": [-1, 0, 1]}, ValueError, "lengths"),
        ("lengths-shape", CELL_IDS, {"lengths": [1, 1]}, ValueError, "lengths"),
        ("lengths-float", CELL_IDS, {"lengths": [1.0, 1.0, 1.0]}, TypeError, "lengths"),
        ("training-int", CELL_IDS, {"training": 1}, TypeError, "training"),
    ]
    for value, exc in [("1e-5", TypeError), (True, TypeError), (None, TypeError),
                       (0, ValueError), (-1e-5, ValueError), (np.inf, ValueError),
                       (np.nan, ValueError)]:
        cases.append((f"eps-{value}", CELL_IDS, {"eps": value}, exc, "eps"))
    return [pytest.param(cell, backend, change, exc, pattern, id=f"{cell}-{backend}-{case_id}")
            for case_id, cells, change, exc, pattern in cases for cell in cells
            for backend in FAST[cell] + ["numpy"]]


@pytest.mark.parametrize("cell, backend, change, exc, pattern", _bad_forward_cases())
def test_bad_forward_input_is_refused_by_name(cell, backend, change, exc, pattern):
    p = make_problem(cell, T_, B_, I_, H_, seed=1)
    for name, value in change.items():
        if isinstance(value, str) and value == "float32":
            value = p[name].astype(np.float32)
        elif isinstance(value, str) and value == "strings":
            value = ["a"] * len(p[name])
        p[name] = value
    with pytest.raises(exc, match=pattern):
        CELLS[cell].forward(backend, p)


@pytest.mark.parametrize("cell, backend, exc, pattern", [
    ("lstm", "bogus", ValueError, "backend"), ("gru", "bogus", ValueError, "backend"),
    ("lstm", "Cython", ValueError, "backend"),
])
def test_unsupported_backends_are_refused(cell, backend, exc, pattern):
    p = make_problem(cell, T_, B_, I_, H_)
    with pytest.raises(exc, match=pattern):
        CELLS[cell].forward(backend, p)


@pytest.mark.parametrize("cell, backend", CELL_BACKENDS)
def test_bad_backward_input_is_refused_by_name(cell, backend):
    c = CELLS[cell]
    other = CELLS["gru" if cell == "lstm" else "lstm"]
    p = make_problem(cell, T_, B_, I_, H_)
    _, cache = c.forward(backend, p)
    _, other_cache = other.forward(FAST[other.name][-1] if backend != "numpy" else backend,
                                   make_problem(other.name, T_, B_, I_, H_))
    ups = make_upstream(cell, T_, B_, H_)
    for module in (fastrnn, R):
        with pytest.raises(ValueError, match="cache"):
            c.backward(ups, None, module)
        with pytest.raises(ValueError, match="cache"):
            c.backward(ups, other_cache, module)
        with pytest.raises(TypeError, match="cache"):
            c.backward(ups, {"x": p["x"]}, module)
    s = re.escape
    for name, value, exc, pattern in [
        ("d_out", np.zeros((T_, B_, H_ + 1)), ValueError, s("d_out must have shape (T, B, H)")),
        ("d_out", np.zeros((T_, B_, H_), np.float32), TypeError, "d_out"),
        ("d_h_n", np.zeros((B_ + 1, H_)), ValueError, s("d_h_n must have shape (B, H)")),
        ("d_c_n", np.zeros((B_, H_), np.float32), TypeError, "d_c_n"),
    ]:
        if name in c.upstream:
            with pytest.raises(exc, match=pattern):
                c.backward({**ups, name: value}, cache)


# ---- inputs left alone, non-contiguous inputs, read-only out ------------------

@pytest.mark.parametrize("cell, backend", CELL_BACKENDS)
def test_inputs_are_not_modified_and_the_cache_owns_its_arrays(cell, backend):
    c = CELLS[cell]
    p = make_problem(cell, 6, 3, 4, 5, lengths=[6, 0, 2], seed=8)
    ups = make_upstream(cell, 6, 3, 5, seed=9)
    saved = {k: v.copy() for k, v in {**p, **ups}.items()}
    outs, cache = c.forward(backend, p)
    assert not outs["out"].flags.writeable
    with pytest.raises(ValueError):
        outs["out"][0, 0, 0] = 1.0
    grads = c.backward(ups, cache)
    for k, v in {**p, **ups}.items():
        np.testing.assert_array_equal(v, saved[k], err_msg=k)
    # scribbling over the inputs and the returned states after the forward
    # changes neither its cache nor (so) its backward; a cache serves twice
    for v in [*p.values(), *(outs[o] for o in c.outputs[1:])]:
        v[...] = 0
    again = c.backward(ups, cache)
    for g in c.grads:
        np.testing.assert_array_equal(getattr(again, g), getattr(grads, g), err_msg=g)


def _strided(a):
    """a's values in a non-contiguous array: every other entry of a bigger one,
    or for a matrix, its transpose's transpose (Fortran order)."""
    if a.ndim == 2:
        return np.asfortranarray(a)
    big = np.zeros((2 * a.shape[0],) + a.shape[1:], a.dtype)
    big[::2] = a
    return big[::2]


@pytest.mark.parametrize("cell, backend", CELL_BACKENDS)
def test_non_contiguous_inputs(cell, backend):
    c = CELLS[cell]
    T, B, I, H = 5, 3, 4, 6
    p = make_problem(cell, T, B, I, H, lengths=[5, 0, 3], seed=10)
    ups = make_upstream(cell, T, B, H, seed=11)
    q = {k: (_strided(v) if isinstance(v, np.ndarray) else v) for k, v in p.items()}
    q["x"] = np.ascontiguousarray(p["x"].transpose(1, 0, 2)).transpose(1, 0, 2)
    W = np.zeros((c.G * H, 2 * I))
    W[:, 1::2] = p["W_ih"]
    q["W_ih"] = W[:, 1::2]
    qu = {u: _strided(v) for u, v in ups.items()}
    qu["d_out"] = np.ascontiguousarray(ups["d_out"].transpose(2, 1, 0)).transpose(2, 1, 0)
    assert not any(v.flags.c_contiguous for k, v in {**q, **qu}.items()
                   if isinstance(v, np.ndarray) and k != "lengths")
    want, cache = c.forward(backend, p)
    got, qcache = c.forward(backend, q)
    exact = np.testing.assert_array_equal if backend != "numpy" else \
        (lambda a, b, err_msg: assert_scaled_close(a, b, 1e-13, name=err_msg))
    for name in c.outputs:
        exact(got[name], want[name], err_msg=name)
    grads, qgrads = c.backward(ups, cache), c.backward(qu, qcache)
    for g in c.grads:
        exact(getattr(qgrads, g), getattr(grads, g), err_msg=g)


# ---- which backend runs ---------------------------------------------------------

@pytest.mark.parametrize("cell", CELL_IDS)
def test_backend_none_is_the_fastest_and_the_backward_follows_the_cache(cell, monkeypatch):
    unavailable = fastrnn.unavailable_backends()
    fastest = next(b for b in LN.NORM_BACKENDS["layernorm_" + cell] if b not in unavailable)
    c = CELLS[cell]
    p = make_problem(cell, 4, 2, 3, 5, lengths=[4, 1], seed=13)
    ups = make_upstream(cell, 4, 2, 5, seed=14)
    _, cache = c.forward(None, p)
    assert cache.backend == fastest
    _, np_cache = c.forward("numpy", p)
    assert np_cache.backend == "numpy"

    calls = []
    name = f"layernorm_{cell}_backward"
    ref_backward = getattr(R, name)
    monkeypatch.setattr(R, name, lambda *args: calls.append(args[-1]) or ref_backward(*args))
    fast = c.backward(ups, cache)
    assert calls == []
    slow = c.backward(ups, np_cache)
    assert len(calls) == 1 and calls[0] is np_cache
    for g in c.grads:
        assert_scaled_close(getattr(fast, g), getattr(slow, g), 1e-10, name=g)


# ---- the Cython LSTM's team sharing each step's product by columns -----------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_cython_lstm_columns_split_matches_the_reference(dtype):
    """Where W_hh outgrows L2 (H = 1024) the Cython LayerNorm LSTM's threads
    share each step's product by columns and then its rows; forced here at
    a small size (B = 16 rows, enough for two threads' shares)."""
    if "cython" not in FAST["lstm"] or fastrnn.get_num_threads() < 2:
        pytest.skip("needs the Cython backend and two threads (the split is a team's)")
    from fastrnn._backends import kernels

    module = kernels("cython", "lstm")
    c = CELLS["lstm"]
    T, B, I, H = 6, 16, 64, 64  # B * 4H * (I + H) = 2**19: the engine's two threads
    p = make_problem("lstm", T, B, I, H, dtype, lengths=some_lengths(T, B), seed=21)
    ups = make_upstream("lstm", T, B, H, dtype, seed=22)
    want, ref_cache = c.forward("reference", as_float64(p))
    want_grads = c.backward(as_float64(ups), ref_cache, R)
    module._set_ln_columns(1)
    try:
        got, cache = c.forward("cython", p)
        grads = c.backward(ups, cache)
    finally:
        module._set_ln_columns(-1)
    rtol, atol = (1e-10, 0.0) if dtype == np.float64 else (1e-4, 1e-6)
    for name in c.outputs:
        assert_scaled_close(got[name], want[name], rtol, atol, name)
    for g in c.grads:
        assert_scaled_close(getattr(grads, g), getattr(want_grads, g), rtol, atol, g)
