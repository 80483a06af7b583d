"""fastrnn's LayerNorm LSTM (``fastrnn.layernorm_lstm_forward`` /
``_backward``) beside fastrnn's plain LSTM and beside the same cell in
PyTorch (eager and ``torch.compile``) and in JAX, inference and training,
each with its error against float64, in one interleaved run:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benches.layernorm
        [--shapes 1x64x256,16x256x256,64x1024x256] [--rounds 5] [--budget 0.3]
        [--quick [--compile]] [--out FILE]

(shapes are B x H x T, I = H, float32.)  The cell is PyTorch's
``LayerNormLSTMCell`` of ``benchmarks/fastrnns/custom_lstms.py``: igates =
LN_i(x W_ih^T), hgates = LN_h(h W_hh^T), i, f, g, o = chunk(igates +
hgates), sigmoid / sigmoid / tanh / sigmoid, c = LN_c(f * c + i * g),
h = o * tanh(c); every LN a layer norm (eps 1e-5) with its own gain and bias,
no product biases.  Contenders, each for inference (forward only:
``training=False`` / ``torch.no_grad()``) and training (the forward and the
backward of d_out, a fixed standard-normal array, no d_h_n / d_c_n: every
parameter's gradient and x's), all on 2 threads:

- fastrnn LN: ``fastrnn.layernorm_lstm_forward`` / ``_backward``,
  ``backend=None`` (the fastest here: Cython);
- fastrnn plain: ``fastrnn.lstm_forward`` / ``lstm_backward`` with zero
  biases, the same W_ih, W_hh (its error is against its own float64 run);
- torch eager: the cell as custom_lstms.py writes it (``nn.LayerNorm``
  modules, ``torch.mm(input, weight_ih.t())`` inside the step) in a plain
  Python loop over ``input.unbind(0)``, without torch.jit; training:
  ``(out * d_out).sum().backward()``;
- torch.compile: the same per-step cell under ``torch.compile(fullgraph=True)``
  (inductor), the loop in Python; warmed up before timing, the first call
  (compilation included) reported beside; a cell that does not compile is
  reported as such and the run goes on;
- JAX: the same cell under ``jax.jit`` of a ``jax.lax.scan`` over the steps;
  training: ``jax.jit`` of ``jax.vjp`` of the forward (the output and the
  gradients of sum(out * d_out) w.r.t. every parameter and x); XLA_FLAGS
  set before jax is imported (the facts say what was set).  Skipped with a
  note where jax is not installed.

Weights: W_ih, W_hh uniform(-1/sqrt(H), 1/sqrt(H)), every gain 1 + 0.1 *
normal and every bias 0.1 * normal (the affine is exercised), x standard
normal, zero initial states; the same for all.  Each time is the median over
the rounds (5; the order alternating) of the best call within 0.3 s (--budget;
after a warm-up call, unless that one alone took the budget:
``fastrnn._timing.best_within``).
Errors: out err, the largest |out - out in float64| (inference and training
forward); dW_hh err, the largest |dW_hh - dW_hh in float64| over the largest
|dW_hh in float64|; float64: ``fastrnn.reference.layernorm_lstm_forward`` /
``_backward`` on float64 copies (fastrnn plain: fastrnn's Cython LSTM in
float64).  --quick: tiny shapes, 2 short rounds, torch.compile left out
(unless --compile), to check that the script works.

The targets (X's time over fastrnn LN's, above 1: fastrnn faster),
marked in the ratio table (a check where met, a cross where not):

- fastrnn plain over fastrnn LN >= 0.7 (LN at least 0.7x plain's speed) at
  all three shapes, inference and training;
- torch eager over fastrnn LN >= 20 at (B, H) = (1, 64), >= 1.8 at
  (16, 256), >= 1.1 at (64, 1024);
- JAX over fastrnn LN >= 2 at (1, 64), >= 2 at (16, 256), >= 1.1 at
  (64, 1024).
"""
import argparse
import datetime
import os
import platform
import sys
import time
import warnings
from importlib import metadata

