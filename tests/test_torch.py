"""fastrnn against PyTorch's nn.RNN / nn.LSTM / nn.GRU given the same weights.

Runs only when torch is importable.  Outputs, final states and every
gradient, in float64 and float32, for every backend; variable lengths
against ``pack_padded_sequence``.
"""
import numpy as np
import pytest

from fastrnn._spec import CELLS
from fastrnn._testing import backward, forward, random_upstream
from fastrnn._testing import assert_close

torch = pytest.importorskip("torch")

MODULES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
T, B, I, H = 7, 4, 5, 6


def torch_run(cell, module, x, h0, c0, lengths, ups):
    """Outputs and gradients from torch, as float64 NumPy arrays under fastrnn's names."""
    tx = torch.tensor(x, requires_grad=True)
    th0 = torch.tensor(h0[None], requires_grad=True)
    tc0 = torch.tensor(c0[None], requires_grad=True) if cell == "lstm" else None
    inp = tx
    if lengths is not None:
        inp = torch.nn.utils.rnn.pack_padded_sequence(tx, torch.tensor(lengths),
                                                      enforce_sorted=False)
    result, state = module(inp, (th0, tc0) if cell == "lstm" else th0)
    if lengths is not None:
        result, _ = torch.nn.utils.rnn.pad_packed_sequence(result, total_length=T)
    finals = dict(zip(("h_n", "c_n"), state if cell == "lstm" else (state,)))
    outs = {"out": result, **{k: v[0] for k, v in finals.items()}}
    loss = sum((v * torch.tensor(ups["d_" + k])).sum() for k, v in outs.items())
    loss.backward()
    grads = {"dx": tx.grad, "dh0": th0.grad[0], "dW_ih": module.weight_ih_l0.grad,
             "dW_hh": module.weight_hh_l0.grad}
    if cell == "lstm":
        grads["dc0"] = tc0.grad[0]
    if module.bias:
        grads.update(db_ih=module.bias_ih_l0.grad, db_hh=module.bias_hh_l0.grad)
    as_np = {k: v.detach().double().numpy() for k, v in outs.items()}
    return as_np, {k: v.detach().double().numpy() for k, v in grads.items()}


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("lengths", [None, [7, 3, 1, 5]], ids=["full", "packed"])
def test_matches_torch(cell, backend, dtype, bias, lengths):
    torch.manual_seed(0)
    module = getattr(torch.nn, MODULES[cell])(I, H, bias=bias).to(
        torch.float32 if dtype == np.float32 else torch.float64)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    c0 = rng.standard_normal((B, H)).astype(dtype)
    ups = random_upstream(cell, T, B, H, dtype, seed=2)
    want_outs, want_grads = torch_run(cell, module, x, h0, c0, lengths, ups)

    # Weights copied out of the torch module as they are: same names, same layout.
    weights = {name: p.detach().numpy().copy() for name, p in module.named_parameters()}
    problem = dict(x=x, h0=h0, W_ih=weights["weight_ih_l0"], W_hh=weights["weight_hh_l0"],
                   b_ih=weights.get("bias_ih_l0"), b_hh=weights.get("bias_hh_l0"),
                   lengths=lengths)
    if cell == "lstm":
        problem["c0"] = c0
    outs, cache = forward(cell, problem, backend)
    grads = backward(cell, ups, cache)
    for name, want in want_outs.items():
        assert_close(outs[name], want, dtype, name)
    for name, g in grads.items():
        if not bias and name.startswith("db"):
            assert g is None
            continue
        assert_close(g, want_grads[name], dtype, name)
