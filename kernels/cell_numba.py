"""The kernels of a user's cell (``fastrnn.cells.Cell``), Numba backend.

A user cell's loops cannot be written out here as the built-in cells' are:
their gates, states and parameters are the user's.  So the two step loops
below are generated per cell, as Python text with one line per gate and
state (the tuples the user's functions take are spelled out, which Numba
needs: a tuple's length is part of its type), and compiled by Numba together
with the user's ``forward`` and ``backward``, which LLVM inlines into the
loop over the units.  The rest is what every Numba kernel shares
(``_numba_util``): the per-step product (BLAS or the hand loops, by
``fastrnn._tuning.use_blas``) and the chunks of steps that let Ctrl-C land.

Read beside ``kernels/gru_numba.py``: the same loops, with the gate
arithmetic replaced by calls of the user's functions.  The forward saves
what the backward recomputes from: the input terms XW, the recurrent terms
R (bias included) and the states after each step.

Compiled code is not cached across processes (generated text has no source
file for Numba's cache to key on): a cell compiles on its first call for a
dtype, once per process.
"""
import linecache
import threading

import numba
import numpy as np
from numba.core import ccallback
from numba.core.errors import NumbaError
from numba.extending import overload

from .. import cells as _cells
from . import _numba_util as nu

# The module's sigmoid and tanh are plain NumPy functions, so that the
# reference can run a cell's functions on arrays; inside a compiled cell
# they are the kernels' own (a rational tanh in float32).
overload(_cells.sigmoid)(lambda x: nu._sigmoid(x))
overload(_cells.tanh)(lambda x: nu._fast_tanh(x))

_OPTIONS = dict(nogil=True, error_model="numpy", fastmath={"contract"})
_counter = iter(range(1, 1 << 62))
_counter_lock = threading.Lock()


def _tuple(items):
    items = list(items)
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def _loops_source(cell):
    """The Numba backend's forward and backward step loops of ``cell``, as
    Python text: arrays (T, B, ...) as NumPy sees them."""
    G, S, P, rec = cell.G, cell.S, cell.P, cell.recurrent
    x = _tuple(f"XW[t, b, {k} * H + j]" for k in range(G))
    r = _tuple(f"R[tr, b, {k} * H + j]" for k in range(G)) if rec else "()"
    p = _tuple(f"Pm[{k}, j]" for k in range(P))
    s_run = _tuple(f"run[{i}, b, j]" for i in range(S))
    s_prev = _tuple(["out[t - 1, b, j] if t > 0 else s0[0, b, j]"]
                    + [f"seq[{i - 1}, t - 1, b, j] if t > 0 else s0[{i}, b, j]"
                       for i in range(1, S)])
    d = _tuple(["ds[0, b, j] + d_out[t, b, j]"] + [f"ds[{i}, b, j]" for i in range(1, S)])
    lines = [
        "def forward_steps(XW, R, W_hh, W_hhT, use_blas, b_hh, Pm, lengths, run, seq, out, t0,",
        "                  t1):",
        "    T, B, H = out.shape",
        "    keep = seq.shape[1] > 0",
        "    for t in range(t0, t1):",
        "        tr = t if keep else 0",
    ]
    if rec:
        lines.append("        recurrent_product(run[0], W_hh, W_hhT, lengths, t, use_blas, R[tr])")
    lines += [
        "        for b in range(B):",
        "            if t < lengths[b]:",
        "                for j in range(H):",
    ]
    lines += [f"                    R[tr, b, {k} * H + j] += b_hh[{k} * H + j]"
              for k in range(G) if rec]
    lines.append(f"                    y = FORWARD({x}, {r}, {s_run}, {p})")
    lines += [f"                    run[{i}, b, j] = y[{i}]" for i in range(S)]
    lines += [
        "                    out[t, b, j] = run[0, b, j]",
        "            else:",
        "                for j in range(H):",
        "                    out[t, b, j] = 0",
        "            if keep:",
        f"                for i in range(1, {S}):",
        "                    for j in range(H):",
        "                        seq[i - 1, t, b, j] = run[i, b, j]",
        "",
        "",
        "def backward_steps(XW, R, W_hh, use_blas, Pm, lengths, out, seq, s0, d_out, ds, DX, DR,",
        "                   dP, work, t0, t1):",
        "    T, B, H = d_out.shape",
        "    for t in range(t1 - 1, t0 - 1, -1):",
        "        tr = t",
        "        for b in range(B):",
        "            if t < lengths[b]:",
        "                for j in range(H):",
        f"                    dx, dr, dsp, dp = BACKWARD({x}, {r}, {s_prev}, {p}, {d})",
    ]
    lines += [f"                    DX[t, b, {k} * H + j] = dx[{k}]" for k in range(G)]
    lines += [f"                    DR[t, b, {k} * H + j] = dr[{k}]" for k in range(G) if rec]
    lines += [f"                    ds[{i}, b, j] = dsp[{i}]" for i in range(S)]
    lines += [f"                    dP[{k}, j] += dp[{k}]" for k in range(P)]
    lines += [
        "            else:",
        f"                for n in range({G} * H):",
        "                    DX[t, b, n] = 0",
    ]
    if rec:
        lines += [
            "                    DR[t, b, n] = 0",
            "        # dL/dh_{t-1} += dr_t W_hh: the one sequential product.",
            "        backward_product(DR[t], W_hh, lengths, t, use_blas, work)",
            "        for b in range(B):",
            "            if t < lengths[b]:",
            "                for j in range(H):",
            "                    ds[0, b, j] += work[b, j]",
        ]
    return "\n".join(lines) + "\n"