# XLA reads its flags once, when jax's backend starts: before jax is imported.
XLA_FLAGS = "--xla_cpu_multi_thread_eigen=true"  # XLA's CPU pools: as many threads as cores (2 here)
if "jax" not in sys.modules and "XLA_FLAGS" not in os.environ:
    os.environ["XLA_FLAGS"] = XLA_FLAGS
    _XLA_NOTE = "set by this script"
elif "jax" in sys.modules:
    _XLA_NOTE = "jax was imported before this script: whatever its import found"
else:
    _XLA_NOTE = "from the environment"

import numpy as np  # noqa: E402

import fastrnn  # noqa: E402
from fastrnn import reference  # noqa: E402
from fastrnn._timing import BUSY_CORES, Load  # noqa: E402
from fastrnn._timing import best_within as best  # noqa: E402

try:
    import torch
    from torch import nn
except ImportError:
    torch = nn = None

try:
    import jax
    import jax.numpy as jnp
except ImportError:
    jax = jnp = None

SHAPES = [(1, 64, 256), (16, 256, 256), (64, 1024, 256)]  # (B, H, T)
QUICK_SHAPES = [(1, 8, 6), (2, 16, 8)]
ROUNDS, BUDGET, QUICK_ROUNDS, QUICK_BUDGET = 5, 0.3, 2, 0.02
THREADS = 2  # every contender's
PAUSE = 0.05  # s before each timing: the previous contender's thread pools stop spinning
EPS = 1e-5
CONTENDERS = ("fastrnn LN", "fastrnn plain", "torch eager", "torch.compile", "jax")
MODES = ("inference", "training")
SHORT = {"inference": "inf", "training": "train"}
ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
       "XLA_FLAGS")
# The targets: {contender: {(B, H): least X_time / fastrnn_LN_time}},
# for inference and training alike.
TARGETS = {
    "fastrnn plain": {(1, 64): 0.7, (16, 256): 0.7, (64, 1024): 0.7},
    "torch eager": {(1, 64): 20.0, (16, 256): 1.8, (64, 1024): 1.1},
    "jax": {(1, 64): 2.0, (16, 256): 2.0, (64, 1024): 1.1},
}
RATIO_NAMES = {"fastrnn plain": "plain", "torch eager": "eager", "torch.compile": "compile",
               "jax": "JAX"}


def _shape(shape):
    return "x".join(map(str, shape))


def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _why(e):
    """An exception in one line."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def problem(B, H, T):
    """x (T, B, H), W_ih, W_hh (4H, H), the six LayerNorm parameters
    [gamma_i, beta_i, gamma_h, beta_h (4H,), gamma_c, beta_c (H,)] and d_out
    (T, B, H), float32, I = H."""
    rng = np.random.default_rng(0)
    k = 1 / np.sqrt(H)
    x = rng.standard_normal((T, B, H), dtype=np.float32)
    W_ih = rng.uniform(-k, k, (4 * H, H)).astype(np.float32)
    W_hh = rng.uniform(-k, k, (4 * H, H)).astype(np.float32)
    norms = []
    for width in (4 * H, 4 * H, H):
        norms += [(1 + 0.1 * rng.standard_normal(width)).astype(np.float32),
                  (0.1 * rng.standard_normal(width)).astype(np.float32)]
    d_out = rng.standard_normal((T, B, H), dtype=np.float32)
    return dict(x=x, W_ih=W_ih, W_hh=W_hh, norms=norms, d_out=d_out)


def exact(p):
    """The float64 answers: {"ln": (out, dW_hh), "plain": (out, dW_hh)}; the
    LayerNorm LSTM by fastrnn's reference, the plain one by its Cython backend."""
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    x, W_ih, W_hh, d_out = f64(p["x"]), f64(p["W_ih"]), f64(p["W_hh"]), f64(p["d_out"])
    out, _, _, cache = reference.layernorm_lstm_forward(
        x, None, None, W_ih, W_hh, *map(f64, p["norms"]), eps=EPS, training=True)
    ln = (np.array(out), reference.layernorm_lstm_backward(d_out, None, None, cache).dW_hh)
    del cache
    b = np.zeros(W_ih.shape[0])
    out, _, _, cache = fastrnn.lstm_forward(x, None, None, W_ih, W_hh, b, b, training=True,
                                            backend="cython")
    plain = (np.array(out), fastrnn.lstm_backward(d_out, None, None, cache).dW_hh)
    return {"ln": ln, "plain": plain}


