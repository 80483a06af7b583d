"""A character-level language model trained with truncated BPTT.

By default it reads a fixed selection of the Python standard library's own
source files from the running interpreter's installation (so the text exists
on every machine), or any text file given with --text.  The text is cut into
B parallel streams; the model reads them in windows of k characters,
carrying its state from one window into the next (truncated BPTT), with
gradient clipping and Adam.  It prints samples as it trains and reports the
validation loss in bits per character against the unigram entropy of the
text (what a model that ignores context scores), and the same loss of the
trained model quantized to int8 (fastrnn.quantize_dynamic; the cython
backend), which serves it at a fraction of the cost.

    python examples/char_lm.py [--cell lstm|rnn|gru] [--seconds 120] [--text FILE]
"""
import argparse
import math
import os
import sysconfig
import time

import numpy as np

import fastrnn
from fastrnn.training import (Adam, Linear, Progress, clip_grad_norm, prefixed,
                              softmax_cross_entropy, truncated_bptt)

STDLIB_FILES = ("textwrap.py", "string.py", "shlex.py", "fnmatch.py", "glob.py", "calendar.py",
                "difflib.py", "argparse.py", "configparser.py", "pprint.py")
LAYERS = {"rnn": fastrnn.RNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}
CELLS = {"rnn": fastrnn.RNNCell, "lstm": fastrnn.LSTMCell, "gru": fastrnn.GRUCell}


def stdlib_text():
    root = sysconfig.get_paths()["stdlib"]
    parts = []
    for name in STDLIB_FILES:
        path = os.path.join(root, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                parts.append(f.read())
    if not parts:
        raise SystemExit(f"none of {STDLIB_FILES} found in {root}; pass --text FILE")
    return "\n".join(parts)


def unigram_entropy(ids, V):
    p = np.bincount(ids, minlength=V) / len(ids)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def streams(ids, B):
    """(T, B) ids: the text cut into B contiguous streams read side by side."""
    T = len(ids) // B
    return ids[:T * B].reshape(B, T).T


def sample(layer, head, cell_name, itos, stoi, rng, length=200, temperature=0.8, start="\n"):
    """Generate text one character at a time with a cell holding the layer's weights."""
    cell = CELLS[cell_name](layer.input_size, layer.hidden_size, dtype=layer.dtype,
                            **({"nonlinearity": layer.nonlinearity} if cell_name == "rnn" else {}))
    cell.eval().load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})
    eye = np.eye(len(itos), dtype=layer.dtype)
    state, ch, out = None, stoi.get(start, 0), []
    for _ in range(length):
        state = cell(eye[[ch]], state)
        logits = head(state[0] if cell_name == "lstm" else state)[0] / temperature
        p = np.exp(logits - logits.max())
        ch = int(rng.choice(len(p), p=p / p.sum()))
        out.append(itos[ch])
    return "".join(out)


def main(cell="lstm", seconds=120.0, steps=None, text=None, H=128, B=32, k=64, lr=3e-3,
         sample_every=30.0, seed=0, max_chars=None, verbose=True):
    """Train; returns a dict with the validation bits per character, the unigram
    entropy, the windows trained and the seconds taken."""
    rng = np.random.default_rng(seed)
    text = text if text is not None else stdlib_text()
    if max_chars:
        text = text[:max_chars]
    itos = sorted(set(text))
    stoi = {c: i for i, c in enumerate(itos)}
    ids = np.array([stoi[c] for c in text], np.int64)
    V = len(itos)
    split = int(len(ids) * 0.9)
    train_ids, val_ids = streams(ids[:split], B), streams(ids[split:], 8)
    eye = np.eye(V, dtype=np.float32)

    layer = LAYERS[cell](V, H, seed=rng)
    head = Linear(H, V, seed=rng)
    opt = Adam({**prefixed("rnn", layer.named_parameters()),
                **prefixed("head", head.named_parameters())}, lr=lr)
    if verbose:
        print(f"{len(text):,} characters, {V} distinct; {cell.upper()} H={H}, {B} streams, "
              f"windows of {k}; unigram entropy {unigram_entropy(ids, V):.3f} bits/char")
    progress = Progress(total=steps, quiet=not verbose)
    start = last_sample = time.perf_counter()
    state, pos, windows = None, 0, 0

    def loss_and_grad(output, a, b):
        loss, d_logits = softmax_cross_entropy(head(output), chunk_targets[a:b])
        return loss, head.backward(d_logits)

    def on_window(a, b, loss):
        nonlocal windows
        grads = {**prefixed("rnn", layer.grads), **prefixed("head", head.grads)}
        clip_grad_norm(grads, 1.0)
        opt.step(grads)
        windows += 1
        progress.update(loss / math.log(2), tokens=(b - a) * B)

    while (steps is None or windows < steps) and (steps is not None or
                                                  time.perf_counter() - start < seconds):
        if pos + k + 1 > len(train_ids):
            state, pos = None, 0  # a new pass over the text
        chunk = train_ids[pos:pos + k + 1]  # one window: inputs and next-character targets
        chunk_targets = chunk[1:]
        _, state = truncated_bptt(layer, eye[chunk[:-1]], k, loss_and_grad, hx=state,
                                  on_window=on_window)
        pos += k
        if verbose and time.perf_counter() - last_sample > sample_every:
            last_sample = time.perf_counter()
            print("\n--- sample ---\n" + sample(layer, head, cell, itos, stoi, rng) + "\n---")
    progress.close()
    elapsed = time.perf_counter() - start

    def validation_bpc(model):
        losses, _ = truncated_bptt(
            model, eye[val_ids[:-1]], 256,
            lambda out, a, b: (softmax_cross_entropy(head(out), val_ids[1:][a:b],
                                                     reduction="sum")[0], None))
        return sum(losses) / (val_ids[1:].size * math.log(2))

    val_bpc = validation_bpc(layer.eval())
    int8_bpc = None
    if "cython" in fastrnn.available_backends():
        int8_bpc = validation_bpc(fastrnn.quantize_dynamic(layer))
    unigram = unigram_entropy(ids, V)
    if verbose:
        print("--- sample ---\n" + sample(layer, head, cell, itos, stoi, rng) + "\n---")
        print(f"{cell}: validation {val_bpc:.3f} bits/char against the unigram entropy "
              f"{unigram:.3f}, after {windows} windows ({windows * k * B:,} characters) "
              f"in {elapsed:.0f} s")
        if int8_bpc is not None:
            print(f"quantized to int8: validation {int8_bpc:.3f} bits/char "
                  f"({100 * (int8_bpc / val_bpc - 1):+.2f}%)")
    return {"val_bpc": val_bpc, "int8_bpc": int8_bpc, "unigram_bpc": unigram,
            "windows": windows, "seconds": elapsed}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__ and __doc__.splitlines()[0])
    parser.add_argument("--cell", choices=sorted(LAYERS), default="lstm")
    parser.add_argument("--seconds", type=float, default=120.0, help="training time")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--text", help="a text file to train on (default: stdlib sources)")
    parser.add_argument("--threads", type=int, help="fastrnn.set_num_threads (default: all "
                        "cores)")
    args = parser.parse_args()
    if args.threads:
        fastrnn.set_num_threads(args.threads)
    text = None
    if args.text:
        with open(args.text, encoding="utf-8", errors="replace") as f:
            text = f.read()
    main(args.cell, args.seconds, text=text, H=args.hidden)
