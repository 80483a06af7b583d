"""fastrnn on 1 and 2 threads while another process keeps one core busy:
two threads must not lose to one by more than 10% (the engine's threads
claim each other's work and sleep rather than spin when a partner is late).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benches/busy_machine.py [cell] [BxHxT]

Rounds interleave 1 and 2 threads; each keeps its best and its median round.
"""
import statistics
import subprocess
import sys
import time

import numpy as np

import fastrnn

ROUNDS = 7


def main(cell="lstm", B=16, H=256, T=1024):
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    W_ih = (rng.uniform(-1, 1, (G * H, H)) / np.sqrt(H)).astype(np.float32)
    W_hh = (rng.uniform(-1, 1, (G * H, H)) / np.sqrt(H)).astype(np.float32)
    states = [None] * (2 if cell == "lstm" else 1)
    forward = getattr(fastrnn, cell + "_forward")
    backward = getattr(fastrnn, cell + "_backward")

    def run(threads, training):
        fastrnn.set_num_threads(threads)
        t0 = time.perf_counter()
        out = forward(x, *states, W_ih, W_hh, training=training)
        if training:
            backward(np.ones_like(out[0]), *states, out[-1])
        return time.perf_counter() - t0

    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        for training in (False, True):
            times = {1: [], 2: []}
            run(1, training)
            for _ in range(ROUNDS):
                for n in (1, 2):
                    times[n].append(run(n, training))
            best = {n: min(t) for n, t in times.items()}
            median = {n: statistics.median(t) for n, t in times.items()}
            print(f"{cell} (B, H) = ({B}, {H}), T={T}, {'training' if training else 'inference'}, "
                  f"one core busy: 1 thread best {best[1] * 1e3:.0f} ms median "
                  f"{median[1] * 1e3:.0f}; 2 threads best {best[2] * 1e3:.0f} ms median "
                  f"{median[2] * 1e3:.0f}; 2 threads / 1 thread (medians) "
                  f"{median[2] / median[1]:.2f}", flush=True)
    finally:
        hog.kill()


if __name__ == "__main__":
    cell = sys.argv[1] if len(sys.argv) > 1 else "lstm"
    B, H, T = map(int, sys.argv[2].split("x")) if len(sys.argv) > 2 else (16, 256, 1024)
    main(cell, B, H, T)