# Each contender: {"inference": run() -> out, "training": run() -> (out, dW_hh)}
# (arrays or tensors, converted outside the timed calls).

def fastrnn_ln(p):
    x, W_ih, W_hh, norms, d_out = p["x"], p["W_ih"], p["W_hh"], p["norms"], p["d_out"]

    def infer():
        return fastrnn.layernorm_lstm_forward(x, None, None, W_ih, W_hh, *norms, eps=EPS,
                                              training=False, backend=None)[0]

    def train():
        out, _, _, cache = fastrnn.layernorm_lstm_forward(x, None, None, W_ih, W_hh, *norms,
                                                          eps=EPS, training=True, backend=None)
        return out, fastrnn.layernorm_lstm_backward(d_out, None, None, cache).dW_hh

    return {"inference": infer, "training": train}


def fastrnn_plain(p):
    x, W_ih, W_hh, d_out = p["x"], p["W_ih"], p["W_hh"], p["d_out"]
    b = np.zeros(W_ih.shape[0], np.float32)

    def infer():
        return fastrnn.lstm_forward(x, None, None, W_ih, W_hh, b, b, training=False)[0]

    def train():
        out, _, _, cache = fastrnn.lstm_forward(x, None, None, W_ih, W_hh, b, b, training=True)
        return out, fastrnn.lstm_backward(d_out, None, None, cache).dW_hh

    return {"inference": infer, "training": train}


if torch is not None:
    class LayerNormLSTMCell(nn.Module):
        """custom_lstms.py's LayerNormLSTMCell, as a plain nn.Module (no torch.jit)."""

        def __init__(self, input_size, hidden_size):
            super().__init__()
            self.input_size = input_size
            self.hidden_size = hidden_size
            self.weight_ih = nn.Parameter(torch.randn(4 * hidden_size, input_size))
            self.weight_hh = nn.Parameter(torch.randn(4 * hidden_size, hidden_size))
            # The layernorms provide learnable biases
            self.layernorm_i = nn.LayerNorm(4 * hidden_size)
            self.layernorm_h = nn.LayerNorm(4 * hidden_size)
            self.layernorm_c = nn.LayerNorm(hidden_size)

        def forward(self, input, state):
            hx, cx = state
            igates = self.layernorm_i(torch.mm(input, self.weight_ih.t()))
            hgates = self.layernorm_h(torch.mm(hx, self.weight_hh.t()))
            gates = igates + hgates
            ingate, forgetgate, cellgate, outgate = gates.chunk(4, 1)

            ingate = torch.sigmoid(ingate)
            forgetgate = torch.sigmoid(forgetgate)
            cellgate = torch.tanh(cellgate)
            outgate = torch.sigmoid(outgate)

            cy = self.layernorm_c((forgetgate * cx) + (ingate * cellgate))
            hy = outgate * torch.tanh(cy)

            return hy, (hy, cy)

    class LSTMLayer(nn.Module):
        """custom_lstms.py's LSTMLayer: the cell over input.unbind(0)."""

        def __init__(self, cell):
            super().__init__()
            self.cell = cell

        def forward(self, input, state):
            inputs = input.unbind(0)
            outputs = []
            for i in range(len(inputs)):
                out, state = self.cell(inputs[i], state)
                outputs += [out]
            return torch.stack(outputs), state


