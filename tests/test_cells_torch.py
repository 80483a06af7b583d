"""fastrnn.torch.CellRNN: a user cell (fastrnn.cells) as a torch.nn.Module,
held to torch's own modules where the cell is one of theirs: the GRU of
examples/cells/gru.py against torch.nn.GRU, forward and autograd."""
import importlib.util
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
fastrnn_torch = pytest.importorskip("fastrnn.torch")

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "cells" / "gru.py"


@pytest.fixture(scope="module")
def gru_cell():
    spec = importlib.util.spec_from_file_location("cell_example_gru_torch", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.GRU


@pytest.mark.parametrize("backend", ["numpy", "numba", "cython"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cell_rnn_is_torch_gru(gru_cell, backend, dtype):
    import fastrnn

    if backend not in fastrnn.available_backends() and backend != "numpy":
        pytest.skip(f"the {backend} backend is unavailable here")
    torch.manual_seed(0)
    T, B, I, H = 9, 3, 5, 6
    ref = torch.nn.GRU(I, H, batch_first=True, dtype=dtype)
    mine = fastrnn_torch.CellRNN(gru_cell, I, H, batch_first=True, backend=backend, dtype=dtype)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(mine, name).copy_(getattr(ref, name + "_l0"))
    x = torch.randn(B, T, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(1, B, H, dtype=dtype, requires_grad=True)
    outs, grads = [], []
    for module in (ref, mine):
        out, h_n = module(x, h0)
        (out.square().sum() + h_n.sum()).backward()
        outs.append((out.detach().clone(), h_n.detach().clone()))
        grads.append([t.grad.clone() for t in (x, h0)]
                     + [p.grad.clone() for p in module.parameters()])
        for t in (x, h0, *module.parameters()):
            t.grad = None
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    for a, b in zip(outs[0] + tuple(grads[0]), outs[1] + tuple(grads[1])):
        assert a.shape == b.shape
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=tol, atol=tol)


def test_cell_rnn_inference_and_parameters(gru_cell):
    mine = fastrnn_torch.CellRNN(gru_cell, 4, 5, bias=False)
    assert [n for n, _ in mine.named_parameters()] == ["weight_ih", "weight_hh"]
    x = torch.randn(7, 2, 4)
    with torch.no_grad():
        out, h_n = mine(x, lengths=torch.tensor([7, 3]))
    assert out.shape == (7, 2, 5) and h_n.shape == (1, 2, 5)
    assert torch.all(out[3:, 1] == 0) and torch.equal(h_n[0, 1], out[2, 1])
    with pytest.raises(TypeError, match="fastrnn.cells.Cell"):
        fastrnn_torch.CellRNN("gru", 4, 5)
