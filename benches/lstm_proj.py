"""fastrnn's LSTM with a projection (PyTorch's proj_size: h_t = (o * tanh(c_t))
W_hr^T, P columns) against torch.nn.LSTM(proj_size=P), the same weights,
inference and training, in one interleaved run:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benches.lstm_proj
        [--rounds N] [--shapes BxHxP,...] [--steps T] [--input I]
        [--backends cython[,numba]] [--quick]

(B, H, P) = (16, 1024, 256), (64, 1024, 256) with I = 256 (the input of every
layer after the first of a stacked LSTMP) and (1, 256, 64) for reference,
T = 256.  Inference: torch under inference_mode, fastrnn training=False.
Training: forward and backward of sum(out * g), g fixed and random, with
every parameter's gradient and dx.  torch on 2 threads, fastrnn at its
default; fastrnn's plain LSTM (no projection, same H, W_hh (4H, H)) for
context; numpy's 2048^3 sgemm on 2 threads for the machine's GEMM rate.

Each time is the median over the rounds (5; the order alternating) of the
best call within 0.3 s (after a warm-up call, unless that one alone took
0.3 s).  Beside it: the largest |out - out in float64| (fastrnn.reference on
float64 copies of the weights) and, training, the largest error of a
gradient relative to that gradient's largest entry.  --quick: tiny shapes,
2 rounds, to check that the script works.
"""
import argparse
import functools
import os
import platform
import sys
import time
import warnings
from importlib import metadata

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import fastrnn
from fastrnn import reference
from fastrnn._timing import BUSY_CORES, Load
from fastrnn._timing import best_within as best

SHAPES, STEPS, INPUT = [(16, 1024, 256), (64, 1024, 256), (1, 256, 64)], 256, 256  # (B, H, P)
QUICK_SHAPES, QUICK_STEPS, QUICK_INPUT = [(1, 64, 16), (4, 128, 32)], 16, 32
ROUNDS, BUDGET, QUICK_ROUNDS, QUICK_BUDGET = 5, 0.3, 2, 0.02
TORCH_THREADS = GEMM_THREADS = 2
PAUSE = 0.05  # s before each contender: the previous one's thread pools stop spinning
MODES = ("inference", "training")
GRADS = ("dx", "dW_ih", "dW_hh", "db_ih", "db_hh", "dW_hr")
ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")


def problem(B, H, P, T, I):  # noqa: E741
    """torch's LSTM(I, H, proj_size=P) and its weights in numpy, a plain LSTM's, x and g."""
    torch.manual_seed(0)
    module = torch.nn.LSTM(I, H, proj_size=P)
    plain = torch.nn.LSTM(I, H)
    rng = np.random.default_rng(0)
    numpy_of = lambda m, names: [getattr(m, n + "_l0").detach().numpy().copy() for n in names]
    return dict(module=module, x=rng.standard_normal((T, B, I), dtype=np.float32),
                g=rng.standard_normal((T, B, P), dtype=np.float32),
                g_plain=rng.standard_normal((T, B, H), dtype=np.float32),
                W=numpy_of(module, ("weight_ih", "weight_hh", "bias_ih", "bias_hh")),
                W_hr=numpy_of(module, ("weight_hr",))[0],
                W_plain=numpy_of(plain, ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))


def fastrnn_calls(x, g, W, W_hr, backend):
    """(inference, training): each a call returning (out, {gradient: array} or None)."""
    def inference():
        return fastrnn.lstm_forward(x, None, None, *W, W_hr=W_hr, training=False,
                                    backend=backend)[0], None

    def training():
        out, _, _, cache = fastrnn.lstm_forward(x, None, None, *W, W_hr=W_hr, backend=backend)
        grads = fastrnn.lstm_backward(g, None, None, cache)._asdict()
        return out, {k: grads[k] for k in GRADS if grads.get(k) is not None}
    return inference, training


