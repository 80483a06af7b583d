"""fastrnn's default backend (the Cython engine) against its peers at the
sizes people train, I = H: PyTorch's nn.RNN / nn.LSTM / nn.GRU (inference
and training), ONNX Runtime and OpenVINO (oneDNN's RNN primitives;
inference), each where it is installed (``pip install torch==2.13.0 onnx
onnxruntime openvino``); in float32 and at every lower precision each
offers: fastrnn's ``compute_dtype="bfloat16"``, PyTorch under
``torch.autocast("cpu", dtype=torch.bfloat16)``, OpenVINO with
``INFERENCE_PRECISION_HINT=bf16`` and ONNX Runtime's dynamically quantized
LSTM (int8), each with its output's worst error against a float64 run of the
same weights beside its speed.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benches/versus_peers.py [cells] [shapes] [--out FILE]

cells: comma-separated (default lstm,gru,rnn); shapes: BxHxT,... (default
1x64x1024,16x256x1024,64x1024x128).  Every contender (fastrnn and each peer
on 1 and 2 threads) runs once per round, the rounds interleaved, and each
keeps its best round: a slow moment of the shared machine hits them all
alike.  The ONNX peers' outputs are checked against fastrnn's reference
first.  Prints steps x batch per second, fastrnn on 2 threads over the best
peer at its better thread count, and the share of the machine's 2-thread
sgemm rate (numpy 2048^3, best of the run) that fastrnn's forward reaches,
as a Markdown table; ``--out FILE`` also writes it with the run's facts
(date, CPU, versions, the OpenBLAS variables, the load of other processes)
into FILE (benches/results/versus_peers.md holds the latest full run).
"""
import datetime
import os
import platform
import sys
import time
from importlib import metadata

import numpy as np
from threadpoolctl import threadpool_limits

import fastrnn

if not __package__:  # python benches/versus_peers.py: the checkout's root on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benches import onnx_peers  # noqa: E402
from benches.cells import torch_autocast_error  # noqa: E402
from fastrnn._spec import CELLS as SPECS  # noqa: E402
from fastrnn._timing import Load, interleaved_best  # noqa: E402

try:
    import torch
except ImportError:
    torch = None

ROUNDS = 5
# Seconds between two contenders: the thread pools of the one before
# (OpenBLAS, ONNX Runtime, OpenMP) spin for a while after a call, and would
# take the cores from the next (seen: fastrnn's (1, 64) training on 2 threads
# 4x slower in every round of one run).
PAUSE = 0.1
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


_A = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)


def sgemm():
    """Seconds of numpy's 2048^3 sgemm on 2 threads: the machine's GEMM rate."""
    with threadpool_limits(2):
        t0 = time.perf_counter()
        _A @ _A
        return time.perf_counter() - t0


# The contenders below float32, and the float32 contender of the same
# implementation (their speed ratio is the low-precision table's last column).
LOW = {"fastrnn bf16": "fastrnn", "torch autocast bf16": "torch",
       "openvino bf16": "openvino", "onnxruntime int8": "onnxruntime"}


def problem(cell, B, H, T):
    """x (T, B, H) and PyTorch-initialised weights (I = H), zero biases."""
    G, I = GATES[cell], H
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    W_ih = (rng.uniform(-1, 1, (G * H, I)) / np.sqrt(H)).astype(np.float32)
    W_hh = (rng.uniform(-1, 1, (G * H, H)) / np.sqrt(H)).astype(np.float32)
    return cell, x, W_ih, W_hh, np.zeros(G * H, np.float32)


def implementations(p, threads):
    """{name: (prepare(), infer(x) -> out, train(x) or None)} of every
    implementation installed here on ``threads`` threads: ``prepare`` sets
    its thread count, before the clock starts (fastrnn.set_num_threads goes
    through every loaded library's pools: 2 ms of a 1.4 ms LSTM (1, 64) call
    with torch, ONNX Runtime and OpenVINO loaded)."""
    cell, x, W_ih, W_hh, b = p
    I, H = x.shape[2], W_hh.shape[1]
    forward = getattr(fastrnn, cell + "_forward")
    backward = getattr(fastrnn, cell + "_backward")
    states = [None] * (2 if cell == "lstm" else 1)
    found = {}

    def ours(compute):
        def prepare():
            fastrnn.set_num_threads(threads)

        def infer(x):
            return forward(x, *states, W_ih, W_hh, b, b, training=False, compute_dtype=compute)[0]

        def train(x):
            out = forward(x, *states, W_ih, W_hh, b, b, compute_dtype=compute)
            backward(np.ones_like(out[0]), *states, out[-1])
        return prepare, infer, train

    found["fastrnn"], found["fastrnn bf16"] = ours(None), ours("bfloat16")
    if torch is not None:
        module = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](I, H)
        with torch.no_grad():
            for name, value in (("weight_ih_l0", W_ih), ("weight_hh_l0", W_hh),
                                ("bias_ih_l0", b), ("bias_hh_l0", b)):
                getattr(module, name).copy_(torch.from_numpy(value))

        def theirs(autocast):
            def prepare():
                torch.set_num_threads(threads)

            def infer(x):
                with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16,
                                                            enabled=autocast):
                    return module(torch.from_numpy(x))[0].float().numpy()

            def train(x):
                xx = torch.from_numpy(x).requires_grad_(True)
                with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
                    out, _ = module(xx)
                out.float().sum().backward()
            return prepare, infer, train

        found["torch"] = theirs(False)
        if not torch_autocast_error(module.__class__.__name__):  # else its error says why
            found["torch autocast bf16"] = theirs(True)
    for name, peer in onnx_peers.runners(cell, W_ih, W_hh, b, b, threads).items():
        onnx_peers.check(peer, cell, W_ih, W_hh, b, b)
        found[name] = (_nothing, peer, None)  # a session's threads are set when it is made
    for name, peer in onnx_peers.low_precision_runners(cell, W_ih, W_hh, b, b, threads).items():
        found[name] = (_nothing, peer, None)
    return found


