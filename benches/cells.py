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
from fastrnn._spec import CELLS as SPECS


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
    """``impl``: a backend or "torch", with "-bf16" for bfloat16 products."""
    base, bf16 = impl.removesuffix("-bf16"), impl.endswith("-bf16")
    if base == "torch":
        return cell.torch_runner(problem, training, bf16)
    return cell.fastrnn_runner(problem, base, training, bf16)


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


# --- The cells, from fastrnn's cell spec ------------------------------------
#
# One generic problem maker and runner per side; a cell differs only in what
# its spec says: its gate count, its states (the LSTM's c too), its options
# (run at their defaults, e.g. the Elman cell's tanh) and its layer's name.


def _torch_options(spec):
    """The options at their defaults that torch's module takes too: the named
    ones (the Elman cell's nonlinearity).  A flag option (the GRU's
    reset_after) is fastrnn's own, and its default is torch's only form."""
    return {k: v for k, v in spec.defaults.items() if isinstance(v, str)}


def _rng(*key):
    return np.random.default_rng([20240917, *key])


def make_problem(cell, T, B, I, H, dtype):  # noqa: E741
    """x (T, B, I) standard normal; weights uniform(-1/sqrt(H), 1/sqrt(H)) as
    PyTorch initialises them; h0 (and the LSTM's c0) (B, H) uniform(-1, 1).

    x comes from its own stream, so the problem at a shorter T is the first
    steps of the longer one (the error check relies on this).
    """
    dtype = np.dtype(dtype)
    s = 1 / np.sqrt(H)
    GH = SPECS[cell].G * H
    w = _rng(B, I, H, 1)
    problem = dict(
        x=_rng(B, I, H, 0).standard_normal((T, B, I), dtype=dtype),
        h0=w.uniform(-1, 1, (B, H)).astype(dtype),
        W_ih=w.uniform(-s, s, (GH, I)).astype(dtype),
        W_hh=w.uniform(-s, s, (GH, H)).astype(dtype),
        b_ih=w.uniform(-s, s, GH).astype(dtype),
        b_hh=w.uniform(-s, s, GH).astype(dtype),
    )
    for name in SPECS[cell].initial[1:]:
        problem[name] = w.uniform(-1, 1, (B, H)).astype(dtype)
    return problem


def _d_out(problem, H):
    """dL/d out = ones (the loss is out.sum()), made once per problem and kept in it."""
    if "d_out" not in problem:
        T, B, _ = problem["x"].shape
        problem["d_out"] = np.ones((T, B, H), problem["x"].dtype)
    return problem["d_out"]


def _arrays(cell, problem):
    """The spec's positional inputs in order; its optional weights (the LSTM's
    peepholes W_ch) are keyword-only and left out: the benchmarks time the plain cell."""
    spec = SPECS[cell]
    return tuple(problem[n] for n in spec.inputs if n not in spec.extras)


def fastrnn_runner(cell, problem, backend, training, bf16=False):
    forward = getattr(fastrnn, f"{cell}_forward")
    backward = getattr(fastrnn, f"{cell}_backward")
    args = _arrays(cell, problem)
    finals = SPECS[cell].finals
    kwargs = {**SPECS[cell].defaults, **({"compute_dtype": "bfloat16"} if bf16 else {})}
    if not training:
        run = functools.partial(forward, *args, training=False, backend=backend, **kwargs)

        def collect(result):
            return dict(zip(("out", *finals), result[:-1]))

        return run, collect

    d_out = _d_out(problem, problem["W_hh"].shape[1])
    no_state_grads = (None,) * len(finals)

    def run():
        *outs, cache = forward(*args, training=True, backend=backend, **kwargs)
        return outs, backward(d_out, *no_state_grads, cache)

    def collect(result):
        outs, grads = result
        named = grads._asdict()
        return {**dict(zip(("out", *finals), outs)), **{k: v for k, v in named.items() if v is not None}}

    return run, collect


@functools.lru_cache(maxsize=None)
def torch_autocast_error(layer):
    """torch's own error where ``torch.nn.<layer>`` does not run under
    torch.autocast("cpu", dtype=torch.bfloat16) on this CPU, else None.  (Its
    bf16 LSTM is a oneDNN primitive: on an AMD EPYC with AVX2 only, torch
    2.13 raised "could not create a primitive descriptor for the LSTM
    forward propagation primitive".)"""
    import torch

    module = getattr(torch.nn, layer)(4, 8)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            module(torch.randn(3, 2, 4))
    except RuntimeError as e:
        return str(e).splitlines()[0]
    return None


def torch_runner(cell, problem, training, bf16=False):
    """torch.nn.RNN(nonlinearity="tanh") / LSTM / GRU with the same weights, time-major input;
    under torch.autocast("cpu", dtype=torch.bfloat16) when ``bf16``.

    Training is forward + backward of (out * d_out).sum() with d_out = ones,
    asking for the same gradients fastrnn returns (x, initial states, weights, biases).
    """
    import torch

    p = problem
    T, B, I = p["x"].shape  # noqa: E741
    H = p["W_hh"].shape[1]
    x = torch.from_numpy(p["x"])
    spec = SPECS[cell]
    module = getattr(torch.nn, spec.layer)(I, H, dtype=x.dtype, **_torch_options(spec))
    with torch.no_grad():
        for param, key in (("weight_ih_l0", "W_ih"), ("weight_hh_l0", "W_hh"),
                           ("bias_ih_l0", "b_ih"), ("bias_hh_l0", "b_hh")):
            getattr(module, param).copy_(torch.from_numpy(p[key]))
    states = [torch.from_numpy(p[k][None]) for k in spec.initial]
    finals = spec.finals
    several = len(states) > 1  # torch passes several states as a tuple, one as itself

    def call():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out, state = module(x, tuple(states) if several else states[0])
        return out, (state if several else (state,))

    def numpy_outs(out, state):
        return {"out": out.detach().float().numpy(),
                **{k: s[0].detach().float().numpy() for k, s in zip(finals, state)}}

    if not training:
        def run():
            with torch.inference_mode():
                return call()

        def collect(result):
            return numpy_outs(*result)

        return run, collect

    x = x.detach().requires_grad_(True)
    states = [s.detach().requires_grad_(True) for s in states]
    d_out = torch.from_numpy(_d_out(p, H))
    wrt = [x, *states, module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0,
           module.bias_hh_l0]
    names = spec.grads

    def run():
        out, state = call()
        return out, state, torch.autograd.grad((out.float() * d_out).sum(), wrt)

    def collect(result):
        out, state, grads = result
        g = {n: v.float().numpy() for n, v in zip(names, grads)}
        for name in spec.state_grads:
            g[name] = g[name][0]
        return {**numpy_outs(out, state), **g}

    return run, collect


def _cell(spec):
    options = ", ".join(f'{k}="{v}"' for k, v in _torch_options(spec).items())
    return Cell(name=spec.name, gates=spec.G,
                make_problem=functools.partial(make_problem, spec.name),
                fastrnn_runner=functools.partial(fastrnn_runner, spec.name),
                torch_runner=functools.partial(torch_runner, spec.name),
                torch_name=f"torch.nn.{spec.layer}" + (f"({options})" if options else ""))


CELLS = {name: _cell(spec) for name, spec in SPECS.items()}
