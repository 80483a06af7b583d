"""fastrnn.torch.LayerNormLSTM and LayerNormGRU against the same cells written
as PyTorch users write them (PyTorch's benchmark of custom cells: a loop over
steps, torch.nn.LayerNorm on each product and on c), through autograd:
outputs, final states and the gradients of the input, the initial states and
every parameter; and the module's contract (state_dict keys, inference
path, errors)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
ft = pytest.importorskip("fastrnn.torch")


def _torch_cell(module, x, states, lengths):
    """The module's cell in plain torch over x (T, B, I): out, finals."""
    T = x.shape[0]
    lstm = isinstance(module, ft.LayerNormLSTM)
    H = module.hidden_size
    h = states[0]
    c = states[1] if lstm else None
    outs = []
    for t in range(T):
        yi = module.layernorm_i(x[t] @ module.weight_ih.T)
        yh = module.layernorm_h(h @ module.weight_hh.T)
        if lstm:
            i, f, g, o = (yi + yh).chunk(4, 1)
            c_new = module.layernorm_c(f.sigmoid() * c + i.sigmoid() * g.tanh())
            h_new = o.sigmoid() * c_new.tanh()
        else:
            r = (yi[:, :H] + yh[:, :H]).sigmoid()
            z = (yi[:, H:2 * H] + yh[:, H:2 * H]).sigmoid()
            n = (yi[:, 2 * H:] + r * yh[:, 2 * H:]).tanh()
            h_new = (1 - z) * n + z * h
        run = torch.ones(x.shape[1], 1, dtype=torch.bool) if lengths is None else \
            torch.tensor(t < np.asarray(lengths))[:, None]
        h = torch.where(run, h_new, h)
        if lstm:
            c = torch.where(run, c_new, c)
        outs.append(torch.where(run, h_new, torch.zeros_like(h_new)))
    return torch.stack(outs), ([h, c] if lstm else [h])


def _module_backends():
    from fastrnn.layernorm import NORM_BACKENDS

    return [(cls, b) for cls, cell in (("LayerNormLSTM", "layernorm_lstm"),
                                       ("LayerNormGRU", "layernorm_gru"))
            for b in NORM_BACKENDS[cell]]


@pytest.mark.parametrize("cls, backend", _module_backends())
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("lengths", [None, [4, 1, 0]], ids=["full", "lengths"])
def test_module_matches_torch_cell(cls, batch_first, lengths, backend):
    torch.manual_seed(0)
    T, B, I, H = 4, 3, 5, 6
    m = getattr(ft, cls)(I, H, batch_first=batch_first, backend=backend).double()
    with torch.no_grad():  # gains and biases away from 1 and 0
        for name, p in m.named_parameters():
            if name.startswith("layernorm"):
                p.add_(0.3 * torch.randn_like(p))
    n = 2 if cls == "LayerNormLSTM" else 1
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    hx = [(0.5 * torch.randn(1, B, H, dtype=torch.float64)).requires_grad_() for _ in range(n)]
    out, fin = m(x.transpose(0, 1) if batch_first else x, tuple(hx) if n == 2 else hx[0],
                 lengths=lengths)
    fin = list(fin) if n == 2 else [fin]
    if batch_first:
        out = out.transpose(0, 1)
    ref_out, ref_fin = _torch_cell(m, x, [s[0] for s in hx], lengths)
    assert torch.allclose(out, ref_out, atol=1e-12)
    for a, b in zip(fin, ref_fin):
        assert a.shape == (1, B, H)
        assert torch.allclose(a[0], b, atol=1e-12)
    weights = [torch.randn_like(t) for t in (out, *fin)]
    tensors = [x, *hx, *m.parameters()]
    got = torch.autograd.grad(sum((w * t).sum() for w, t in zip(weights, (out, *fin))), tensors)
    want = torch.autograd.grad(
        sum((w * t).sum() for w, t in zip(weights, (ref_out, *[f[None] for f in ref_fin]))),
        tensors)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-11), (g - w).abs().max()


@pytest.mark.parametrize("cls", ["LayerNormLSTM", "LayerNormGRU"])
def test_inference_path_matches_training_path(cls):
    torch.manual_seed(1)
    m = getattr(ft, cls)(3, 8)
    x = torch.randn(7, 2, 3)
    out, _ = m(x)  # parameters require gradients: the autograd path
    with torch.no_grad():
        out2, _ = m(x)
    assert not out2.requires_grad
    assert torch.equal(out.detach(), out2)


def test_state_dict_is_the_benchmark_cells():
    keys = list(ft.LayerNormLSTM(2, 3).state_dict())
    assert keys == ["weight_ih", "weight_hh", "layernorm_i.weight", "layernorm_i.bias",
                    "layernorm_h.weight", "layernorm_h.bias", "layernorm_c.weight",
                    "layernorm_c.bias"]
    gru = ft.LayerNormGRU(2, 3).state_dict()
    assert gru["weight_ih"].shape == (9, 2) and gru["layernorm_h.weight"].shape == (9,)
    assert "layernorm_c.weight" not in gru


def test_float32_training_step_moves_the_loss():
    torch.manual_seed(2)
    m = ft.LayerNormLSTM(4, 16)
    x, y = torch.randn(10, 8, 4), torch.randn(10, 8, 16)
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = ((m(x)[0] - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_errors_name_the_problem():
    m = ft.LayerNormLSTM(3, 4)
    with pytest.raises(ValueError, match="input must be 3-D"):
        m(torch.randn(3, 3))
    with pytest.raises(ValueError, match=r"hx must be \(h_0, c_0\)"):
        m(torch.randn(2, 2, 3), torch.zeros(1, 2, 4))
    with pytest.raises(ValueError, match="x must have shape|W_ih must have shape"):
        m(torch.randn(2, 2, 5))
    with pytest.raises(TypeError, match="dtype"):
        m(torch.randn(2, 2, 3, dtype=torch.float64))
