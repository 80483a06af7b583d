"""A PyTorch model before and after ``fastrnn.torch.convert``: the training
step (embedding -> recurrent layer -> linear -> cross-entropy, backward,
Adam) and inference of the same model, float32, for each cell at
(B, H) = (1, 64), (16, 256), (64, 1024).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benches/torch_models.py [cells] [BxHxT,...]

Both models run on 1 and 2 threads (``torch.set_num_threads`` and
``fastrnn.set_num_threads``), in interleaved rounds with a pause between
two, each keeping its best round and its better thread count.  Prints
milliseconds per step and converted over torch.nn.
"""
import copy
import os
import sys
import time

import torch

if not __package__:  # python benches/torch_models.py: the checkout's root on the path
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import fastrnn  # noqa: E402
import fastrnn.torch  # noqa: E402
from fastrnn._timing import interleaved_best  # noqa: E402

ROUNDS = 5
PAUSE = 0.1
VOCAB = 64
LAYERS = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


class Model(torch.nn.Module):
    def __init__(self, cell, H):
        super().__init__()
        self.emb = torch.nn.Embedding(VOCAB, H)
        self.rnn = LAYERS[cell](H, H)
        self.head = torch.nn.Linear(H, VOCAB)

    def forward(self, tokens):
        out, _ = self.rnn(self.emb(tokens))
        return self.head(out)


def step(model, tokens, opt):
    """One training step on tokens (T + 1, B): next-token cross-entropy, backward, opt."""
    logits = model(tokens[:-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), tokens[1:].reshape(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()


def contenders(cell, B, H, T):
    torch.manual_seed(0)
    original = Model(cell, H)
    models = {"torch.nn": original, "fastrnn.torch": fastrnn.torch.convert(copy.deepcopy(original))}
    tokens = torch.randint(0, VOCAB, (T + 1, B))
    runs = {}
    for name, model in models.items():
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def train(model=model, opt=opt):
            step(model, tokens, opt)

        def infer(model=model):
            with torch.inference_mode():
                model(tokens[:-1])

        for n in (1, 2):
            for pass_, fn in (("training", train), ("inference", infer)):
                def run(fn=fn, n=n):
                    torch.set_num_threads(n)
                    fastrnn.set_num_threads(n)
                    t0 = time.perf_counter()
                    fn()
                    return time.perf_counter() - t0
                runs[(name, pass_, n)] = run
    return runs


def main(cells, shapes):
    """Print the table; returns its rows (cell, B, H, T, pass, ms torch.nn, ms fastrnn.torch)."""
    rows = []
    print("ms per step (best round, better of 1 and 2 threads); ratio: torch.nn / fastrnn.torch")
    print("| cell | B, H | T | pass | torch.nn | fastrnn.torch | converted vs torch.nn |")
    print("|---|---|---|---|---|---|---|")
    for cell in cells:
        for B, H, T in shapes:
            best = interleaved_best(contenders(cell, B, H, T), ROUNDS, PAUSE)
            for pass_ in ("training", "inference"):
                ms = {name: 1e3 * min(best[(name, pass_, n)] for n in (1, 2))
                      for name in ("torch.nn", "fastrnn.torch")}
                print(f"| {cell} | {B}, {H} | {T} | {pass_} | {ms['torch.nn']:.3g} | "
                      f"{ms['fastrnn.torch']:.3g} | {ms['torch.nn'] / ms['fastrnn.torch']:.2f}x |",
                      flush=True)
                rows.append((cell, B, H, T, pass_, ms["torch.nn"], ms["fastrnn.torch"]))
    return rows


if __name__ == "__main__":
    cells = sys.argv[1].split(",") if len(sys.argv) > 1 else ["rnn", "lstm", "gru"]
    shapes = ([tuple(map(int, s.split("x"))) for s in sys.argv[2].split(",")]
              if len(sys.argv) > 2 else [(1, 64, 256), (16, 256, 256), (64, 1024, 64)])
    main(cells, shapes)
