"""Random problems and accuracy bounds, shared by ``python -m fastrnn`` and the tests."""
import numpy as np

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


GATES = {"rnn": 1, "lstm": 4, "gru": 3}


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
