"""fastrnn's int8 inference (dynamic quantization, ``fastrnn.quantize_weight``)
beside its float32 and bf16 and beside its peers' float32 and int8, each with
its output's error against float64, for every cell, I = H, in one
interleaved run:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benches.int8
        [--cells lstm,gru,rnn] [--shapes 1x64x1024,16x256x256,64x1024x64]
        [--rounds 5] [--quick] [--out FILE]

(shapes are B x H x T.)  Contenders, all inference, all on 2 threads:

- fastrnn f32, fastrnn bf16 (``compute_dtype="bfloat16"``), fastrnn int8
  (W_ih and W_hh quantized once, outside the timed call: QuantizedWeights
  passed as W_ih, W_hh); where the kernels run the int8 products on AMX,
  fastrnn int8 (VNNI) too: the same call with AMX turned off (``_set_amx(0)``);
- torch f32 (nn.RNN / LSTM / GRU under inference_mode) and torch int8
  (torch.ao.quantization.quantize_dynamic, qint8: the LSTM and the GRU;
  it leaves nn.RNN as it is);
- ONNX Runtime f32 and int8 (its DynamicQuantizeLSTM: the LSTM only),
  OpenVINO f32 and bf16 (benches/onnx_peers.py), each where installed.

Weights as PyTorch initialises them, uniform(-1/sqrt(H), 1/sqrt(H)) (both
biases too), x standard normal.  Each time is the median over the rounds
(5; the order alternating) of the best call within 0.3 s (after a warm-up
call, unless that one alone took 0.3 s).  Error: the largest |out - out in
float64| (fastrnn's Cython backend on float64 copies of x and the weights).
Beside the times: the speed-ups of fastrnn int8 over fastrnn f32 and bf16
and over the peers' int8, and the int8 contenders' multiply-adds per second,
T*B*G*H*(I+H) per call, as a share of the int8 peak: 2 threads x one
thread's rate on the kernels' own int8 tiles in L1 (``_int8_rate``).
--quick: tiny shapes, 2 short rounds, to check that the script works.
"""
import argparse
import copy
import datetime
import os
import platform
import sys
import time
import warnings

import numpy as np

import fastrnn
from fastrnn._backends import kernels
from fastrnn._timing import BUSY_CORES, Load
from fastrnn._timing import best_within as best

if not __package__:  # python benches/int8.py: the checkout's root on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benches import onnx_peers  # noqa: E402
from benches.versus_peers import _version  # noqa: E402

try:
    import torch
except ImportError:
    torch = None

CELLS = ("lstm", "gru", "rnn")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
SHAPES = [(1, 64, 1024), (16, 256, 256), (64, 1024, 64)]  # (B, H, T)
QUICK_SHAPES = [(1, 16, 8), (4, 32, 16)]
ROUNDS, BUDGET, QUICK_ROUNDS, QUICK_BUDGET = 5, 0.3, 2, 0.02
THREADS = 2  # every contender's
PAUSE = 0.05  # s before each contender: the previous one's thread pools stop spinning
PEAK_TRIES = 3  # the int8 peak: the best of this many _int8_rate calls
CONTENDERS = ("fastrnn f32", "fastrnn bf16", "fastrnn int8", "fastrnn int8 (VNNI)",
              "torch f32", "torch int8", "onnxruntime f32", "onnxruntime int8",
              "openvino f32", "openvino bf16")
ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")
TORCH_MODULE = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


def problem(cell, B, H, T):
    """x (T, B, H) standard normal and PyTorch-initialised weights, I = H:
    [W_ih, W_hh, b_ih, b_hh], every one uniform(-1/sqrt(H), 1/sqrt(H))."""
    G, k = GATES[cell], 1 / np.sqrt(H)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, H), dtype=np.float32)
    W = [rng.uniform(-k, k, shape).astype(np.float32)
         for shape in ((G * H, H), (G * H, H), (G * H,), (G * H,))]
    return x, W


def int8_path(module, B=None):
    """Where fastrnn int8's products run by default with this kernel module
    (for a batch of B rows: AMX only from its smallest batch on)."""
    if module._amx() and (B is None or B >= module._amx_min_batch()):
        return "AMX"
    return "VNNI" if module._has_vnni() else "vpmaddwd (no VNNI)"


def fastrnn_calls(cell, x, W):
    """{contender: run() -> out (T, B, H)} of fastrnn's."""
    forward = getattr(fastrnn, cell + "_forward")
    states = [None] * (2 if cell == "lstm" else 1)
    q = [fastrnn.quantize_weight(w) for w in W[:2]]  # once, outside the timed call
    calls = {
        "fastrnn f32": lambda: forward(x, *states, *W, training=False)[0],
        "fastrnn bf16": lambda: forward(x, *states, *W, training=False,
                                        compute_dtype="bfloat16")[0],
        "fastrnn int8": lambda: forward(x, *states, *q, *W[2:], training=False)[0],
    }
    module = kernels("cython", cell)
    if module._amx():
        def vnni():
            module._set_amx(0)
            try:
                return forward(x, *states, *q, *W[2:], training=False)[0]
            finally:
                module._set_amx(-1)
        calls["fastrnn int8 (VNNI)"] = vnni
    return calls


