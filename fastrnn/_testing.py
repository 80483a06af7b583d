"""Random problems, accuracy bounds, and every cell behind one interface,
shared by ``python -m fastrnn``, the tests and the benchmarks.

``forward(cell, problem, backend)`` calls ``{cell}_forward`` (the reference
for backend "reference") and returns ``(outputs, cache)`` with outputs a dict
``out, h_n[, c_n]``; ``backward(cell, upstream, cache)`` returns the
gradients as a dict.  ``upstream`` is a dict ``d_out, d_h_n[, d_c_n]``.
What a cell takes and returns is read from its spec (``fastrnn._spec``).
"""
import contextlib
import importlib
import itertools

import numpy as np

from ._spec import CELLS

# Fast kernels against the float64 reference, relative to the size of the values
# compared.  float64: rounding differences only.  float32: a few ulps per
# operation, accumulated over the steps and the sums of the backward pass.
TOLERANCE = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 2e-4}


def scaled_error(actual, expected):
    """(max |actual - expected|, scale), the scale being max(1, max |expected|);
    an accurate result has error <= TOLERANCE[dtype] * scale."""
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    err = float(np.max(np.abs(actual.astype(np.float64) - expected), initial=0.0))
    return err, scale


def assert_close(actual, expected, dtype, name=""):
    """actual (any dtype) against the float64 reference ``expected``, within TOLERANCE."""
    if expected is None:
        assert actual is None, f"{name}: expected None"
        return
    assert actual is not None, f"{name}: got None"
    assert actual.dtype == dtype, f"{name}: dtype {actual.dtype}, expected {dtype}"
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    err, scale = scaled_error(actual, expected)
    assert err <= TOLERANCE[np.dtype(dtype)] * scale, \
        f"{name}: max error {err:.3g} (scale {scale:.3g})"


def as_float64(problem):
    """The problem's float arrays in float64 (for the reference)."""
    return {k: (v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
            for k, v in problem.items()}


def variants(cell):
    """Every combination of the cell's options as keyword arguments: for the
    Elman cell each nonlinearity, for a cell without options one empty dict."""
    options = CELLS[cell].options
    return [dict(zip(options, values))
            for values in itertools.product(*(choices for choices, _ in options.values()))]


def random_problem(T, B, I, H, dtype=np.float64, *, cell="rnn", seed=0,  # noqa: E741
                   bias=(True, True), h0=True, lengths=None, weight_scale=None, extras=False,
                   P=None):
    """Keyword arguments for ``{cell}_forward``, PyTorch's initialisation scale by default.

    Every initial state is random (standard normal, h0 halved), or None when
    ``h0`` is False.  The cell's extra weights (``_spec``: the LSTM's
    peepholes W_ch and projection W_hr) are None, or random like the weights
    when ``extras`` (True: all of them; or the names of those to give).
    ``P``: the width of h where the projection is given (default H).
    """
    rng = np.random.default_rng(seed)
    s = 1.0 / np.sqrt(H) if weight_scale is None else weight_scale
    spec = CELLS[cell]
    GH = spec.G * H
    given = set(spec.extras) if extras is True else set(extras or ())
    P = H if P is None or spec.proj not in given else P

    def u(*shape):
        return rng.uniform(-s, s, shape).astype(dtype)

    problem = dict(
        x=rng.standard_normal((T, B, I)).astype(dtype),
        h0=rng.standard_normal((B, P)).astype(dtype) * 0.5 if h0 else None,
        W_ih=u(GH, I), W_hh=u(GH, P),
        b_ih=u(GH) if bias[0] else None, b_hh=u(GH) if bias[1] else None,
        lengths=lengths,
    )
    for name in CELLS[cell].initial[1:]:
        problem[name] = rng.standard_normal((B, H)).astype(dtype) if h0 else None
    for name, (shape, _) in CELLS[cell].extras.items():
        problem[name] = (u(*[{"H": H, "H3": 3 * H, "P": P}[d] for d in shape])
                         if name in given else None)
    return problem


def forward(cell, problem, backend="reference", **kwargs):
    import fastrnn
    from fastrnn import reference

    if backend == "reference":
        fn = getattr(reference, f"{cell}_forward")
    else:
        fn = getattr(fastrnn, f"{cell}_forward")
        kwargs["backend"] = backend
    *outs, cache = fn(**problem, **kwargs)
    return dict(zip(("out", *CELLS[cell].finals), outs)), cache


def backward(cell, upstream, cache, module=None):
    """``module``: fastrnn (the default) or fastrnn.reference.  The
    gradient of an extra weight the forward did not have (None: the LSTM's
    dW_ch without peepholes) is left out."""
    import fastrnn

    fn = getattr(module or fastrnn, f"{cell}_backward")
    grads = fn(*(upstream.get(n) for n in CELLS[cell].upstream), cache)._asdict()
    return {k: v for k, v in grads.items() if v is not None or k[1:] not in CELLS[cell].extras}


def random_upstream(cell, T, B, H, dtype=np.float64, seed=1, P=None):
    """Random d_out (T, B, P) and d_h_n (B, P)[, d_c_n (B, H)]; P = H by default."""
    rng = np.random.default_rng(seed)
    P = H if P is None else P
    ups = {"d_out": rng.standard_normal((T, B, P)).astype(dtype)}
    for k, name in enumerate(CELLS[cell].upstream[1:]):
        ups[name] = rng.standard_normal((B, P if k == 0 else H)).astype(dtype)
    return ups


@contextlib.contextmanager
def engine_layout(threads, split=-1):
    """Run the Cython engine on ``threads`` threads whatever the size, at every
    instruction-set level this CPU runs.  ``split`` 1 forces the forward's
    batch shares (each thread a share of the rows through every step)
    wherever B gives each thread a row, 0 its unit shares (each thread a
    share of every step's units), -1 leaves the choice to the engine."""
    from . import _isa, _tuning
    try:
        modules = [importlib.import_module(f"fastrnn.kernels.{cell}_cython_{level}")
                   for level in _isa.cpu_isa_levels() for cell in CELLS]
    except ImportError:  # the Cython kernels are not built: the Numba ones still run
        modules = []
    saved = _tuning.engine_threads
    _tuning.engine_threads = lambda backend, B, I, H, GH, num_threads: threads
    for m in modules:
        m._set_split(split)
    try:
        yield
    finally:
        _tuning.engine_threads = saved
        for m in modules:
            m._set_split(-1)
