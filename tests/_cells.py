"""The three cells behind one interface, so each test family runs for every cell.

``forward(cell, problem, backend)`` calls ``{cell}_forward`` (the reference
for backend "reference") and returns ``(outputs, cache)`` with outputs a dict
``out, h_n[, c_n]``; ``backward(cell, upstream, cache)`` returns the
gradients as a dict.  ``upstream`` is a dict ``d_out, d_h_n[, d_c_n]``.
"""
import numpy as np

import fastrnn
from fastrnn import reference

CELLS = ("rnn", "lstm", "gru")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
FINALS = {"rnn": ("h_n",), "lstm": ("h_n", "c_n"), "gru": ("h_n",)}
STATES = {"rnn": ("h0",), "lstm": ("h0", "c0"), "gru": ("h0",)}
# Parameter name -> its gradient's name in the grads tuple.
GRAD_OF = {"x": "dx", "h0": "dh0", "c0": "dc0", "W_ih": "dW_ih", "W_hh": "dW_hh",
           "b_ih": "db_ih", "b_hh": "db_hh"}


def params(cell):
    return ("x", *STATES[cell], "W_ih", "W_hh", "b_ih", "b_hh")


def forward(cell, problem, backend="reference", **kwargs):
    if backend == "reference":
        fn = getattr(reference, f"{cell}_forward")
    else:
        fn = getattr(fastrnn, f"{cell}_forward")
        kwargs["backend"] = backend
    *outs, cache = fn(**problem, **kwargs)
    return dict(zip(("out", *FINALS[cell]), outs)), cache


def backward(cell, upstream, cache, module=fastrnn):
    fn = getattr(module, f"{cell}_backward")
    names = ("d_out", *("d_" + f for f in FINALS[cell]))
    return fn(*(upstream.get(n) for n in names), cache)._asdict()


def upstream(cell, T, B, H, dtype=np.float64, seed=1):
    """Random d_out (T, B, H) and d_h_n[, d_c_n] (B, H)."""
    rng = np.random.default_rng(seed)
    ups = {"d_out": rng.standard_normal((T, B, H)).astype(dtype)}
    for f in FINALS[cell]:
        ups["d_" + f] = rng.standard_normal((B, H)).astype(dtype)
    return ups