def _nothing():
    pass


def errors(p, found):
    """{implementation: worst |out - out in float64|} on the problem's x, for
    the implementations ``found`` (implementations(p, n))."""
    cell, x, W_ih, W_hh, b = p
    states = [None] * (2 if cell == "lstm" else 1)
    exact = getattr(fastrnn.reference, cell + "_forward")(
        x.astype(np.float64), *states, W_ih.astype(np.float64),
        W_hh.astype(np.float64), b.astype(np.float64), b.astype(np.float64), training=False)[0]
    result = {}
    for name, (prepare, infer, _) in found.items():
        prepare()
        result[name] = float(np.max(np.abs(infer(x) - exact)))
    return result


def contenders(p, found):
    """{(implementation, pass, threads): run() -> seconds of the call alone},
    from ``found``: {threads: implementations(p, threads)}."""
    x = p[1]
    runs = {}
    for n, impls in found.items():
        for name, (prepare, infer, train) in impls.items():
            for pass_, fn in (("inference", infer), ("training", train)):
                if fn is not None:
                    def run(prepare=prepare, fn=fn):
                        prepare()
                        t0 = time.perf_counter()
                        fn(x)
                        return time.perf_counter() - t0
                    runs[(name, pass_, n)] = run
    return runs


def main(cells, shapes):
    """Run every contender; returns (rows, the sgemm rate in FLOP/s)."""
    gemm = [float("inf")]  # the best sgemm of every round of the run

    def measure_gemm():
        gemm[0] = min(gemm[0], sgemm())

    rows = []
    for cell in cells:
        for B, H, T in shapes:
            p = problem(cell, B, H, T)
            found = {n: implementations(p, n) for n in (1, 2)}
            best = interleaved_best(contenders(p, found), ROUNDS, PAUSE, measure_gemm)
            rows.append((cell, B, H, T, best, errors(p, found[2])))
            print(".", end="", flush=True, file=sys.stderr)
    print(file=sys.stderr)
    return rows, 2 * 2048 ** 3 / gemm[0]


def _rate(x):
    return f"{x / 1e6:.3g}M" if x >= 1e6 else f"{x / 1e3:.3g}k"


def table(rows, rate):
    """The float32 Markdown table of a run: steps x batch per second."""
    peers = sorted({who for row in rows for who, _, _ in row[4]} - {"fastrnn"} - set(LOW))
    names = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO (oneDNN)"}
    lines = ["| cell | B, H | T | pass | fastrnn 1 thread | fastrnn 2 threads | "
             + " | ".join(names.get(p, p) for p in peers) + " | fastrnn 2 threads vs best peer | "
             "forward's share of the sgemm rate |",
             "|---" * (8 + len(peers)) + "|"]
    for cell, B, H, T, best, _ in rows:
        flops = 2 * (2 * H) * GATES[cell] * H * T * B  # the forward's products, I = H
        for pass_ in ("inference", "training"):
            ours = {n: T * B / best[("fastrnn", pass_, n)] for n in (1, 2)}
            theirs = {p: T * B / min(best.get((p, pass_, n), float("inf")) for n in (1, 2))
                      for p in peers}
            top = max(theirs.values(), default=0)
            share = (f"{flops / best[('fastrnn', pass_, 2)] / rate:.0%}"
                     if pass_ == "inference" else "-")
            lines.append(f"| {cell} | {B}, {H} | {T} | {pass_} | {_rate(ours[1])} | "
                         f"{_rate(ours[2])} | "
                         + " | ".join(_rate(theirs[p]) if theirs[p] else "-" for p in peers)
                         + f" | {ours[2] / top:.2f}x | {share} |" if top else
                         f"| {cell} | {B}, {H} | {T} | {pass_} | {_rate(ours[1])} | "
                         f"{_rate(ours[2])} | " + " | ".join("-" for _ in peers)
                         + f" | - | {share} |")
    return "\n".join(lines)


