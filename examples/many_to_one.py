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
from fastrnn.training import Adam, Linear, prefixed, softmax_cross_entropy

V, H, T_MAX = 10, 32, 20


def batch(rng, B):
    lengths = rng.integers(3, T_MAX + 1, B)
    digits = rng.integers(0, V, (T_MAX, B))
    digits[np.arange(T_MAX)[:, None] >= lengths] = 0  # padding (never read)
    labels = np.array([7 in digits[:n, b] for b, n in enumerate(lengths)], np.int64)
    return np.eye(V, dtype=np.float32)[digits], lengths, labels


def main(steps=300, seed=0, verbose=True):
    rng = np.random.default_rng(seed)
    lstm = fastrnn.LSTM(V, H, seed=rng)
    head = Linear(H, 2, seed=rng)
    opt = Adam({**prefixed("lstm", lstm.named_parameters()),
                **prefixed("head", head.named_parameters())}, lr=0.02)
    for step in range(steps):
        x, lengths, labels = batch(rng, 64)
        output, _ = lstm(x, lengths=lengths)
        # The loss at each sequence's last real step only (many-to-one).
        loss, d_logits = softmax_cross_entropy(head(output), np.broadcast_to(labels, (T_MAX, 64)),
                                               lengths=lengths, last_only=True)
        lstm.backward(head.backward(d_logits))
        opt.step({**prefixed("lstm", lstm.grads), **prefixed("head", head.grads)})
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
    parser = argparse.ArgumentParser(description=__doc__ and __doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    main(parser.parse_args().steps)
