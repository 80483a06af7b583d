"""Why memory matters: recall the first symbol at the end of a sequence.

Each sequence is T random symbols out of K; the answer, asked at the last
step, is the first symbol.  A feed-forward network that sees a fixed window
of the last few steps has nothing to go on and stays at chance (1/K); a GRU
carries the first symbol in its state and answers every time.

    python examples/memory_vs_feedforward.py [--T 12] [--steps 400]
"""
import argparse

import numpy as np

import fastrnn
from fastrnn.training import Adam, Linear, prefixed, softmax_cross_entropy

K = 4


def batch(rng, T, B):
    symbols = rng.integers(0, K, (T, B))
    return np.eye(K, dtype=np.float32)[symbols], symbols[0]


def train_rnn(rng, T, steps, H=32, B=64):
    gru = fastrnn.GRU(K, H, seed=rng)
    head = Linear(H, K, seed=rng)
    opt = Adam({**prefixed("gru", gru.named_parameters()),
                **prefixed("head", head.named_parameters())}, lr=0.02)
    for _ in range(steps):
        x, first = batch(rng, T, B)
        output, _ = gru(x)
        _, d_logits = softmax_cross_entropy(head(output), np.broadcast_to(first, (T, B)),
                                            last_only=True)
        gru.backward(head.backward(d_logits))
        opt.step({**prefixed("gru", gru.grads), **prefixed("head", head.grads)})
    gru.eval()
    return lambda x: head(gru(x)[0][-1]).argmax(axis=1)


def train_feedforward(rng, T, steps, window=3, H=64, B=64):
    """A one-hidden-layer tanh network on the last ``window`` steps' inputs."""
    hidden, out = Linear(window * K, H, seed=rng), Linear(H, K, seed=rng)
    opt = Adam({**prefixed("hidden", hidden.named_parameters()),
                **prefixed("out", out.named_parameters())}, lr=0.02)

    def features(x):
        return x[-window:].transpose(1, 0, 2).reshape(x.shape[1], window * K)

    for _ in range(steps):
        x, first = batch(rng, T, B)
        a = np.tanh(hidden(features(x)))
        _, d_logits = softmax_cross_entropy(out(a)[None], first[None])
        hidden.backward((out.backward(d_logits[0]) * (1 - a * a)).astype(np.float32))
        opt.step({**prefixed("hidden", hidden.grads), **prefixed("out", out.grads)})
    return lambda x: out(np.tanh(hidden(features(x)))).argmax(axis=1)


def main(T=12, steps=400, seed=0, verbose=True):
    rng = np.random.default_rng(seed)
    models = {"feed-forward (last 3 steps)": train_feedforward(rng, T, steps),
              "GRU": train_rnn(rng, T, steps)}
    x, first = batch(np.random.default_rng(seed + 1), T, 2000)
    accuracy = {name: float((predict(x) == first).mean()) for name, predict in models.items()}
    if verbose:
        for name, acc in accuracy.items():
            print(f"{name:28s} accuracy {acc:.3f}  (chance {1 / K:.3f})")
    return accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__ and __doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=12)
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()
    main(args.T, args.steps)
