"""Many-to-many, delayed: an encoder-decoder that reads a sequence and then
emits another of a different length.

The encoder GRU reads 2 to 5 digits (variable lengths in one batch); its
final state starts the decoder GRU, which emits the digits in reverse order
followed by an end token: n digits in, n + 1 tokens out.  Training feeds the
decoder the true previous token (teacher forcing) and backpropagates the
decoder's initial-state gradient into the encoder; evaluation decodes
greedily, one step at a time, feeding each token back in.

    python examples/many_to_many_delayed.py [--steps N]
"""
import argparse

import numpy as np

import fastrnn
from fastrnn.training import Adam, Linear, prefixed, softmax_cross_entropy

V, H, N_MAX = 10, 64, 5
END, START = V, V + 1  # decoder tokens beyond the digits
T_OUT = N_MAX + 1


def batch(rng, B):
    n = rng.integers(2, N_MAX + 1, B)
    digits = rng.integers(0, V, (N_MAX, B))
    targets = np.full((T_OUT, B), END)
    for b in range(B):
        targets[:n[b], b] = digits[:n[b], b][::-1]
    prev = np.vstack([np.full((1, B), START), targets[:-1]])  # teacher forcing
    return one_hot(digits, V), n, one_hot(prev, V + 2), targets


def one_hot(tokens, size):
    return np.eye(size, dtype=np.float32)[tokens]


def decode(encoder, decoder, head, x, n):
    """Greedy decoding of one batch, one token at a time."""
    _, h = encoder(x, lengths=n)
    token = np.full(x.shape[1], START)
    tokens = []
    for _ in range(T_OUT):
        out, h = decoder(one_hot(token, V + 2)[None], h)
        token = head(out[0]).argmax(axis=1)
        tokens.append(token)
    return np.stack(tokens)


def main(steps=1500, seed=0, verbose=True):
    rng = np.random.default_rng(seed)
    encoder = fastrnn.GRU(V, H, seed=rng)
    decoder = fastrnn.GRU(V + 2, H, seed=rng)
    head = Linear(H, V + 1, seed=rng)
    opt = Adam({**prefixed("enc", encoder.named_parameters()),
                **prefixed("dec", decoder.named_parameters()),
                **prefixed("head", head.named_parameters())}, lr=0.01)
    for step in range(steps):
        x, n, prev, targets = batch(rng, 64)
        _, h = encoder(x, lengths=n)
        output, _ = decoder(prev, h)
        # The n digits and the end token count; the steps after it do not.
        loss, d_logits = softmax_cross_entropy(head(output), targets, lengths=n + 1)
        _, d_h = decoder.backward(head.backward(d_logits))
        encoder.backward(np.zeros((N_MAX, 64, H), np.float32), d_h)
        opt.step({**prefixed("enc", encoder.grads), **prefixed("dec", decoder.grads),
                  **prefixed("head", head.grads)})
        if verbose and step % 250 == 0:
            print(f"step {step:4d}  loss {loss:.3f}")
    encoder.eval()
    decoder.eval()
    x, n, _, targets = batch(np.random.default_rng(seed + 1), 500)
    mask = np.arange(T_OUT)[:, None] <= n
    tokens = decode(encoder, decoder, head, x, n)
    exact = float(np.mean([(tokens[:, b] == targets[:, b])[mask[:, b]].all() for b in range(500)]))
    if verbose:
        b = 0
        print(f"in {x[:n[b], b].argmax(axis=1)} -> out {tokens[:n[b] + 1, b]} (10 = end)")
        print(f"sequences reversed exactly (with the end token): {exact:.3f} of 500")
    return exact


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__ and __doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    main(parser.parse_args().steps)
