"""Cells written by the user (``fastrnn.cells``) beside the built-in cells
they rewrite, inference and training, each with its error against float64,
in one interleaved run:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benches.user_cells
        [--shapes 1x64x256,16x256x256,64x1024x256] [--rounds 5] [--budget 0.3]
        [--quick] [--out FILE]

(shapes are B x H x T, I = H, float32, 2 threads.)  Pairs, each the same
arithmetic twice:

- GRU: ``fastrnn.gru_forward`` / ``gru_backward`` (built in) against the GRU
  of ``examples/cells/gru.py`` on the Cython engine (backend None) and on the
  Numba loops (``backend="numba"``: one thread and a BLAS product a step);
- peephole LSTM: ``fastrnn.lstm_forward(..., W_ch=...)`` against
  ``examples/cells/peephole_lstm.py`` on the Cython engine.

Training: the forward and the backward of a fixed d_out (every gradient).
Each time is the median over the rounds (the order alternating) of the best
call within the budget (``fastrnn._timing.best_within``).  out err: the
largest |out - out in float64| (float64: ``fastrnn.reference`` of the
built-in cell); dW_hh err: the largest |dW_hh - dW_hh in float64| over the
largest |dW_hh in float64|.  The target: the user GRU trains at
>= 0.8x the built-in GRU's speed at every shape.
"""
import argparse
import datetime
import importlib.util
import os
import pathlib
import sys

import numpy as np

import fastrnn
from fastrnn import reference
from fastrnn._timing import BUSY_CORES, Load
from fastrnn._timing import best_within as best

SHAPES = [(1, 64, 256), (16, 256, 256), (64, 1024, 256)]  # (B, H, T)
QUICK_SHAPES = [(1, 8, 6), (3, 16, 40)]
ROUNDS, BUDGET, QUICK_ROUNDS, QUICK_BUDGET = 5, 0.3, 2, 0.02
THREADS = 2
MODES = ("inference", "training")
# contender: (cell, how it runs); the pairs compared: user over built-in
CONTENDERS = ("GRU built in", "GRU user", "GRU user, Numba loops", "peephole LSTM built in",
              "peephole LSTM user")
PAIRS = (("GRU user", "GRU built in"), ("GRU user, Numba loops", "GRU built in"),
         ("peephole LSTM user", "peephole LSTM built in"))
TARGET = ("GRU user", "GRU built in", "training", 0.8)
ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples" / "cells"