def _tiles_source(cell):
    """The Cython engine's tile functions of ``cell`` (kernels/cell_cython.pyx
    says what they take), as Python text: flat arrays through pointers."""
    G, S, P = cell.G, cell.S, cell.P
    unit = "j0 + j"
    x = _tuple(f"g[{k} * H + j]" for k in range(G))
    r = _tuple(f"r{k}" for k in range(G))
    p = _tuple(f"Pm[{k} * H + {unit}]" for k in range(P))
    s_run = _tuple(["h_prev[j]"] + [f"run[({i - 1} * B + b) * H + {unit}]" for i in range(1, S)])
    s_prev = _tuple([f"out[(tb - B) * H + {unit}] if t > 0 else h0[b * H + {unit}]"]
                    + [f"seq[(({i - 1} * T + t - 1) * B + b) * H + {unit}] if t > 0 else "
                       f"s0[({i - 1} * B + b) * H + {unit}]" for i in range(1, S)])
    d = _tuple(["dh[j] + d_out[j]"] + [f"ds[({i - 1} * B + b) * H + {unit}]"
                                       for i in range(1, S)])
    lines = []
    # One function for training, which saves R and the states after h, one
    # for inference: a store under a condition in the loop over the units
    # would keep LLVM from vectorising it.
    for kind, keep in (("train", True), ("infer", False)):
        lines += [
            f"def forward_tile_{kind}(running, nu, u, tb, j0, acc, g, h_prev, h_next, out, R, run,",
            "                        seq, b_hh, Pm, dims):",
            "    T, B, H = dims[0], dims[1], dims[2]",
            "    b = tb % B",
        ] + ["    t = tb // B"] * keep + [
            "    if running:",
            "        for j in range(nu):",
        ]
        lines += [f"            r{k} = acc[{k} * u + j] + b_hh[{k} * H + {unit}]"
                  for k in range(G)]
        lines += [f"            R[tb * {G} * H + {k} * H + {unit}] = r{k}"
                  for k in range(G) if keep]
        lines += [f"            y = FORWARD({x}, {r}, {s_run}, {p})",
                  "            h_next[j] = y[0]",
                  f"            out[tb * H + {unit}] = y[0]"]
        lines += [f"            run[({i - 1} * B + b) * H + {unit}] = y[{i}]" for i in range(1, S)]
        lines += [f"            seq[(({i - 1} * T + t) * B + b) * H + {unit}] = y[{i}]"
                  for i in range(1, S) if keep]
        lines += [
            "    else:",
            "        for j in range(nu):",
            "            h_next[j] = h_prev[j]",
            f"            out[tb * H + {unit}] = 0",
        ]
        lines += [f"            seq[(({i - 1} * T + t) * B + b) * H + {unit}] = "
                  f"run[({i - 1} * B + b) * H + {unit}]" for i in range(1, S) if keep]
        lines += ["", ""]
    lines += [
        "def backward_tile(running, nu, tb, j0, g, d_out, dh, da_x, da_h, R, seq, out, h0, s0, ds,",
        "                  Pm, dP, dims):",
        "    T, B, H = dims[0], dims[1], dims[2]",
        "    if not running:",
        "        for j in range(nu):",
    ]
    lines += [f"            da_x[{k} * H + j] = 0\n            da_h[{k} * H + j] = 0"
              for k in range(G)]
    lines += [
        "        return",
        "    t = tb // B",
        "    b = tb % B",
        "    for j in range(nu):",
    ]
    lines += [f"        r{k} = R[tb * {G} * H + {k} * H + {unit}]" for k in range(G)]
    lines += [f"        dx, dr, dsp, dp = BACKWARD({x}, {r}, {s_prev}, {p}, {d})"]
    lines += [f"        da_x[{k} * H + j] = dx[{k}]\n        da_h[{k} * H + j] = dr[{k}]"
              for k in range(G)]
    lines += ["        dh[j] = dsp[0]"]
    lines += [f"        ds[({i - 1} * B + b) * H + {unit}] = dsp[{i}]" for i in range(1, S)]
    lines += [f"        dP[{k} * H + {unit}] += dp[{k}]" for k in range(P)]
    return "\n".join(lines) + "\n"


