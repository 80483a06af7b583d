"""Random problems, accuracy bounds and the three cells behind one interface,
shared by ``python -m fastrnn`` and the tests.

``forward(cell, problem, backend)`` calls ``{cell}_forward`` (the reference
for backend "reference") and returns ``(outputs, cache)`` with outputs a dict
``out, h_n[, c_n]``; ``backward(cell, upstream, cache)`` returns the
gradients as a dict.  ``upstream`` is a dict ``d_out, d_h_n[, d_c_n]``.
"""
import numpy as np

from ._validation import GATES  # noqa: F401 (re-exported for the tests)

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


CELLS = ("rnn", "lstm", "gru")
FINALS = {"rnn": ("h_n",), "lstm": ("h_n", "c_n"), "gru": ("h_n",)}
STATES = {"rnn": ("h0",), "lstm": ("h0", "c0"), "gru": ("h0",)}
# Parameter name -> its gradient's name in the grads tuple.
GRAD_OF = {"x": "dx", "h0": "dh0", "c0": "dc0", "W_ih": "dW_ih", "W_hh": "dW_hh",
           "b_ih": "db_ih", "b_hh": "db_hh"}


def random_rnn_problem(T, B, I, H, dtype=np.float64, *, cell="rnn", seed=0, bias=(True, True),
                       h0=True, lengths=None, weight_scale=None):
    """Keyword arguments for ``{cell}_forward``, PyTorch's initialisation scale by default.

    An LSTM problem has a random c0 too (or None when ``h0`` is False).
    """
    rng = np.random.default_rng(seed)
    s = 1.0 / np.sqrt(H) if weight_scale is None else weight_scale
    GH = GATES[cell] * H

    def u(*shape):
        return rng.uniform(-s, s, shape).astype(dtype)

    problem = dict(
        x=rng.standard_normal((T, B, I)).astype(dtype),
        h0=rng.standard_normal((B, H)).astype(dtype) * 0.5 if h0 else None,
        W_ih=u(GH, I), W_hh=u(GH, H),
        b_ih=u(GH) if bias[0] else None, b_hh=u(GH) if bias[1] else None,
        lengths=lengths,
    )
    if cell == "lstm":
        problem["c0"] = rng.standard_normal((B, H)).astype(dtype) if h0 else None
    return problem


def params(cell):
    return ("x", *STATES[cell], "W_ih", "W_hh", "b_ih", "b_hh")


def forward(cell, problem, backend="reference", **kwargs):
    import fastrnn
    from fastrnn import reference

    if backend == "reference":
        fn = getattr(reference, f"{cell}_forward")
    else:
        fn = getattr(fastrnn, f"{cell}_forward")
        kwargs["backend"] = backend
    *outs, cache = fn(**problem, **kwargs)
    return dict(zip(("out", *FINALS[cell]), outs)), cache


def backward(cell, upstream, cache, module=None):
    """``module``: fastrnn (the default) or fastrnn.reference."""
    import fastrnn

    fn = getattr(module or fastrnn, f"{cell}_backward")
    names = ("d_out", *("d_" + f for f in FINALS[cell]))
    return fn(*(upstream.get(n) for n in names), cache)._asdict()


def random_upstream(cell, T, B, H, dtype=np.float64, seed=1):
    """Random d_out (T, B, H) and d_h_n[, d_c_n] (B, H)."""
    rng = np.random.default_rng(seed)
    ups = {"d_out": rng.standard_normal((T, B, H)).astype(dtype)}
    for f in FINALS[cell]:
        ups["d_" + f] = rng.standard_normal((B, H)).astype(dtype)
    return ups