def _torch_cell(p):
    H = p["W_hh"].shape[1]
    cell = LayerNormLSTMCell(p["W_ih"].shape[1], H)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.from_numpy(p["W_ih"]))
        cell.weight_hh.copy_(torch.from_numpy(p["W_hh"]))
        for k, name in enumerate(("layernorm_i", "layernorm_h", "layernorm_c")):
            ln = getattr(cell, name)
            ln.weight.copy_(torch.from_numpy(p["norms"][2 * k]))
            ln.bias.copy_(torch.from_numpy(p["norms"][2 * k + 1]))
    return cell


def torch_runs(p, cell):
    """The runs of a layer of ``cell`` (eager or compiled), the parameters
    those of ``owner`` (the eager cell whose gradients the backward fills)."""
    layer = LSTMLayer(cell)
    owner = getattr(cell, "_orig_mod", cell)
    T, B, H = p["d_out"].shape
    xt = torch.from_numpy(p["x"]).requires_grad_()  # dx as well, as fastrnn's backward gives
    d_out = torch.from_numpy(p["d_out"])
    h0, c0 = torch.zeros(B, H), torch.zeros(B, H)

    def infer():
        with torch.no_grad():
            return layer(xt, (h0, c0))[0]

    def train():
        for param in owner.parameters():
            param.grad = None
        xt.grad = None
        out = layer(xt, (h0, c0))[0]
        (out * d_out).sum().backward()
        return out.detach(), owner.weight_hh.grad

    return {"inference": infer, "training": train}


def _raise_recompile_limit():
    """Three graphs a shape (no_grad, and the first step and the others with
    grad); torch._dynamo.reset() between shapes, and room to spare."""
    config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), 64))


def torch_compiled(p):
    torch._dynamo.reset()
    _raise_recompile_limit()
    return torch_runs(p, torch.compile(_torch_cell(p), fullgraph=True))


if jax is not None:
    def _jax_ln(a, gamma, beta):
        mean = jnp.mean(a, axis=-1, keepdims=True)
        centred = a - mean
        var = jnp.mean(centred * centred, axis=-1, keepdims=True)
        return centred * jax.lax.rsqrt(var + EPS) * gamma + beta

    def _jax_forward(params, x, h0, c0):
        W_ih, W_hh, gamma_i, beta_i, gamma_h, beta_h, gamma_c, beta_c = params

        def step(carry, x_t):
            h, c = carry
            igates = _jax_ln(x_t @ W_ih.T, gamma_i, beta_i)
            hgates = _jax_ln(h @ W_hh.T, gamma_h, beta_h)
            i, f, g, o = jnp.split(igates + hgates, 4, axis=1)
            i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
            c = _jax_ln(f * c + i * g, gamma_c, beta_c)
            h = o * jnp.tanh(c)
            return (h, c), h

        return jax.lax.scan(step, (h0, c0), x)[1]

    def _jax_train(params, x, h0, c0, d_out):
        out, vjp = jax.vjp(lambda ps, xs: _jax_forward(ps, xs, h0, c0), params, x)
        d_params, dx = vjp(d_out)
        return out, d_params, dx


def jax_runs(p):
    T, B, H = p["d_out"].shape
    params = tuple(jax.device_put(a) for a in [p["W_ih"], p["W_hh"], *p["norms"]])
    x, d_out = jax.device_put(p["x"]), jax.device_put(p["d_out"])
    h0 = c0 = jnp.zeros((B, H), jnp.float32)
    forward, train_step = jax.jit(_jax_forward), jax.jit(_jax_train)

    def infer():
        return jax.block_until_ready(forward(params, x, h0, c0))

    def train():
        out, d_params, dx = jax.block_until_ready(train_step(params, x, h0, c0, d_out))
        return out, d_params[1]

    return {"inference": infer, "training": train}


