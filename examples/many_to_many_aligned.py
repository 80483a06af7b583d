"""Many-to-many, aligned: tag every step of variable-length sequences.

The input is a sequence of digits; the tag of step t is 1 when digit t is
larger than digit t-1 (0 at the first step), so every tag needs the previous
input.  A GRU reads the batch with ``lengths``; a linear read-out of each
step's output tags it; padded steps are masked out of the loss.

    python examples/many_to_many_aligned.py [--steps N]
"""
import argparse

import numpy as np

import fastrnn
from fastrnn.training import Adam, Linear, prefixed, softmax_cross_entropy

V, H, T_MAX = 10, 32, 16


def batch(rng, B):
    lengths = rng.integers(2, T_MAX + 1, B)
    digits = rng.integers(0, V, (T_MAX, B))
    tags = np.zeros((T_MAX, B), np.int64)
    tags[1:] = digits[1:] > digits[:-1]
    return np.eye(V, dtype=np.float32)[digits], lengths, tags


def main(steps=300, seed=0, verbose=True):
    rng = np.random.default_rng(seed)
    gru = fastrnn.GRU(V, H, seed=rng)
    head = Linear(H, 2, seed=rng)
    opt = Adam({**prefixed("gru", gru.named_parameters()),
                **prefixed("head", head.named_parameters())}, lr=0.02)
    for step in range(steps):
        x, lengths, tags = batch(rng, 64)
        output, _ = gru(x, lengths=lengths)
        loss, d_logits = softmax_cross_entropy(head(output), tags, lengths=lengths)  # padding out
        gru.backward(head.backward(d_logits))
        opt.step({**prefixed("gru", gru.grads), **prefixed("head", head.grads)})
        if verbose and step % 50 == 0:
            print(f"step {step:4d}  loss {loss:.3f}")
    gru.eval()
    x, lengths, tags = batch(np.random.default_rng(seed + 1), 500)
    mask = np.arange(T_MAX)[:, None] < lengths
    output, _ = gru(x, lengths=lengths)
    correct = (head(output).argmax(axis=2) == tags) & mask
    accuracy = float(correct.sum() / mask.sum())
    if verbose:
        print(f"per-step tag accuracy on 500 new sequences: {accuracy:.3f} "
              f"(from the current digit alone the best guess scores 0.75)")
    return accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__ and __doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    main(parser.parse_args().steps)
