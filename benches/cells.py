"""How each recurrent cell is benchmarked: its data, its FLOPs, and how each implementation runs it.

One ``Cell`` entry per cell.  LSTM and GRU join the suite as new entries in
``CELLS`` (a problem maker, a fastrnn runner and a torch runner); the grid,
the timing, the error check and the report are shared.

A runner returns ``(run, collect)``: ``run()`` is exactly what is timed
(nothing else: no conversion, no dict), ``collect(run())`` turns its result
into named NumPy arrays (``out``, ``h_n``, and for training the gradients
under fastrnn's names) to compare against the float64 reference.
"""
import dataclasses
import functools
from typing import Callable

import numpy as np

import fastrnn


@dataclasses.dataclass(frozen=True)
class Cell:
    name: str  # fastrnn's cell name, the first word of every group
    gates: int  # G: rows of W_ih are G*H
    make_problem: Callable  # (T, B, I, H, dtype) -> dict of arrays
    fastrnn_runner: Callable  # (problem, backend, training) -> (run, collect)
    torch_runner: Callable  # (problem, training) -> (run, collect)
    torch_name: str  # what the torch member is, for extra_info

    def forward_flops(self, T, B, I, H):  # noqa: E741
        """2 flops per multiply-add of the input and recurrent products: 2*T*B*(I*H + H*H)*G."""
        return 2 * T * B * (I * H + H * H) * self.gates

    def flops(self, T, B, I, H, training):  # noqa: E741
        """Training (forward + backward) counts as 3 forwards: the backward has two
        products per forward product (dX and dW for the input, dh and dW_hh for the state)."""
        return self.forward_flops(T, B, I, H) * (3 if training else 1)

    def memory_bytes(self, T, B, I, H, itemsize, training):  # noqa: E741
        """A generous estimate of the arrays one call keeps alive (inputs included)."""
        G = self.gates
        per_row = (3 * I + (3 + 2 * G) * H) if training else (I + (1 + G) * H)
        return itemsize * T * B * per_row


def runner(cell, impl, problem, training):
    if impl == "torch":
        return cell.torch_runner(problem, training)
    return cell.fastrnn_runner(problem, impl, training)


def compare(got, ref):
    """(max abs error, max relative error, names compared) of ``got`` against ``ref``.

    The relative error of an array is max |got - ref| / max |ref|; both
    numbers are the worst over the arrays both sides have.
    """
    abs_err = rel_err = 0.0
    names = []
    for name, r in ref.items():
        g = got.get(name)
        if g is None or r is None:
            continue
        diff = float(np.max(np.abs(np.asarray(g, np.float64) - r))) if r.size else 0.0
        scale = float(np.max(np.abs(r))) if r.size else 0.0
        abs_err = max(abs_err, diff)
        rel_err = max(rel_err, diff / scale if scale > 0 else diff)
        names.append(name)
    return abs_err, rel_err, names


# --- Elman ------------------------------------------------------------------


def _rng(*key):
    return np.random.default_rng([20240917, *key])


def elman_problem(T, B, I, H, dtype):  # noqa: E741
    """x (T, B, I) standard normal; weights uniform(-1/sqrt(H), 1/sqrt(H)) as
    PyTorch initialises them; h0 (B, H) uniform(-1, 1).

    x comes from its own stream, so the problem at a shorter T is the first
    steps of the longer one (the error check relies on this).
    """
    dtype = np.dtype(dtype)
    s = 1 / np.sqrt(H)
    w = _rng(B, I, H, 1)
    return dict(
        x=_rng(B, I, H, 0).standard_normal((T, B, I), dtype=dtype),
        h0=w.uniform(-1, 1, (B, H)).astype(dtype),
        W_ih=w.uniform(-s, s, (H, I)).astype(dtype),
        W_hh=w.uniform(-s, s, (H, H)).astype(dtype),
        b_ih=w.uniform(-s, s, H).astype(dtype),
        b_hh=w.uniform(-s, s, H).astype(dtype),
    )


def _d_out(problem, H):
    """dL/d out = ones (the loss is out.sum()), made once per problem and kept in it."""
    if "d_out" not in problem:
        T, B, _ = problem["x"].shape
        problem["d_out"] = np.ones((T, B, H), problem["x"].dtype)
    return problem["d_out"]


def elman_fastrnn(problem, backend, training):
    p = problem
    args = (p["x"], p["h0"], p["W_ih"], p["W_hh"], p["b_ih"], p["b_hh"])
    if not training:
        run = functools.partial(fastrnn.rnn_forward, *args, nonlinearity="tanh",
                                training=False, backend=backend)

        def collect(result):
            out, h_n, _ = result
            return {"out": out, "h_n": h_n}

        return run, collect

    d_out = _d_out(p, p["W_hh"].shape[1])

    def run():
        out, h_n, cache = fastrnn.rnn_forward(*args, nonlinearity="tanh", training=True,
                                              backend=backend)
        return out, h_n, fastrnn.rnn_backward(d_out, None, cache)

    def collect(result):
        out, h_n, grads = result
        return {"out": out, "h_n": h_n, **grads._asdict()}

    return run, collect


def elman_torch(problem, training):
    """torch.nn.RNN(I, H, nonlinearity="tanh") with the same weights, time-major input.

    Training is forward + backward of (out * d_out).sum() with d_out = ones,
    asking for the same gradients fastrnn returns (x, h0, weights, biases).
    """
    import torch

    p = problem
    T, B, I = p["x"].shape  # noqa: E741
    H = p["W_hh"].shape[1]
    x = torch.from_numpy(p["x"])
    rnn = torch.nn.RNN(I, H, nonlinearity="tanh", dtype=x.dtype)
    with torch.no_grad():
        for param, key in (("weight_ih_l0", "W_ih"), ("weight_hh_l0", "W_hh"),
                           ("bias_ih_l0", "b_ih"), ("bias_hh_l0", "b_hh")):
            getattr(rnn, param).copy_(torch.from_numpy(p[key]))
    h0 = torch.from_numpy(p["h0"][None])  # (num_layers=1, B, H)

    if not training:
        def run():
            with torch.inference_mode():
                return rnn(x, h0)

        def collect(result):
            out, h_n = result
            return {"out": out.numpy(), "h_n": h_n[0].numpy()}

        return run, collect

    x = x.detach().requires_grad_(True)
    h0 = h0.detach().requires_grad_(True)
    d_out = torch.from_numpy(_d_out(p, H))
    wrt = [x, h0, rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0]

    def run():
        out, h_n = rnn(x, h0)
        return out, h_n, torch.autograd.grad((out * d_out).sum(), wrt)

    def collect(result):
        out, h_n, (dx, dh0, dW_ih, dW_hh, db_ih, db_hh) = result
        return {"out": out.detach().numpy(), "h_n": h_n[0].detach().numpy(), "dx": dx.numpy(),
                "dh0": dh0[0].numpy(), "dW_ih": dW_ih.numpy(), "dW_hh": dW_hh.numpy(),
                "db_ih": db_ih.numpy(), "db_hh": db_hh.numpy()}

    return run, collect


CELLS = {
    "rnn": Cell(name="rnn", gates=1, make_problem=elman_problem, fastrnn_runner=elman_fastrnn,
                torch_runner=elman_torch, torch_name='torch.nn.RNN(nonlinearity="tanh")'),
}