def low_precision_table(rows):
    """Every implementation at every precision it offers: steps x batch per
    second at its better thread count, with its output's worst error
    against float64 in brackets; then fastrnn bf16 against the best bf16
    peer and against its own float32 (the share of the bf16 peak is the
    note's, from a profile)."""
    names = [n for n in ("fastrnn", "fastrnn bf16", "torch", "torch autocast bf16", "openvino",
                         "openvino bf16", "onnxruntime", "onnxruntime int8")
             if any(n == who for row in rows for who, _, _ in row[4])]
    lines = ["| cell | B, H | T | pass | " + " | ".join(names)
             + " | fastrnn bf16 vs best bf16 peer | fastrnn bf16 vs fastrnn float32 |",
             "|---" * (6 + len(names)) + "|"]
    for cell, B, H, T, best, err in rows:
        for pass_ in ("inference", "training"):
            rate = {n: T * B / min(best.get((n, pass_, k), float("inf")) for k in (1, 2))
                    for n in names}
            cells = [f"{_rate(rate[n])} ({err[n]:.1e})" if rate[n] else "-" for n in names]
            bf16_peers = [rate[n] for n in ("torch autocast bf16", "openvino bf16") if n in rate
                          and rate[n]]
            ours = rate.get("fastrnn bf16", 0)
            vs_peer = f"{ours / max(bf16_peers):.2f}x" if bf16_peers and ours else "-"
            vs_f32 = f"{ours / rate['fastrnn']:.2f}x" if ours and rate.get("fastrnn") else "-"
            lines.append(f"| {cell} | {B}, {H} | {T} | {pass_} | " + " | ".join(cells)
                         + f" | {vs_peer} | {vs_f32} |")
    return "\n".join(lines)


def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def facts(rate, wall, other_cores, cells):
    """The lines a reader needs to trust or reproduce a run."""
    cpu, flags = platform.processor() or "?", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    simd = ("AVX-512 with BF16" if "avx512_bf16" in flags else "AVX-512" if "avx512f" in flags
            else "AVX2/FMA" if "avx2" in flags else "no AVX2")
    try:
        simd += f"; fastrnn's kernels at the {fastrnn.get_isa_level()} level"
    except (ImportError, ValueError):
        pass
    versions = ", ".join(f"{d} {v}" for d in ("fastrnn", "numpy", "scipy", "torch", "onnxruntime",
                                              "openvino") if (v := _version(d)))
    env = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ]
    return [
        f"Run: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"`{' '.join(['python', 'benches/versus_peers.py', *sys.argv[1:]])}`, {wall:.0f} s.",
        f"Machine: {cpu}, {os.cpu_count()} cores, {simd}; numpy's 2048^3 sgemm on 2 threads "
        f"{rate / 1e9:.0f} GFLOP/s (best of the run).",
        f"Versions: {versions}.",
        "OpenBLAS variables: " + (", ".join(f"{k}={os.environ[k]}" for k in env) if env
                                  else "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset") + ".",
        f"Load: other processes kept {other_cores:.2f} of {os.cpu_count()} cores busy on "
        "average during the run.",
        f"float32, I = H; every contender on 1 and 2 threads, {ROUNDS} rounds interleaved "
        f"(a different contender first in each round, {PAUSE} s between two), best round "
        "kept, each peer at its better thread count; steps x batch per second. ONNX Runtime "
        "and OpenVINO run one ONNX node (OpenVINO on oneDNN's RNN primitives) and do "
        "inference only; their outputs were checked against fastrnn's reference.",
    ] + [f"Not run: torch autocast bf16 {layer}: {reason}."
         for layer in (SPECS[c].layer for c in cells)
         if torch is not None and (reason := torch_autocast_error(layer))
    ] + onnx_peers.onnxruntime_int8_facts(cells)


if __name__ == "__main__":
    args = sys.argv[1:]
    out = None
    if "--out" in args:
        i = args.index("--out")
        out = args[i + 1]
        del args[i:i + 2]
    cells = args[0].split(",") if args else ["lstm", "gru", "rnn"]
    shapes = ([tuple(map(int, s.split("x"))) for s in args[1].split(",")]
              if len(args) > 1 else [(1, 64, 1024), (16, 256, 1024), (64, 1024, 128)])
    load = Load()
    rows, rate = main(cells, shapes)
    wall, other = load.wall_seconds(), load.other_cores()
    other = float("nan") if other is None else other
    lines = facts(rate, wall, other, cells)
    low = low_precision_table(rows)
    print("\n".join(lines[1:4]) + "\n\n" + table(rows, rate) + "\n\n" + low)
    if out:
        with open(out, "w") as f:
            f.write("# fastrnn against its peers\n\n" + "\n".join(lines) + "\n\n## float32\n\n"
                    + table(rows, rate) + "\n\n## Every precision\n\n"
                    "Steps x batch per second, each implementation (fastrnn too) at its "
                    "better thread count, and in brackets the worst error of its output "
                    "against a float64 run of the same weights.\n\n" + low + "\n")
        print(f"wrote {out}")