def torch_calls(module, x, g):
    xt, gt = torch.from_numpy(x), torch.from_numpy(g)

    def inference():
        with torch.inference_mode():
            return module(xt)[0].numpy(), None

    def training():
        module.zero_grad(set_to_none=True)
        xx = torch.from_numpy(x).requires_grad_(True)
        out, _ = module(xx)
        out.backward(gt)  # the gradients of sum(out * g)
        grads = [xx.grad] + [getattr(module, n + "_l0").grad for n in
                             ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")]
        return out.detach().numpy(), {k: v.numpy() for k, v in zip(GRADS, grads)}
    return inference, training


def errors(result, exact):
    """(largest |out - exact out|, largest relative gradient error or None)."""
    (out, grads), (want, want_grads) = result, exact
    err = float(np.abs(out - want).max())
    if grads is None:
        return err, None
    return err, max(float(np.abs(grads[k] - want_grads[k]).max() / np.abs(want_grads[k]).max())
                    for k in GRADS)


def measure(shape, T, I, backends, rounds, budget, gemm_times):  # noqa: E741
    """One shape: {(who, mode): (median seconds, errors or None)} and {(who, mode): why it
    failed}: fastrnn's backends, torch, and the first backend's plain LSTM ("plain")."""
    B, H, P = shape
    p = problem(B, H, P, T, I)
    pairs = {b: fastrnn_calls(p["x"], p["g"], p["W"], p["W_hr"], b) for b in backends}
    pairs["torch"] = torch_calls(p["module"], p["x"], p["g"])
    pairs["plain"] = fastrnn_calls(p["x"], p["g_plain"], p["W_plain"], None, backends[0])
    calls = {(who, mode): fn for who, pair in pairs.items() for mode, fn in zip(MODES, pair)}
    f64 = lambda a: a.astype(np.float64)
    out, _, _, cache = reference.lstm_forward(f64(p["x"]), None, None, *map(f64, p["W"]),
                                              W_hr=f64(p["W_hr"]))
    grads = reference.lstm_backward(f64(p["g"]), None, None, cache)._asdict()
    exact = {"inference": (out, None), "training": (out, {k: grads[k] for k in GRADS})}
    errs, failed = {}, {}  # a call that fails (a kernel without W_hr yet): a note, not a crash
    for key, fn in calls.items():
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001
            failed[key] = f"{type(e).__name__}: {e}"
            continue
        errs[key] = None if key[0] == "plain" else errors(result, exact[key[1]])
    timers = {key: (lambda fn=fn: best(fn, budget)) for key, fn in calls.items() if key in errs}
    timers["sgemm"] = lambda: sgemm(budget)
    times = {key: [] for key in timers}
    for k in range(rounds):
        for key in (list(timers) if k % 2 == 0 else list(timers)[::-1]):
            time.sleep(PAUSE)
            times[key].append(timers[key]())
        print(".", end="", flush=True, file=sys.stderr)
    gemm_times.extend(times.pop("sgemm"))
    return {key: (float(np.median(ts)), errs.get(key)) for key, ts in times.items()}, failed


@functools.cache
def _square():
    return np.random.default_rng(0).random((2048, 2048), dtype=np.float32)


def sgemm(budget):
    """Best seconds of numpy's float32 2048^3 matmul on GEMM_THREADS threads."""
    with threadpool_limits(GEMM_THREADS):
        return best(lambda: _square() @ _square(), budget)


def header(rounds, budget, T, I, backends):  # noqa: E741
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or "?"
    try:
        isa = f"{fastrnn.get_isa_level()} (this CPU: {', '.join(fastrnn.cpu_isa_levels())})"
    except (ImportError, ValueError) as e:
        isa = f"none ({e})"
    versions = ", ".join(f"{d} {metadata.version(d)}" for d in ("fastrnn", "numpy", "torch"))
    env = ", ".join(f"{k}={os.environ[k]}" if k in os.environ else f"{k} unset" for k in ENV)
    return [f"CPU: {cpu}, {len(os.sched_getaffinity(0))} cores; {versions}",
            f"fastrnn backends {', '.join(backends)}; Cython ISA level {isa}",
            f"threads: fastrnn {fastrnn.get_num_threads()}, torch {torch.get_num_threads()}, "
            f"sgemm {GEMM_THREADS}; {env}",
            f"T = {T}, I = {I}, float32; median of {rounds} interleaved rounds of the best "
            f"call in {budget} s"]


def table(rows, backends):
    """The times (ms) with each result's errors, and torch over fastrnn."""
    names = [f"fastrnn {b}" for b in backends]
    lines = ["| B, H, P | mode | " + " | ".join(f"{n} ms | err" for n in names)
             + " | torch ms | err | " + " | ".join(f"torch / {b}" for b in backends)
             + f" | plain LSTM {backends[0]} ms |",
             "|---" * (5 + 3 * len(backends)) + "|"]
    fmt = lambda e: "-" if e is None else f"{e[0]:.1e}" + ("" if e[1] is None
                                                           else f"; grads {e[1]:.1e}")
    for shape, mode, res in rows:
        cells = []
        for who in [*backends, "torch"]:
            t, e = res.get((who, mode), (None, None))
            cells += ["n/a", "-"] if t is None else [f"{t * 1e3:.2f}", fmt(e)]
        torch_t = res[("torch", mode)][0]
        cells += [f"{torch_t / res[(b, mode)][0]:.2f}x" if (b, mode) in res else "n/a"
                  for b in backends]
        plain = res.get(("plain", mode), (None,))[0]
        cells.append("n/a" if plain is None else f"{plain * 1e3:.2f}")
        lines.append(f"| {', '.join(map(str, shape))} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def arithmetic(rows, backends, T, I, gemm):  # noqa: E741
    """GMAC/s of each contender and its share of the sgemm rate (``gemm`` GMAC/s)."""
    who = [*backends, "torch", "plain"]
    names = [f"fastrnn {b}" for b in backends] + ["torch", f"plain LSTM {backends[0]}"]
    lines = ["| B, H, P | mode | GMAC (plain) | "
             + " | ".join(f"{n} GMAC/s | % sgemm" for n in names) + " |",
             "|---" * (3 + 2 * len(names)) + "|"]
    for (B, H, P), mode, res in rows:
        passes = 1 if mode == "inference" else 3  # the backward: about twice the forward
        macs = passes * T * B * (I * 4 * H + P * 4 * H + H * P) / 1e9
        plain = passes * T * B * (I * 4 * H + H * 4 * H) / 1e9
        cells = [f"{macs:.3g} ({plain:.3g})"]
        for w in who:
            t = res.get((w, mode), (None,))[0]
            rate = None if t is None else (plain if w == "plain" else macs) / t
            cells += ["n/a", "-"] if rate is None else [f"{rate:.3g}", f"{rate / gemm:.1%}"]
        lines.append(f"| {B}, {H}, {P} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(shapes, T, I, backends, rounds, budget):  # noqa: E741
    """Measure and print; returns (rows, sgemm GMAC/s)."""
    torch.set_num_threads(TORCH_THREADS)
    print("\n".join(header(rounds, budget, T, I, backends)))
    load, rows, gemm_times, failed = Load(), [], [], {}
    with warnings.catch_warnings(record=True) as said:  # torch's, once, after the tables
        warnings.simplefilter("default")
        for shape in shapes:
            res, why = measure(shape, T, I, backends, rounds, budget, gemm_times)
            failed.update(why)
            rows += [(shape, mode, res) for mode in MODES]
    print(file=sys.stderr)
    gemm = 2048 ** 3 / float(np.median(gemm_times)) / 1e9
    for (who, mode), why in failed.items():
        what = f"plain LSTM on {backends[0]}" if who == "plain" else f"fastrnn {who} with W_hr"
        print(f"n/a: {what}, {mode}, failed here: {why}")
    print("\n" + table(rows, backends) + "\n")
    print("err: largest |out - out in float64|; grads: largest |grad - float64's| over that "
          "gradient's largest |entry|, the worst of dx, dW_ih, dW_hh, db_ih, db_hh, dW_hr.\n")
    print(arithmetic(rows, backends, T, I, gemm) + "\n")
    other = load.other_cores()
    print(f"GMAC: multiply-adds, forward T*B*(4H*I + 4H*P + H*P), training 3x that; sgemm: "
          f"numpy float32 2048^3 on {GEMM_THREADS} threads, {gemm:.1f} GMAC/s (median of "
          f"{len(gemm_times)} rounds).  Other processes kept "
          + ("?" if other is None else f"{other:.2f}") + f" of {os.cpu_count()} cores busy.")
    if other is not None and other > BUSY_CORES:
        print("warning: a shared machine; multi-threaded times (torch's OpenMP above all) "
              "can be many times too slow: rerun on an idle one to compare.")
    for message in dict.fromkeys(str(w.message) for w in said):
        print(f"warning during the run: {message}")
    return rows, gemm


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, help=f"interleaved rounds (default {ROUNDS})")
    ap.add_argument("--shapes", help="BxHxP,... (default 16x1024x256,64x1024x256,1x256x64)")
    ap.add_argument("--steps", type=int, help=f"T (default {STEPS})")
    ap.add_argument("--input", type=int, help=f"I (default {INPUT})")
    ap.add_argument("--backends", default="cython",
                    help="fastrnn backends, comma-separated, the first also runs the plain "
                         "LSTM (default cython; cython,numba adds a column)")
    ap.add_argument("--quick", action="store_true",
                    help="tiny shapes, T = 16, 2 short rounds: check that it works")
    args = ap.parse_args(argv)
    q = args.quick
    shapes = ([tuple(map(int, s.split("x"))) for s in args.shapes.split(",")] if args.shapes
              else QUICK_SHAPES if q else SHAPES)
    return dict(shapes=shapes, T=args.steps or (QUICK_STEPS if q else STEPS),
                I=args.input or (QUICK_INPUT if q else INPUT), backends=args.backends.split(","),
                rounds=args.rounds or (QUICK_ROUNDS if q else ROUNDS),
                budget=QUICK_BUDGET if q else BUDGET)


if __name__ == "__main__":
    main(**parse())