def _compiled(cell, source, kind):
    """Run the generated ``source`` into a namespace with the cell's functions
    compiled by Numba (registered with linecache, so that Numba's messages
    and tracebacks show the generated lines)."""
    with _counter_lock:
        filename = f"<fastrnn cell {cell.name!r} {kind} #{next(_counter)}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    # Inlined by Numba itself: LLVM does not inline a function Numba compiled
    # on its own, and a call in the loop over the units keeps it scalar
    # (a GRU tile ran 2x the built-in GRU's time at (B, H) = (1, 64)).
    namespace = dict(FORWARD=numba.njit(inline="always", **_OPTIONS)(cell.forward_fn),
                     BACKWARD=numba.njit(inline="always", **_OPTIONS)(cell.backward_fn),
                     recurrent_product=nu.recurrent_product,
                     backward_product=nu.backward_product)
    exec(compile(source, filename, "exec"), namespace)
    return namespace


def _compile_error(cell, dtype, what, exc):
    return _cells.CellCompileError(
        f"cell {cell.name!r}: Numba cannot compile its functions for {np.dtype(dtype)} "
        f"({what}); write them with NumPy's functions and arithmetic on scalars (see "
        f"docs/cells.md). Numba's reason:\n{_plain_reason(cell, dtype) or exc}")


def _plain_reason(cell, dtype):
    """Numba's reason for the user's function that fails, compiled on its
    own for the tuples the kernels pass: inlined, Numba words some causes
    less plainly (a global it cannot type is a NameError there)."""
    f, t = numba.from_dtype(np.dtype(dtype)), numba.types
    G, R, S, P = cell._sizes()
    tup = lambda n: t.UniTuple(f, n) if n else t.Tuple(())  # noqa: E731
    for fn, sig in ((cell.forward_fn, (tup(G), tup(R), tup(S), tup(P))),
                    (cell.backward_fn, (tup(G), tup(R), tup(S), tup(P), tup(S)))):
        try:
            numba.njit(**_OPTIONS)(fn).compile(sig)
        except NumbaError as exc:
            return f"in {getattr(fn, '__name__', fn)}: {exc}"
    return None


