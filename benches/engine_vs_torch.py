"""fastrnn's default backend (the Cython engine) against PyTorch's nn.RNN /
nn.LSTM / nn.GRU at the sizes people train, float32, I = H.  Needs torch.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benches/engine_vs_torch.py [cells] [shapes]

cells: comma-separated (default lstm,gru,rnn); shapes: BxHxT,... (default
1x64x1024,16x256x1024,64x1024x128).  Every contender (fastrnn on 1 and 2
threads, torch on 1 and 2) runs once per round, the rounds interleaved, and
each keeps its best round: a slow moment of the shared machine hits them
all alike.  Prints steps x batch per second, fastrnn on 2 threads over
torch's better thread count, and the share of the machine's 2-thread sgemm
rate (numpy 2048^3, measured in the same run) that fastrnn's forward reaches.
"""
import sys
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import fastrnn

ROUNDS = 5
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
    module = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](I, H)
    xt = torch.from_numpy(x)

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

    return {(who, pass_, n): (ours if who == "fastrnn" else theirs)(n, pass_ == "training")
            for who in ("fastrnn", "torch") for pass_ in ("inference", "training")
            for n in (1, 2)}


def main(cells, shapes):
    gemm = float("inf")  # the best sgemm of every round of the run
    rows = []
    for cell in cells:
        for B, H, T in shapes:
            runs = contenders(cell, B, H, T)
            best = {key: float("inf") for key in runs}
            for key, run in runs.items():
                run()  # warm up
            for _ in range(ROUNDS):
                gemm = min(gemm, sgemm())
                for key, run in runs.items():
                    best[key] = min(best[key], run())
            rows.append((cell, B, H, T, best))
            print(".", end="", flush=True, file=sys.stderr)
    rate = 2 * 2048 ** 3 / gemm
    print(f"numpy 2048^3 sgemm on 2 threads, best of the run: {rate / 1e9:.0f} GFLOP/s")
    print("cell  (B, H)     T     pass       fastrnn 1t  fastrnn 2t   torch best  vs torch  "
          "share of sgemm")
    for cell, B, H, T, best in rows:
        flops = 2 * (2 * H) * GATES[cell] * H * T * B  # the forward's products, I = H
        for pass_ in ("inference", "training"):
            ours = {n: T * B / best[("fastrnn", pass_, n)] for n in (1, 2)}
            torch_best = T * B / min(best[("torch", pass_, n)] for n in (1, 2))
            share = (f"{flops / best[('fastrnn', pass_, 2)] / rate:5.0%}"
                     if pass_ == "inference" else "")
            print(f"{cell:5s} ({B:2d}, {H:4d}) {T:5d} {pass_:10s} {ours[1]:10.3g} "
                  f"{ours[2]:11.3g} {torch_best:12.3g} {ours[2] / torch_best:8.2f}x  {share}")


if __name__ == "__main__":
    cells = sys.argv[1].split(",") if len(sys.argv) > 1 else ["lstm", "gru", "rnn"]
    shapes = ([tuple(map(int, s.split("x"))) for s in sys.argv[2].split(",")]
              if len(sys.argv) > 2 else [(1, 64, 1024), (16, 256, 1024), (64, 1024, 128)])
    main(cells, shapes)