def makers(compile_torch, skipped):
    """{contender: make(problem) -> runs} for those that can run here."""
    found = {"fastrnn LN": fastrnn_ln, "fastrnn plain": fastrnn_plain}
    if torch is None:
        skipped["torch eager, torch.compile"] = "torch is not installed"
    else:
        found["torch eager"] = lambda p: torch_runs(p, _torch_cell(p))
        if compile_torch:
            found["torch.compile"] = torch_compiled
        else:
            skipped["torch.compile"] = "left out (--quick without --compile)"
    if jax is None:
        skipped["jax"] = "jax is not installed (pip install jax)"
    else:
        found["jax"] = jax_runs
    return found


def _np(a):
    if torch is not None and isinstance(a, torch.Tensor):
        a = a.detach().numpy()
    return np.asarray(a, np.float64)


def measure(shape, rounds, budget, compile_torch, skipped):
    """One shape: ({(contender, mode): median seconds}, {contender: (out err,
    dW_hh err)}, {(contender, mode): first call's seconds}, {contender: why
    it failed})."""
    B, H, T = shape
    p = problem(B, H, T)
    want = exact(p)
    runs, errs, first, failed = {}, {}, {}, {}
    for name, make in makers(compile_torch, skipped).items():
        # First calls (torch.compile and jax compile here): the errors.
        try:
            made = make(p)
            t0 = time.perf_counter()
            out_inf = made["inference"]()
            first[name, "inference"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            out_train, dW_hh = made["training"]()
            first[name, "training"] = time.perf_counter() - t0
            out_ref, dW_ref = want["plain" if name == "fastrnn plain" else "ln"]
            out_err = max(np.abs(_np(out_inf) - out_ref).max(),
                          np.abs(_np(out_train) - out_ref).max())
            dW_err = np.abs(_np(dW_hh) - dW_ref).max() / np.abs(dW_ref).max()
        except Exception as e:  # noqa: BLE001  a contender that fails: a note, not a crash
            failed[name] = (("did not compile: " if name == "torch.compile" else "failed: ")
                            + _why(e))
            continue
        errs[name] = (float(out_err), float(dW_err))
        for mode in MODES:
            runs[name, mode] = made[mode]
    del want
    times = {key: [] for key in runs}
    order = list(runs)
    for k in range(rounds):
        for key in (order if k % 2 == 0 else order[::-1]):
            time.sleep(PAUSE)
            times[key].append(best(runs[key], budget))
        print(".", end="", flush=True, file=sys.stderr)
    return ({key: float(np.median(ts)) for key, ts in times.items()}, errs, first, failed)


def times_table(rows):
    """Rows: contender; per shape its inference and training ms and both errors."""
    shapes = [shape for shape, _ in rows]
    lines = ["| contender | " + " | ".join(f"{_shape(s)} inf ms | train ms | out err | dW_hh err"
                                         for s in shapes) + " |",
             "|---" * (1 + 4 * len(shapes)) + "|"]
    for name in CONTENDERS:
        if not any(name in res["errs"] for _, res in rows):
            continue
        cells = []
        for _, res in rows:
            if name not in res["errs"]:
                cells += ["n/a", "n/a", "-", "-"]
                continue
            cells += [f"{res['times'][name, mode] * 1e3:.3g}" for mode in MODES]
            cells += [f"{e:.1e}" for e in res["errs"][name]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ratio(res, name, mode, shape):
    """X's time over fastrnn LN's, marked against its target."""
    ours, theirs = res["times"].get(("fastrnn LN", mode)), res["times"].get((name, mode))
    if ours is None or theirs is None:
        return "-"
    r = theirs / ours
    target = TARGETS.get(name, {}).get(shape[:2])
    mark = "" if target is None else (" ✓" if r >= target else " ✗")
    return f"{r:.{2 if r < 10 else 1}f}x{mark}"


def ratios_table(rows):
    """Rows: shape; X_time / fastrnn_LN_time for each other contender and mode."""
    names = list(RATIO_NAMES)
    lines = ["| BxHxT | " + " | ".join(f"{RATIO_NAMES[n]}/LN {SHORT[m]}" for n in names
                                     for m in MODES) + " |",
             "|---" * (1 + 2 * len(names)) + "|"]
    for shape, res in rows:
        lines.append(f"| {_shape(shape)} | " + " | ".join(
            _ratio(res, n, m, shape) for n in names for m in MODES) + " |")
    return "\n".join(lines)


def targets_line():
    parts = []
    for name, by in TARGETS.items():
        parts.append(f"{RATIO_NAMES[name]}/LN >= " + ", ".join(
            f"{t:g} at ({b}, {h})" for (b, h), t in by.items()))
    return "; ".join(parts)


def first_calls(rows):
    """The first calls of the contenders that compile: their compile time."""
    lines = []
    for name, what in (("torch.compile", "compilation included"),
                       ("jax", "jax.jit tracing and XLA compilation included")):
        got = [f"{_shape(shape)}: inference {res['first'][name, 'inference']:.2f} s, training "
               f"{res['first'][name, 'training']:.2f} s" for shape, res in rows
               if (name, "training") in res["first"]]
        if got:
            lines.append(f"- {name} first call ({what}; the timed calls come after): "
                         + "; ".join(got) + ".")
    return lines


def facts(started, shapes, rounds, budget, quick, compile_torch, other, wall):
    """The lines a reader needs to trust or reproduce the run."""
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        isa = f"{fastrnn.get_isa_level()} (this CPU: {', '.join(fastrnn.cpu_isa_levels())})"
    except (ImportError, ValueError) as e:
        isa = f"none ({e})"
    try:
        from fastrnn.layernorm import _backend
        backend = _backend("layernorm_lstm", None)
    except Exception as e:  # noqa: BLE001
        backend = f"? ({_why(e)})"
    versions = ", ".join(f"{d} {v}" for d in ("fastrnn", "numpy", "torch", "jax", "jaxlib")
                         if (v := _version(d)))
    env = ", ".join(f"{k}={os.environ[k]!r}" if k in os.environ else f"{k} unset" for k in ENV)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    command = (f"python -m benches.layernorm --shapes {','.join(map(_shape, shapes))} "
               f"--rounds {rounds} --budget {budget:g}" + (" --quick" if quick else "")
               + (" --compile" if quick and compile_torch else ""))
    return [
        f"- Run: {started:%Y-%m-%d %H:%M} UTC, `{command}`, {wall:.0f} s.",
        f"- CPU: {cpu}, {cores} cores; fastrnn's Cython kernels at the {isa} level; "
        f"fastrnn LN's backend (backend=None): {backend}.",
        f"- Versions: {versions}.",
        f"- Environment: {env}.",
        f"- Threads: fastrnn {fastrnn.get_num_threads()}, torch "
        f"{torch.get_num_threads() if torch is not None else '-'}, jax: XLA_FLAGS "
        f"{_XLA_NOTE} (XLA's CPU client has no thread-count setting; its pools are sized "
        f"to the cores this process may use, {cores} here).",
        "- Load: other processes kept "
        + ("?" if other is None else f"{other:.2f}") + f" of {os.cpu_count()} cores busy "
        "on average during the run.",
    ]


def main(shapes=SHAPES, rounds=ROUNDS, budget=BUDGET, quick=False, compile_torch=True, out=None):
    """Measure and print; returns (rows [(shape, {"times": {(contender,
    mode): s}, "errs": {contender: (out err, dW_hh err)}, "first": {...},
    "failed": {contender: why}})], the printed text)."""
    started = datetime.datetime.now(datetime.timezone.utc)
    load = Load()
    if fastrnn.get_num_threads() != THREADS:
        fastrnn.set_num_threads(THREADS)
    if torch is not None:
        torch.set_num_threads(THREADS)
    rows, skipped = [], {}
    with warnings.catch_warnings(record=True) as said:  # printed once, after the tables
        warnings.simplefilter("default")
        for shape in shapes:
            times, errs, first, failed = measure(shape, rounds, budget, compile_torch, skipped)
            rows.append((shape, dict(times=times, errs=errs, first=first, failed=failed)))
    print(file=sys.stderr)
    other = load.other_cores()
    text = ["# fastrnn's LayerNorm LSTM beside its plain LSTM, PyTorch and JAX\n",
            times_table(rows), "",
            f"ms: the median over {rounds} interleaved rounds of the best call in {budget} s; "
            "inf: the forward without a cache or autograd; train: the forward and the backward "
            "of a fixed d_out (every parameter's gradient and x's).  out err: the largest "
            "|out - out in float64| (inference and training); dW_hh err: the largest "
            "|dW_hh - dW_hh in float64| over the largest |dW_hh in float64|; float64: "
            "fastrnn.reference's LayerNorm LSTM (fastrnn plain: fastrnn's Cython LSTM, zero "
            f"biases).  I = H, float32, every contender on {THREADS} threads.", "",
            ratios_table(rows), "",
            "X/LN: X's time over fastrnn LN's (above 1: fastrnn LN faster; plain/LN: LN's "
            "speed as a share of the plain LSTM's); inf / train as above.  Targets (✓ met, "
            f"✗ missed): {targets_line()}.", ""]
    text += first_calls(rows)
    if "torch.compile" not in skipped:
        compiled = [_shape(s) for s, res in rows if "torch.compile" in res["errs"]]
        if compiled:
            text.append("- torch.compile: the per-step cell compiled (fullgraph=True, inductor) "
                        f"at {', '.join(compiled)}.")
    for name, why in dict.fromkeys(skipped.items()):
        text.append(f"- not run: {name}: {why}")
    for shape, res in rows:
        for name, why in res["failed"].items():
            text.append(f"- n/a: {name}, {_shape(shape)}: {why}")
    text.append("")
    text += facts(started, shapes, rounds, budget, quick, compile_torch, other,
                  load.wall_seconds())
    if other is not None and other > BUSY_CORES:
        text.append("- warning: a shared machine; multi-threaded times can be many times "
                    "too slow: rerun on an idle one to compare.")
    for message in dict.fromkeys(str(w.message).splitlines()[0] for w in said):
        text.append(f"- warning during the run: {message}")
    text = "\n".join(text) + "\n"
    print(text, end="")
    if out:
        with open(out, "w") as f:
            f.write(text)
        print(f"wrote {out}")
    return rows, text


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", help="BxHxT,... (default "
                    + ",".join(map(_shape, SHAPES)) + ")")
    ap.add_argument("--rounds", type=int, help=f"interleaved rounds (default {ROUNDS})")
    ap.add_argument("--budget", type=float,
                    help=f"seconds of calls a contender gets a round (default {BUDGET}; "
                    "a call longer than this is timed once)")
    ap.add_argument("--quick", action="store_true",
                    help="tiny shapes, 2 short rounds, no torch.compile: check that it works")
    ap.add_argument("--compile", action="store_true",
                    help="with --quick: run torch.compile too")
    ap.add_argument("--out", help="also write the tables and facts into this file")
    args = ap.parse_args(argv)
    q = args.quick
    try:
        shapes = ([tuple(map(int, s.split("x"))) for s in args.shapes.split(",")] if args.shapes
                  else QUICK_SHAPES if q else SHAPES)
    except ValueError:
        ap.error("shapes are BxHxT")
    if any(len(s) != 3 or min(s) < 1 for s in shapes):
        ap.error("shapes are BxHxT, each at least 1")
    return dict(shapes=shapes, rounds=args.rounds or (QUICK_ROUNDS if q else ROUNDS),
                budget=args.budget or (QUICK_BUDGET if q else BUDGET), quick=q,
                compile_torch=not q or args.compile, out=args.out)


if __name__ == "__main__":
    main(**parse())
