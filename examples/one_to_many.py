"""One-to-many: generate a sequence from a single input, feeding each output back in.

The single input names one of four digit patterns; the model then emits the
pattern's ten digits one at a time, each step reading the digit it emitted
before.  The patterns share digits (after a 0 comes 1, 2, 3 or 9), so the
model must remember which pattern it was asked for.

Training runs the GRU layer over whole sequences with teacher forcing (the
true previous digit as input); generation runs a GRUCell with the same
weights one step at a time and feeds its own choice back.

    python examples/one_to_many.py [--steps N]
"""
import argparse

import numpy as np

import fastrnn
from fastrnn.training import Adam, Linear, prefixed, softmax_cross_entropy

PATTERNS = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [0, 2, 4, 6, 8, 1, 3, 5, 7, 9],
                     [0, 3, 6, 9, 2, 5, 8, 1, 4, 7], [0, 9, 8, 7, 6, 5, 4, 3, 2, 1]])
K, V, H = len(PATTERNS), 10, 48
I = K + V + 1  # noqa: E741  the pattern's name, the previous digit, a "start" flag


def teacher_forced(pattern_ids):
    """Inputs (T, B, I) and targets (T, B) for the given patterns."""
    T, B = PATTERNS.shape[1], len(pattern_ids)
    x = np.zeros((T, B, I), np.float32)
    x[0, np.arange(B), pattern_ids] = 1  # step 0: which pattern
    x[0, :, -1] = 1
    targets = PATTERNS[pattern_ids].T  # (T, B)
    t, b = np.meshgrid(np.arange(1, T), np.arange(B), indexing="ij")
    x[t, b, K + targets[:-1]] = 1  # the previous digit
    return x, targets


def generate(cell, head, pattern_id):
    """Emit ten digits from the pattern's name alone."""
    x = np.zeros((1, I), np.float32)
    x[0, pattern_id] = 1
    x[0, -1] = 1
    h, digits = None, []
    for _ in range(PATTERNS.shape[1]):
        h = cell(x, h)
        digit = int(head(h).argmax())
        digits.append(digit)
        x = np.zeros((1, I), np.float32)
        x[0, K + digit] = 1  # feed the output back in
    return digits


def main(steps=300, seed=0, verbose=True):
    rng = np.random.default_rng(seed)
    gru = fastrnn.GRU(I, H, seed=rng)
    head = Linear(H, V, seed=rng)
    opt = Adam({**prefixed("gru", gru.named_parameters()),
                **prefixed("head", head.named_parameters())}, lr=0.02)
    for step in range(steps):
        x, targets = teacher_forced(rng.integers(0, K, 32))
        output, _ = gru(x)
        loss, d_logits = softmax_cross_entropy(head(output), targets)
        gru.backward(head.backward(d_logits))
        opt.step({**prefixed("gru", gru.grads), **prefixed("head", head.grads)})
        if verbose and step % 50 == 0:
            print(f"step {step:4d}  loss {loss:.3f}")
    # The layer's weights in a cell: weight_ih_l0 -> weight_ih and so on.
    cell = fastrnn.GRUCell(I, H).eval()
    cell.load_state_dict({k[:-3]: v for k, v in gru.state_dict().items()})
    correct = 0
    for k in range(K):
        digits = generate(cell, head, k)
        correct += digits == list(PATTERNS[k])
        if verbose:
            print(f"pattern {k}: generated {''.join(map(str, digits))}, "
                  f"wanted {''.join(map(str, PATTERNS[k]))}")
    return correct / K


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__ and __doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    main(parser.parse_args().steps)