class _Wrap(torch.nn.Module if torch is not None else object):
    """quantize_dynamic swaps a model's children, never the model itself: the
    RNN goes inside one."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x)


def torch_calls(cell, x, W, skipped):
    """{contender: run() -> out} of torch's, the ones it offers for ``cell``."""
    if torch is None:
        skipped["torch"] = "torch is not installed"
        return {}
    H = W[1].shape[1]
    module = getattr(torch.nn, TORCH_MODULE[cell])(H, H)
    with torch.no_grad():
        for name, value in zip(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"), W):
            getattr(module, name).copy_(torch.from_numpy(value))
    module.eval()
    xt = torch.from_numpy(x)

    def run(model):
        def call():
            with torch.inference_mode():
                return model(xt)[0].numpy()
        return call

    calls = {"torch f32": run(module)}
    with warnings.catch_warnings():  # torch.ao.quantization's deprecation, and its advice
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        try:
            quantized = torch.ao.quantization.quantize_dynamic(
                _Wrap(copy.deepcopy(module)), {torch.nn.LSTM, torch.nn.GRU}, dtype=torch.qint8)
        except Exception as e:  # noqa: BLE001
            skipped[f"torch int8 {cell}"] = f"quantize_dynamic failed: {type(e).__name__}: {e}"
            return calls
    if type(quantized.rnn) is type(module):  # nn.RNN: no dynamically quantized version
        skipped[f"torch int8 {cell}"] = f"quantize_dynamic leaves nn.{TORCH_MODULE[cell]} float"
    else:
        calls["torch int8"] = run(quantized)
    return calls


def onnx_calls(cell, W, skipped):
    """{contender: run(x) -> out} of ONNX Runtime's and OpenVINO's installed here."""
    try:
        onnx_bytes = onnx_peers.model(cell, *W)
    except ImportError as e:
        skipped["onnxruntime, openvino"] = f"onnx is not installed ({e})"
        return {}
    makers = [("onnxruntime f32", onnx_peers.onnxruntime_runner, ()),
              ("openvino f32", onnx_peers.openvino_runner, ("f32",)),
              ("openvino bf16", onnx_peers.openvino_runner, ("bf16",))]
    if cell == "lstm":
        makers.insert(1, ("onnxruntime int8", onnx_peers.onnxruntime_int8_runner, ()))
    else:
        skipped[f"onnxruntime int8 {cell}"] = "ONNX Runtime quantizes only the LSTM"
    found = {}
    for name, make, extra in makers:
        try:
            found[name] = make(onnx_bytes, THREADS, *extra)
        except ImportError as e:
            skipped[name.split()[0]] = f"not installed ({e})"
    return found


def exact(cell, x, W):
    """The float64 output: fastrnn's Cython backend on float64 copies."""
    f64 = lambda a: a.astype(np.float64)
    states = [None] * (2 if cell == "lstm" else 1)
    return getattr(fastrnn, cell + "_forward")(f64(x), *states, *map(f64, W), backend="cython",
                                               training=False)[0]


def measure(cell, shape, rounds, budget, skipped):
    """One (cell, shape): {contender: (median seconds, error)} and {contender:
    why its call failed}."""
    B, H, T = shape
    x, W = problem(cell, B, H, T)
    calls = fastrnn_calls(cell, x, W)
    calls.update(torch_calls(cell, x, W, skipped))
    calls.update({name: (lambda run=run: run(x)) for name, run in onnx_calls(cell, W,
                                                                            skipped).items()})
    calls = {name: calls[name] for name in CONTENDERS if name in calls}
    want = exact(cell, x, W)
    errs, failed = {}, {}  # a call that fails: a note, not a crash
    for name, fn in calls.items():
        try:
            errs[name] = float(np.abs(np.asarray(fn(), np.float64) - want).max())
        except Exception as e:  # noqa: BLE001
            failed[name] = f"{type(e).__name__}: {e}"
    timers = {name: (lambda fn=fn: best(fn, budget)) for name, fn in calls.items()
              if name in errs}
    times = {name: [] for name in timers}
    for k in range(rounds):
        for name in (list(timers) if k % 2 == 0 else list(timers)[::-1]):
            time.sleep(PAUSE)
            times[name].append(timers[name]())
        print(".", end="", flush=True, file=sys.stderr)
    return {name: (float(np.median(ts)), errs[name]) for name, ts in times.items()}, failed


def peaks(module):
    """{uses AMX: one thread's int8 multiply-adds per second}: the best of
    PEAK_TRIES, on AMX's tiles where the kernels use them and on the others."""
    found = {False: max(module._int8_rate(False) for _ in range(PEAK_TRIES))}
    if module._amx():
        found[True] = max(module._int8_rate(True) for _ in range(PEAK_TRIES))
    return found


def macs(cell, B, H, T):
    """Multiply-adds of one call, I = H."""
    return T * B * GATES[cell] * H * (H + H)


def _shape(shape):
    return "x".join(map(str, shape))


def times_table(rows):
    """Rows (cell, contender), per shape its ms and error."""
    shapes = list(dict.fromkeys(shape for _, shape, _ in rows))
    lines = ["| cell | contender | " + " | ".join(f"{_shape(s)} ms | err" for s in shapes) + " |",
             "|---" * (2 + 2 * len(shapes)) + "|"]
    for cell in dict.fromkeys(cell for cell, _, _ in rows):
        results = {shape: res for c, shape, res in rows if c == cell}
        for name in CONTENDERS:
            if not any(name in res for res in results.values()):
                continue
            cells = []
            for shape in shapes:
                t, err = results.get(shape, {}).get(name, (None, None))
                cells += ["n/a", "-"] if t is None else [f"{t * 1e3:.3g}", f"{err:.1e}"]
            lines.append(f"| {cell} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios_table(rows, peak):
    """Rows (cell, shape): fastrnn int8's speed-ups and the int8 contenders'
    GMAC/s with their share of the 2-thread peak of the path each ran on."""
    lines = ["| cell | BxHxT | f32/int8 | bf16/int8 | ORT int8/int8 | torch int8/int8 | "
             "int8 GMAC/s (% peak) | VNNI GMAC/s (% peak) |",
             "|---" * 8 + "|"]
    for cell, shape, res in rows:
        ours = res.get("fastrnn int8", (None,))[0]

        def over(name):
            t = res.get(name, (None,))[0]
            return "-" if t is None or ours is None else f"{t / ours:.2f}x"

        def rate(name, on_amx):
            t = res.get(name, (None,))[0]
            if t is None or on_amx not in peak:
                return "-"
            r = macs(cell, *shape) / t
            share = r / (THREADS * peak[on_amx])
            return f"{r / 1e9:.3g} ({share:.{0 if share >= 0.1 else 1}%})"

        cells = [over(n) for n in ("fastrnn f32", "fastrnn bf16", "onnxruntime int8",
                                   "torch int8")]
        amx = int8_path(kernels("cython", cell), shape[0]) == "AMX"
        cells += [rate("fastrnn int8", amx), rate("fastrnn int8 (VNNI)", False)]
        lines.append(f"| {cell} | {_shape(shape)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def facts(started, cells, shapes, rounds, budget, paths, peak, other, wall):
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
    path = ", ".join(f"{p} ({', '.join(c for c in paths if paths[c] == p)})"
                     for p in dict.fromkeys(paths.values()))
    no_amx = "VNNI" if kernels("cython", cells[0])._has_vnni() else "vpmaddwd (no VNNI)"
    peak_line = "; ".join(
        f"{'AMX' if on_amx else no_amx} {r / 1e9:.0f} GMAC/s a thread, "
        f"{THREADS * r / 1e9:.0f} on {THREADS}" for on_amx, r in sorted(peak.items()))
    versions = ", ".join(f"{d} {v}" for d in ("fastrnn", "numpy", "torch", "onnx",
                                              "onnxruntime", "openvino") if (v := _version(d)))
    env = ", ".join(f"{k}={os.environ[k]}" if k in os.environ else f"{k} unset" for k in ENV)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"- Run: {started:%Y-%m-%d %H:%M} UTC, `python -m benches.int8 --cells "
        f"{','.join(cells)} --shapes {','.join(map(_shape, shapes))} --rounds {rounds}`"
        f"{' (--quick)' if budget == QUICK_BUDGET else ''}, {wall:.0f} s.",
        f"- CPU: {cpu}, {cores} cores; fastrnn's Cython kernels at the {isa} level.",
        f"- fastrnn int8 path: {path}"
        + (f", from a batch of {kernels('cython', cells[0])._amx_min_batch()} rows on "
           f"({no_amx} below)" if "AMX" in paths.values() else "") + ".",
        f"- int8 peak (`_int8_rate`, the kernels' tiles in L1, best of {PEAK_TRIES}): "
        f"{peak_line}.",
        *(f"- {line}" for line in onnx_peers.onnxruntime_int8_facts(cells)),
        f"- Versions: {versions}.",
        f"- OpenBLAS and thread variables: {env}.",
        f"- Threads: fastrnn {fastrnn.get_num_threads()}, torch "
        f"{torch.get_num_threads() if torch is not None else '-'}, ONNX Runtime and OpenVINO "
        f"{THREADS}.",
        "- Load: other processes kept "
        + ("?" if other is None else f"{other:.2f}") + f" of {os.cpu_count()} cores busy "
        "on average during the run.",
    ]


def main(cells=CELLS, shapes=SHAPES, rounds=ROUNDS, budget=BUDGET, out=None):
    """Measure and print; returns (rows [(cell, shape, {contender: (seconds,
    error)})], peak {uses AMX: GMAC/s a thread}, the printed text)."""
    started = datetime.datetime.now(datetime.timezone.utc)
    load = Load()
    if fastrnn.get_num_threads() != THREADS:
        fastrnn.set_num_threads(THREADS)
    if torch is not None:
        torch.set_num_threads(THREADS)
    paths = {cell: int8_path(kernels("cython", cell)) for cell in cells}
    peak = peaks(kernels("cython", cells[0]))
    rows, failed, skipped = [], {}, {}
    with warnings.catch_warnings(record=True) as said:  # printed once, after the tables
        warnings.simplefilter("default")
        for cell in cells:
            for shape in shapes:
                res, why = measure(cell, shape, rounds, budget, skipped)
                failed.update({(cell, shape, name): w for name, w in why.items()})
                rows.append((cell, shape, res))
    print(file=sys.stderr)
    other = load.other_cores()
    text = [f"# fastrnn int8 inference beside float32, bf16 and its peers\n",
            times_table(rows), "",
            f"ms: the median over {rounds} interleaved rounds of the best call in {budget} s; "
            "err: the largest |out - out in float64| (fastrnn's Cython backend in float64 on "
            "the same x and weights).  I = H, inference only, every contender on "
            f"{THREADS} threads.", "",
            ratios_table(rows, peak), "",
            "X/int8: X's time over fastrnn int8's (above 1: int8 faster); ORT: ONNX Runtime's "
            "DynamicQuantizeLSTM; torch int8: quantize_dynamic (qint8).  GMAC/s: "
            "T*B*G*H*(I+H) multiply-adds over the time (G = 1, 4, 3 for rnn, lstm, gru); "
            f"% peak: of {THREADS} threads x one thread's int8 rate on the same path's tiles "
            "(fastrnn int8: " + ", ".join(f"{c} {p}" for c, p in paths.items())
            + (f" from B = {kernels('cython', cells[0])._amx_min_batch()} on, VNNI below"
               if "AMX" in paths.values() else "") + "; VNNI: AMX off).", ""]
    for name, why in dict.fromkeys(skipped.items()):
        text.append(f"- not run: {name}: {why}")
    for (cell, shape, name), why in failed.items():
        text.append(f"- n/a: {name}, {cell} {_shape(shape)}, failed: {why}")
    if skipped or failed:
        text.append("")
    text += facts(started, cells, shapes, rounds, budget, paths, peak, other,
                  load.wall_seconds())
    if other is not None and other > BUSY_CORES:
        text.append("- warning: a shared machine; multi-threaded times can be many times "
                    "too slow: rerun on an idle one to compare.")
    for message in dict.fromkeys(str(w.message) for w in said):
        text.append(f"- warning during the run: {message}")
    text = "\n".join(text) + "\n"
    print(text, end="")
    if out:
        with open(out, "w") as f:
            f.write(text)
        print(f"wrote {out}")
    return rows, peak, text


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default=",".join(CELLS),
                    help=f"comma-separated (default {','.join(CELLS)})")
    ap.add_argument("--shapes", help="BxHxT,... (default "
                    + ",".join(map(_shape, SHAPES)) + ")")
    ap.add_argument("--rounds", type=int, help=f"interleaved rounds (default {ROUNDS})")
    ap.add_argument("--quick", action="store_true",
                    help="tiny shapes, 2 short rounds: check that it works")
    ap.add_argument("--out", help="also write the tables and facts into this file")
    args = ap.parse_args(argv)
    cells = args.cells.split(",")
    for cell in cells:
        if cell not in GATES:
            ap.error(f"unknown cell {cell!r}: choose from {', '.join(CELLS)}")
    q = args.quick
    shapes = ([tuple(map(int, s.split("x"))) for s in args.shapes.split(",")] if args.shapes
              else QUICK_SHAPES if q else SHAPES)
    if any(len(s) != 3 for s in shapes):
        ap.error("shapes are BxHxT")
    return dict(cells=cells, shapes=shapes, rounds=args.rounds or (QUICK_ROUNDS if q else ROUNDS),
                budget=QUICK_BUDGET if q else BUDGET, out=args.out)


if __name__ == "__main__":
    main(**parse())
