"""A PyTorch model with torch.nn's recurrent layer and after
``fastrnn.torch.convert``: its training step (embedding -> layer -> linear ->
cross-entropy, backward, Adam) and its inference, for each cell of
--bench-cells at the grid's (B, H), T = 64.  The two members of a group are
the two models; the report's "PyTorch models" table gives their ratio.
(``benches/torch_models.py`` measures the same in interleaved rounds.)

Each case first checks that the converted model's logits and gradients are
torch's (float32 tolerance), then times the step in ``benchmark.pedantic``.
"""
import copy
import time

import pytest

from benches import grid

torch = pytest.importorskip("torch")
import fastrnn  # noqa: E402
import fastrnn.torch  # noqa: E402
from benches.torch_models import VOCAB, Model, step  # noqa: E402

T = 64
MEMBERS = ("torch.nn", "fastrnn.torch")


def pytest_generate_tests(metafunc):
    if "model_case" in metafunc.fixturenames:
        options = grid.Options.from_config(metafunc.config)
        cases = [(cell, pass_, B, H, member, n)
                 for cell in options.cells for B, H in grid.BH_GRID[options.grid]
                 for pass_ in grid.PASSES for member in MEMBERS for n in options.threads]
        metafunc.parametrize("model_case", cases, ids=[
            f"{c}-{p}-B{B}-H{H}-{m}-{n}t" for c, p, B, H, m, n in cases])


_pairs = {}


def models(cell, B, H):
    """The original model, its converted copy and the tokens, made once per shape."""
    key = (cell, B, H)
    if key not in _pairs:
        _pairs.clear()  # one shape at a time: (64, 1024) models are large
        torch.manual_seed(0)
        original = Model(cell, H)
        converted = fastrnn.torch.convert(copy.deepcopy(original))
        tokens = torch.randint(0, VOCAB, (T + 1, B), generator=torch.Generator().manual_seed(1))
        _pairs[key] = (original, converted, tokens)
    return _pairs[key]


def test_torch_model(model_case, benchmark, bench):
    cell, pass_, B, H, member, threads = model_case
    torch.set_num_threads(threads)
    fastrnn.set_num_threads(threads)
    original, converted, tokens = models(cell, B, H)
    model = converted if member == "fastrnn.torch" else original
    if member == "fastrnn.torch":
        # The member is checked against torch.nn before it is timed: logits
        # and the layer's gradients, on copies (the timed steps change weights).
        a, b = copy.deepcopy(original), copy.deepcopy(converted)
        for m in (a, b):
            m(tokens[:-1]).square().mean().backward()
        torch.testing.assert_close(b(tokens[:-1]), a(tokens[:-1]), rtol=1e-3, atol=1e-4)
        for (name, pa), pb in zip(a.rnn.named_parameters(), b.rnn.parameters()):
            torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-3, atol=1e-4, msg=name)
    # A copy with its own optimizer: the two members time the same weights.
    model = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def run():
        if pass_ == "training":
            step(model, tokens, opt)
        else:
            with torch.inference_mode():
                model(tokens[:-1])

    t0 = time.perf_counter()
    run()  # warm-up
    estimate = time.perf_counter() - t0
    rounds = max(1, min(grid.MAX_ROUNDS, int(bench.options.target_time / max(estimate, 1e-9))))
    benchmark.group = f"torch-model-{cell}-{pass_}-B{B}-H{H}-T{T}"
    benchmark.extra_info.update(kind="torch_model", cell=cell, pass_=pass_, B=B, H=H, T=T,
                                member=member, threads=threads)
    benchmark.pedantic(run, rounds=rounds, iterations=1)