class NumbaCellKernels:
    """The compiled step loops of one cell for one dtype: the input terms
    and the weight gradients are GEMMs (``fastrnn.cells``), the steps one
    loop over the units with the user's functions inlined."""

    def __init__(self, cell, dtype):
        self.cell, self.dtype = cell, np.dtype(dtype)
        self.source = _loops_source(cell)
        namespace = _compiled(cell, self.source, "loops")
        self._forward = numba.njit(**_OPTIONS)(namespace["forward_steps"])
        self._backward = numba.njit(**_OPTIONS)(namespace["backward_steps"])

    def _run(self, what, call):
        try:
            call()
        except NumbaError as exc:
            raise _compile_error(self.cell, self.dtype, what, exc) from None

    def steps_forward(self, p, XW, R, run, seq, out, lengths):
        rec = self.cell.recurrent
        use_blas = bool(rec and _use_blas(p.B, p.G * p.H, p.H))
        W_hh = p.W_hh if rec else np.zeros((0, 0), p.dtype)
        b_hh = p.b_hh if rec else np.zeros(0, p.dtype)
        W_hhT = nu.transposed_for_loops(W_hh, use_blas) if rec else W_hh
        self._run("forward", lambda: nu.in_chunks(
            lambda t0, t1: self._forward(XW, R, W_hh, W_hhT, use_blas, b_hh, p.params, lengths,
                                         run, seq, out, t0, t1),
            p.x.reshape(p.T * p.B, p.I), W_hh if rec else p.W_ih, out))

    def steps_backward(self, a, lengths, d_out, ds, DX, DR, dP):
        T, B, H = a["out"].shape
        rec = self.cell.recurrent
        use_blas = bool(rec and _use_blas(B, self.cell.G * H, H))
        W_hh = a["W_hh"] if rec else np.zeros((0, 0), self.dtype)
        work = np.empty((B, H), self.dtype)
        self._run("backward", lambda: nu.in_chunks(
            lambda t0, t1: self._backward(a["XW"], a["R"], W_hh, use_blas, a["params"], lengths,
                                          a["out"], a["seq"], a["states0"], d_out, ds, DX, DR,
                                          dP, work, t0, t1),
            a["x"].reshape(T * B, a["x"].shape[2]), W_hh if rec else a["W_ih"], a["out"],
            reverse=True))


class CythonCellKernels:
    """One cell's tile functions for one dtype, compiled by Numba as C
    functions (``numba.cfunc``) for the Cython engine (kernels/cell_cython.pyx)."""

    def __init__(self, cell, dtype):
        self.cell, self.dtype = cell, np.dtype(dtype)
        self.source = _tiles_source(cell)
        namespace = _compiled(cell, self.source, "tiles")
        f = numba.from_dtype(self.dtype)
        ptr, i64 = numba.types.CPointer(f), numba.types.int64
        dims = numba.types.CPointer(i64)
        try:
            self._forward = {keep: _cfunc(namespace[f"forward_tile_{kind}"],
                                          (i64,) * 5 + (ptr,) * 10 + (dims,))
                             for keep, kind in ((True, "train"), (False, "infer"))}
            self._backward = _cfunc(namespace["backward_tile"], (i64,) * 4 + (ptr,) * 13 + (dims,))
        except NumbaError as exc:
            raise _compile_error(cell, self.dtype, "the engine's tile functions", exc) from None
        self.forward_address = {keep: f.address for keep, f in self._forward.items()}
        self.backward_address = self._backward.address


class _NoAliasCompiler(ccallback._CFuncCompiler):
    """Numba's compiler of C callbacks, with its pointer arguments marked
    ``noalias`` (each array a tile function takes is its own memory).
    Without it LLVM cannot vectorise the loop over the tile's units: every
    store might change what the next unit loads (a GRU tile took 2x the
    built-in GRU's time at (B, H) = (1, 64))."""

    def _customize_flags(self, flags):
        flags = super()._customize_flags(flags)
        flags.noalias = True
        return flags


def _cfunc(pyfunc, args):
    """``numba.cfunc(void(*args))(pyfunc)`` compiled by _NoAliasCompiler."""
    compiled = ccallback.CFunc(pyfunc, (args, numba.types.void), {}, options=_OPTIONS)
    compiled._compiler.__class__ = _NoAliasCompiler
    compiled.compile()
    return compiled


def _use_blas(B, GH, H):
    from fastrnn import _tuning
    return _tuning.use_blas("numba", B, GH, H)
