"""Many-to-one: classify variable-length sequences from their last real state.

Each sequence is 3 to 20 random digits (0-9), padded to the longest; the
label is whether the digit 7 occurs in it.  An LSTM reads the batch with
``lengths`` (no packing: h_n holds each sequence's state after its own last
digit) and a linear read-out of h_n classifies it.

    python examples/many_to_one.py [--steps N]
"""
import argparse

import numpy as np

import fastrnn
from _common import Adam, Linear, one_hot, softmax_cross_entropy

V, H, T_MAX = 10, 32, 20


def batch(rng, B):
    lengths = rng.integers(3, T_MAX + 1, B)
    digits = rng.integers(0, V, (T_MAX, B))
    digits[np.arange(T_MAX)[:, None] >= lengths] = 0  # padding (never read)
    labels = np.array([7 in digits[:n, b] for b, n in enumerate(lengths)], np.int64)
    return one_hot(digits, V), lengths, labels


def main(steps=300, seed=0, verbose=True):
    rng = np.random.default_rng(seed)
    lstm = fastrnn.LSTM(V, H, seed=rng)
    head = Linear(H, 2, rng)
    params = {**{f"lstm.{k}": v for k, v in lstm.named_parameters()},
              **{f"head.{k}": v for k, v in head.params.items()}}
    opt = Adam(params, lr=0.02)
    for step in range(steps):
        x, lengths, labels = batch(rng, 64)
        _, (h_n, _) = lstm(x, lengths=lengths)
        loss, d_logits = softmax_cross_entropy(head(h_n[-1]), labels)
        d_h = np.zeros_like(h_n)
        d_h[-1] = head.backward(d_logits)
        lstm.backward(np.zeros((T_MAX, 64, H), np.float32), d_h)
        opt.step({**{f"lstm.{k}": g for k, g in lstm.grads.items()},
                  **{f"head.{k}": g for k, g in head.grads.items()}})
        if verbose and step % 50 == 0:
            print(f"step {step:4d}  loss {loss:.3f}")
    lstm.eval()
    x, lengths, labels = batch(np.random.default_rng(seed + 1), 1000)
    _, (h_n, _) = lstm(x, lengths=lengths)
    accuracy = float((head(h_n[-1]).argmax(axis=1) == labels).mean())
    if verbose:
        print(f"accuracy on 1000 new sequences: {accuracy:.3f} (always guessing the majority "
              f"class: {max(labels.mean(), 1 - labels.mean()):.3f})")
    return accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    main(parser.parse_args().steps)
