"""Per-call overhead: the smallest functional calls and a layer against the bare function.

    python -m benches.overhead            # one line of JSON: microseconds a call

Each number is the best of ``--rounds`` rounds, a round being the mean of
many calls, so it measures what a call costs on top of the arithmetic (the
checks, the allocation, the dispatch) at sizes where the arithmetic is
small.  To compare two versions, run it alternately with each (two
environments, or a build before and after a change) and take the best of
each; the machine's speed drifts too much for numbers from separate runs.
"""
import argparse
import json
import time

import numpy as np

import fastrnn


def best(fn, n, rounds):
    """Microseconds a call of fn(): the best of ``rounds`` means of n calls."""
    for _ in range(max(1, n // 10)):
        fn()
    result = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        result = min(result, (time.perf_counter() - start) / n)
    return result * 1e6


def measure(rounds=15):
    rng = np.random.default_rng(0)
    times = {}
    # rnn_forward(..., training=False) at (T, B, H) = (1, 1, 64), I = H
    x = rng.standard_normal((1, 1, 64)).astype(np.float32)
    W = (rng.standard_normal((64, 64)) * 0.1).astype(np.float32)
    b = np.zeros(64, np.float32)
    times["rnn_forward inference T=1 B=1 H=64"] = best(
        lambda: fastrnn.rnn_forward(x, None, W, W, b, b, training=False), 2000, rounds)

    # LSTM(64, 64) at T=16, B=1 against lstm_forward / lstm_backward with its weights
    layer = fastrnn.LSTM(64, 64, seed=0)
    p = dict(layer.named_parameters())
    weights = (p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"], p["bias_hh_l0"])
    x = rng.standard_normal((16, 1, 64)).astype(np.float32)
    d_out = np.ones((16, 1, 64), np.float32)

    def train_function():
        *_, cache = fastrnn.lstm_forward(x, None, None, *weights)
        fastrnn.lstm_backward(d_out, None, None, cache)

    def train_layer():
        layer(x)
        layer.backward(d_out)

    times["lstm_forward training T=16 B=1 H=64"] = best(
        lambda: fastrnn.lstm_forward(x, None, None, *weights), 1000, rounds)
    times["LSTM(64, 64)(x) training T=16 B=1"] = best(lambda: layer(x), 1000, rounds)
    times["lstm_forward inference T=16 B=1 H=64"] = best(
        lambda: fastrnn.lstm_forward(x, None, None, *weights, training=False), 1000, rounds)
    layer.eval()
    times["LSTM(64, 64).eval()(x) T=16 B=1"] = best(lambda: layer(x), 1000, rounds)
    layer.train()
    times["lstm_forward + lstm_backward T=16 B=1 H=64"] = best(train_function, 500, rounds)
    times["LSTM(64, 64) forward + backward T=16 B=1"] = best(train_layer, 500, rounds)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benches.overhead", description=__doc__)
    parser.add_argument("--rounds", type=int, default=15, help="rounds per number (default 15)")
    args = parser.parse_args(argv)
    print(json.dumps({k: round(v, 2) for k, v in measure(args.rounds).items()}))


if __name__ == "__main__":
    main()
