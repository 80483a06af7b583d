"""fastrnn's default backend (the Cython engine) against its peers at the
sizes people train, float32, I = H: PyTorch's nn.RNN / nn.LSTM / nn.GRU
(inference and training), ONNX Runtime and OpenVINO (oneDNN's RNN
primitives; inference), each where it is installed
(``pip install torch==2.13.0 onnx onnxruntime openvino``).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benches/versus_peers.py [cells] [shapes]

cells: comma-separated (default lstm,gru,rnn); shapes: BxHxT,... (default
1x64x1024,16x256x1024,64x1024x128).  Every contender (fastrnn and each peer
on 1 and 2 threads) runs once per round, the rounds interleaved, and each
keeps its best round: a slow moment of the shared machine hits them all
alike.  The ONNX peers' outputs are checked against fastrnn's reference
first.  Prints steps x batch per second, fastrnn on 2 threads over the best
peer at its better thread count, and the share of the machine's 2-thread
sgemm rate (numpy 2048^3, best of the run) that fastrnn's forward reaches.
"""
import sys
import time

import os

import numpy as np
from threadpoolctl import threadpool_limits

import fastrnn

try:
    from benches import onnx_peers  # python -m benches.versus_peers
except ImportError:  # python benches/versus_peers.py
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import onnx_peers

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


def contenders(cell, B, H, T):
    G, I = GATES[cell], H
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    W_ih = (rng.uniform(-1, 1, (G * H, I)) / np.sqrt(H)).astype(np.float32)
    W_hh = (rng.uniform(-1, 1, (G * H, H)) / np.sqrt(H)).astype(np.float32)
    b = np.zeros(G * H, np.float32)
    forward = getattr(fastrnn, cell + "_forward")
    backward = getattr(fastrnn, cell + "_backward")
    states = [None] * (2 if cell == "lstm" else 1)
    # Each run sets its thread count, then returns the seconds of the call alone.
    def ours(threads, training):
        def run():
            fastrnn.set_num_threads(threads)
            t0 = time.perf_counter()
            out = forward(x, *states, W_ih, W_hh, b, b, training=training)
            if training:
                backward(np.ones_like(out[0]), *states, out[-1])
            return time.perf_counter() - t0
        return run

    runs = {("fastrnn", pass_, n): ours(n, pass_ == "training")
            for pass_ in ("inference", "training") for n in (1, 2)}
    if torch is not None:
        module = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](I, H)
        xt = torch.from_numpy(x)

        def theirs(threads, training):
            def run():
                torch.set_num_threads(threads)
                t0 = time.perf_counter()
                if training:
                    xx = xt.clone().requires_grad_(True)
                    out, _ = module(xx)
                    out.sum().backward()
                else:
                    with torch.inference_mode():
                        module(xt)
                return time.perf_counter() - t0
            return run

        runs.update({("torch", pass_, n): theirs(n, pass_ == "training")
                     for pass_ in ("inference", "training") for n in (1, 2)})
    for n in (1, 2):
        for name, peer in onnx_peers.runners(cell, W_ih, W_hh, b, b, n).items():
            onnx_peers.check(peer, cell, W_ih, W_hh, b, b)

            def timed(peer=peer):
                t0 = time.perf_counter()
                peer(x)
                return time.perf_counter() - t0
            runs[(name, "inference", n)] = timed
    return runs


def main(cells, shapes):
    gemm = float("inf")  # the best sgemm of every round of the run
    rows = []
    for cell in cells:
        for B, H, T in shapes:
            runs = contenders(cell, B, H, T)
            best = {key: float("inf") for key in runs}
            for key, run in runs.items():
                run()  # warm up
            order = list(runs)
            for round_ in range(ROUNDS):
                gemm = min(gemm, sgemm())
                # A different contender goes first each round: the one right
                # after numpy's sgemm shares the machine with OpenBLAS's
                # threads, which spin for a while after a call.
                shift = round_ * len(order) // ROUNDS
                for key in order[shift:] + order[:shift]:
                    time.sleep(PAUSE)
                    best[key] = min(best[key], runs[key]())
            rows.append((cell, B, H, T, best))
            print(".", end="", flush=True, file=sys.stderr)
    rate = 2 * 2048 ** 3 / gemm
    print(f"numpy 2048^3 sgemm on 2 threads, best of the run: {rate / 1e9:.0f} GFLOP/s")
    peers = sorted({who for row in rows for who, _, _ in row[4]} - {"fastrnn"})
    print("steps x batch per second; each peer at its better of 1 and 2 threads")
    print("cell  (B, H)     T     pass       fastrnn 1t  fastrnn 2t "
          + "".join(f"{p:>12s}" for p in peers) + "  vs best peer  share of sgemm")
    for cell, B, H, T, best in rows:
        flops = 2 * (2 * H) * GATES[cell] * H * T * B  # the forward's products, I = H
        for pass_ in ("inference", "training"):
            ours = {n: T * B / best[("fastrnn", pass_, n)] for n in (1, 2)}
            theirs = {p: T * B / min(best.get((p, pass_, n), float("inf")) for n in (1, 2))
                      for p in peers}
            top = max(theirs.values(), default=0)
            share = (f"{flops / best[('fastrnn', pass_, 2)] / rate:5.0%}"
                     if pass_ == "inference" else "")
            print(f"{cell:5s} ({B:2d}, {H:4d}) {T:5d} {pass_:10s} {ours[1]:10.3g} "
                  f"{ours[2]:11.3g}"
                  + "".join(f"{theirs[p]:12.3g}" if theirs[p] else f"{'-':>12s}" for p in peers)
                  + (f"  {ours[2] / top:10.2f}x" if top else f"  {'-':>11s}") + f"  {share}")


if __name__ == "__main__":
    cells = sys.argv[1].split(",") if len(sys.argv) > 1 else ["lstm", "gru", "rnn"]
    shapes = ([tuple(map(int, s.split("x"))) for s in sys.argv[2].split(",")]
              if len(sys.argv) > 2 else [(1, 64, 1024), (16, 256, 1024), (64, 1024, 128)])
    main(cells, shapes)
