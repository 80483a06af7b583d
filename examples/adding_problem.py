"""Long-range dependency: the adding problem (Hochreiter and Schmidhuber 1997).

Each input step carries a random value in [0, 1) and a marker; exactly two
steps are marked, one in the first half, and the target at the last step is
the sum of the two marked values.  Predicting the mean sum (1.0) scores an
MSE of 1/6 = 0.167; a model has learned the task when it goes well below
that, which needs a gradient that survives the whole sequence.  The LSTM and
the GRU get there at T=100; the tanh Elman RNN stays at the baseline.
``--compute-dtype bfloat16`` trains with bf16 products (forward and
backward; the layer's ``compute_dtype``).

    python examples/adding_problem.py [--T 100] [--steps 1500] [--cells rnn,lstm,gru]
                                      [--compute-dtype bfloat16]
"""
import argparse
import time

import numpy as np

import fastrnn
from fastrnn.training import Adam, Linear, clip_grad_norm, mse, prefixed

LAYERS = {"rnn": fastrnn.RNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}


def batch(rng, T, B):
    x = np.zeros((T, B, 2), np.float32)
    x[:, :, 0] = rng.random((T, B))
    first = rng.integers(0, T // 2, B)
    second = rng.integers(T // 2, T, B)
    x[first, np.arange(B), 1] = 1
    x[second, np.arange(B), 1] = 1
    y = (x[first, np.arange(B), 0] + x[second, np.arange(B), 0])
    targets = np.zeros((T, B, 1), np.float32)
    targets[-1, :, 0] = y
    return x, targets


def train(cell, T=100, steps=1500, H=32, B=64, seed=0, verbose=True, compute_dtype=None):
    """Train one model; returns the test MSE on 1000 new sequences."""
    rng = np.random.default_rng(seed)
    layer = LAYERS[cell](2, H, seed=rng, compute_dtype=compute_dtype)
    head = Linear(H, 1, seed=rng)
    opt = Adam({**prefixed("rnn", layer.named_parameters()),
                **prefixed("head", head.named_parameters())}, lr=0.01)
    start = time.perf_counter()
    for step in range(steps):
        x, targets = batch(rng, T, B)
        output, _ = layer(x)
        loss, d_pred = mse(head(output), targets, last_only=True)  # the last step only
        layer.backward(head.backward(d_pred))
        grads = {**prefixed("rnn", layer.grads), **prefixed("head", head.grads)}
        clip_grad_norm(grads, 1.0)
        opt.step(grads)
        if verbose and step % 250 == 0:
            print(f"  {cell} step {step:5d}  mse {loss:.4f}")
    layer.eval()
    x, targets = batch(np.random.default_rng(seed + 1), T, 1000)
    test, _ = mse(head(layer(x)[0]), targets, last_only=True)
    if verbose:
        print(f"{cell:5s} T={T}: test MSE {test:.4f} (baseline 0.167) "
              f"in {time.perf_counter() - start:.0f} s"
              + (f", {compute_dtype} products" if compute_dtype else ""))
    return test


def main(T=100, steps=1500, cells=("rnn", "lstm", "gru"), seed=0, verbose=True,
         compute_dtype=None):
    return {cell: train(cell, T, steps, seed=seed, verbose=verbose, compute_dtype=compute_dtype)
            for cell in cells}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__ and __doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=100)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--threads", type=int, help="fastrnn.set_num_threads (default: all "
                        "cores; 1 is faster for small batches, see the README)")
    parser.add_argument("--compute-dtype", choices=["bfloat16"],
                        help="bf16 products (default: float32's)")
    args = parser.parse_args()
    if args.threads:
        fastrnn.set_num_threads(args.threads)
    main(args.T, args.steps, args.cells.split(","), compute_dtype=args.compute_dtype)