def _example(name):
    spec = importlib.util.spec_from_file_location(f"fastrnn_bench_cell_{name}",
                                                  EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def problem(B, H, T, seed=0):
    rng = np.random.default_rng(seed)
    k = 1 / np.sqrt(H)
    a = lambda *shape: rng.uniform(-k, k, shape).astype(np.float32)  # noqa: E731
    return dict(x=rng.standard_normal((T, B, H), dtype=np.float32),
                d_out=rng.standard_normal((T, B, H), dtype=np.float32),
                gru=(a(3 * H, H), a(3 * H, H), a(3 * H), a(3 * H)),
                lstm=(a(4 * H, H), a(4 * H, H), a(4 * H), a(4 * H)), W_ch=a(3 * H))


def runs(p, gru_cell, lstm_cell):
    """{contender: (inference(), training())}, each returning (out, dW_hh or None)."""
    x, d_out, gw, lw, W_ch = p["x"], p["d_out"], p["gru"], p["lstm"], p["W_ch"]
    peep = tuple(W_ch.reshape(3, -1))

    def built_in_gru(training):
        out, _, cache = fastrnn.gru_forward(x, None, *gw, training=training)
        return out, fastrnn.gru_backward(d_out, None, cache).dW_hh if training else None

    def user(cell, weights, backend=None):
        def run(training):
            out, *_, cache = cell.forward(x, *(None,) * cell.S, *weights, training=training,
                                          backend=backend)
            if not training:
                return out, None
            return out, cell.backward(d_out, *(None,) * cell.S, cache=cache).dW_hh
        return run

    def built_in_lstm(training):
        out, _, _, cache = fastrnn.lstm_forward(x, None, None, *lw, W_ch=W_ch, training=training)
        return out, (fastrnn.lstm_backward(d_out, None, None, cache).dW_hh if training
                     else None)

    fns = {"GRU built in": built_in_gru, "GRU user": user(gru_cell, gw),
           "GRU user, Numba loops": user(gru_cell, gw, "numba"),
           "peephole LSTM built in": built_in_lstm,
           "peephole LSTM user": user(lstm_cell, lw + peep)}
    return {name: (lambda f=f: f(False), lambda f=f: f(True)) for name, f in fns.items()}


def exact(p):
    """float64 out and dW_hh of each cell (fastrnn.reference)."""
    f64 = lambda a: a.astype(np.float64)  # noqa: E731
    x, d_out = f64(p["x"]), f64(p["d_out"])
    out, _, cache = reference.gru_forward(x, None, *map(f64, p["gru"]))
    gru = out, reference.gru_backward(d_out, None, cache).dW_hh
    out, _, _, cache = reference.lstm_forward(x, None, None, *map(f64, p["lstm"]),
                                              W_ch=f64(p["W_ch"]))
    lstm = out, reference.lstm_backward(d_out, None, None, cache).dW_hh
    return {name: (lstm if name.startswith("peephole") else gru) for name in CONTENDERS}


def measure(shape, rounds, budget, gru_cell, lstm_cell):
    B, H, T = shape
    p = problem(B, H, T)
    fns, truth = runs(p, gru_cell, lstm_cell), exact(p)
    errs = {}
    for name, (_, train) in fns.items():
        out, dW = train()
        ref_out, ref_dW = truth[name]
        errs[name] = (float(np.abs(out - ref_out).max()),
                      float(np.abs(dW - ref_dW).max() / np.abs(ref_dW).max()))
    samples = {(name, mode): [] for name in fns for mode in MODES}
    order = list(fns)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            for mode, fn in zip(MODES, fns[name]):
                samples[name, mode].append(best(fn, budget))
    times = {key: float(np.median(v)) for key, v in samples.items()}
    print(f"  {shape} done", file=sys.stderr)
    return times, errs


def _shape(shape):
    return "x".join(map(str, shape))


def tables(rows):
    head = "| contender | " + " | ".join(f"{_shape(s)} inf ms | train ms | out err | dW_hh err"
                                        for s, _ in rows) + " |"
    lines = [head, "|---|" + "---|---|---|---|" * len(rows)]
    for name in CONTENDERS:
        cells = []
        for _, (times, errs) in rows:
            cells += [f"{times[name, 'inference'] * 1e3:.3g}",
                      f"{times[name, 'training'] * 1e3:.3g}",
                      f"{errs[name][0]:.1e}", f"{errs[name][1]:.1e}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| user over built in (speed) | "
              + " | ".join(f"{_shape(s)} inf | train" for s, _ in rows) + " |",
              "|---|" + "---|---|" * len(rows)]
    user_t, built_t, target_mode, least = TARGET
    for user_name, built in PAIRS:
        cells = []
        for _, (times, _) in rows:
            for mode in MODES:
                ratio = times[built, mode] / times[user_name, mode]
                mark = ""
                if (user_name, built, mode) == (user_t, built_t, target_mode):
                    mark = " ✓" if ratio >= least else " ✗"
                cells.append(f"{ratio:.2f}x{mark}")
        lines.append(f"| {user_name} / {built} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def facts(started, shapes, rounds, budget, quick, other, wall):
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    isa = f"{fastrnn.get_isa_level()} (this CPU: {', '.join(fastrnn.cpu_isa_levels())})"
    env = ", ".join(f"{k}={os.environ[k]!r}" if k in os.environ else f"{k} unset" for k in ENV)
    command = (f"python -m benches.user_cells --shapes {','.join(map(_shape, shapes))} "
               f"--rounds {rounds} --budget {budget:g}" + (" --quick" if quick else ""))
    return [f"- Run: {started:%Y-%m-%d %H:%M} UTC, `{command}`, {wall:.0f} s.",
            f"- CPU: {cpu}; fastrnn's Cython kernels at the {isa} level; "
            f"{fastrnn.get_num_threads()} threads.",
            f"- Environment: {env}.",
            "- Load: other processes kept " + ("?" if other is None else f"{other:.2f}")
            + f" of {os.cpu_count()} cores busy on average during the run."]


def main(shapes=SHAPES, rounds=ROUNDS, budget=BUDGET, quick=False, out=None):
    """Measure and print; returns (rows [(shape, (times, errs))], the text)."""
    started = datetime.datetime.now(datetime.timezone.utc)
    load = Load()
    fastrnn.set_num_threads(THREADS)
    gru_cell, lstm_cell = _example("gru").GRU, _example("peephole_lstm").PEEPHOLE_LSTM
    rows = [(shape, measure(shape, rounds, budget, gru_cell, lstm_cell)) for shape in shapes]
    other = load.other_cores()
    user_t, built_t, mode, least = TARGET
    text = ["# Cells written by the user beside the built-in cells they rewrite\n",
            tables(rows), "",
            f"ms: the median over {rounds} interleaved rounds of the best call in {budget} s; "
            "inf: the forward without a cache; train: the forward and the backward of a fixed "
            "d_out.  Errors against fastrnn.reference's built-in cell in float64.  I = H, "
            f"float32.  Target: {user_t} / {built_t}, {mode}, >= {least}x (✓ met, ✗ missed).",
            ""]
    text += facts(started, shapes, rounds, budget, quick, other, load.wall_seconds())
    if other is not None and other > BUSY_CORES:
        text.append("- warning: a shared machine; rerun on an idle one to compare.")
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
    ap.add_argument("--shapes", help="BxHxT,... (default " + ",".join(map(_shape, SHAPES)) + ")")
    ap.add_argument("--rounds", type=int, help=f"interleaved rounds (default {ROUNDS})")
    ap.add_argument("--budget", type=float, help=f"seconds a contender gets a round "
                    f"(default {BUDGET})")
    ap.add_argument("--quick", action="store_true", help="tiny shapes, 2 short rounds")
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
                budget=args.budget or (QUICK_BUDGET if q else BUDGET), quick=q, out=args.out)


if __name__ == "__main__":
    main(**parse())
