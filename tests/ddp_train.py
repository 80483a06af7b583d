"""Train a small converted model with DistributedDataParallel (gloo, two
processes on localhost) and the same model in one process on the summed
batch; saves both state dicts.  Run by tests/test_fastrnn_torch.py:

    python tests/ddp_train.py OUT_DIR
"""
import os
import socket
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fastrnn
import fastrnn.torch

WORLD, B, T, STEPS, VOCAB = 2, 3, 7, 4, 11


class LanguageModel(torch.nn.Module):
    """embedding -> 2-layer bidirectional GRU -> linear; forward gives the loss."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(VOCAB, 5)
        self.rnn = torch.nn.GRU(5, 6, num_layers=2, bidirectional=True)
        self.head = torch.nn.Linear(12, VOCAB)

    def forward(self, tokens):
        out, _ = self.rnn(self.emb(tokens[:-1]))
        return torch.nn.functional.cross_entropy(self.head(out).reshape(-1, VOCAB),
                                                 tokens[1:].reshape(-1))


def model():
    torch.manual_seed(0)
    return fastrnn.torch.convert(LanguageModel().double())


def train(run, parameters, columns):
    g = torch.Generator().manual_seed(1)
    batches = torch.randint(0, VOCAB, (STEPS, T + 1, WORLD * B), generator=g)
    opt = torch.optim.Adam(parameters, lr=0.05)
    for tokens in batches:
        loss = run(tokens[:, columns])
        opt.zero_grad()
        loss.backward()
        opt.step()


def worker(rank, port, out_dir):
    fastrnn.set_num_threads(1)
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    m = model()
    ddp = torch.nn.parallel.DistributedDataParallel(m)
    # Each process its half of every batch; DDP averages the gradients, which
    # for equal halves is the gradient of the whole batch's mean loss.
    train(ddp, ddp.parameters(), slice(rank * B, (rank + 1) * B))
    if rank == 0:
        torch.save(m.state_dict(), os.path.join(out_dir, "ddp.pt"))
    # Both ranks leave together: a rank that tore its group down while the
    # other still saved once aborted in gloo ("terminate called without an
    # active exception", seen in CI on a loaded machine).
    dist.barrier()
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    out_dir = sys.argv[1]
    torch.save(model().state_dict(), os.path.join(out_dir, "init.pt"))
    m = model()
    train(m, m.parameters(), slice(0, WORLD * B))
    torch.save(m.state_dict(), os.path.join(out_dir, "single.pt"))
    mp.spawn(worker, args=(free_port(), out_dir), nprocs=WORLD, join=True)
