"""fastrnn.torch: torch.nn's recurrent modules on fastrnn's kernels, held to
torch's own modules (outputs, final states, every gradient), gradcheck, the
inference path, dropout, errors, convert() and a training loop."""
import copy
import pathlib
import subprocess
import sys
import warnings

import pytest

torch = pytest.importorskip("torch")
ft = pytest.importorskip("fastrnn.torch")
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

CLASSES = ["RNN", "LSTM", "GRU"]
CONFIGS = {
    "1-layer": {},
    "2-layer-bidirectional": dict(num_layers=2, bidirectional=True),
    "3-layer-batch-first": dict(num_layers=3, batch_first=True),
    "no-bias-bidirectional": dict(bias=False, bidirectional=True),
    "relu": dict(nonlinearity="relu"),
}
TOL = {torch.float32: dict(rtol=2e-4, atol=2e-5), torch.float64: dict(rtol=1e-9, atol=1e-11)}
T, B, I, H = 6, 4, 5, 7
LENGTHS = [3, 6, 1, 4]  # unsorted, with one length of 1


def pair(cls, dtype=torch.float64, **kw):
    """torch's module and fastrnn's with the same weights."""
    torch.manual_seed(0)
    ref = getattr(torch.nn, cls)(I, H, **kw).to(dtype)
    fast = getattr(ft, cls)(I, H, **kw).to(dtype)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def flat(h):
    return list(h) if isinstance(h, tuple) else [h]


def run(module, x, hx, kind, lengths):
    """(output tensor, final states, gradients of x, hx and every parameter)."""
    if kind.startswith("packed"):
        xin = pack_padded_sequence(x, lengths if kind == "packed-unsorted" else sorted(
            lengths, reverse=True), batch_first=module.batch_first,
            enforce_sorted=kind == "packed-sorted")
    else:
        xin = x
    out, h = module(xin, hx)
    data = out.data if kind.startswith("packed") else out
    loss = (data * torch.linspace(-1, 1, data.numel(), dtype=data.dtype).view_as(data)).sum()
    loss = loss + sum((s * s).sum() for s in flat(h))
    wrt = [x] + [s for s in flat(hx) if s is not None and s.requires_grad] + list(
        module.parameters())
    return data, flat(h), torch.autograd.grad(loss, wrt)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", ["tensor", "packed-sorted", "packed-unsorted", "unbatched"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["hx-None", "hx"])
@pytest.mark.parametrize("cls, config", [(c, k) for c in CLASSES for k in CONFIGS
                                         if c == "RNN" or "nonlinearity" not in CONFIGS[k]])
def test_layers_match_torch(cls, config, kind, with_hx, dtype):
    kw = CONFIGS[config]
    ref, fast = pair(cls, dtype, **kw)
    D, L = 2 if kw.get("bidirectional") else 1, kw.get("num_layers", 1)
    g = torch.Generator().manual_seed(1)
    shape = (B, T, I) if kw.get("batch_first") else (T, B, I)
    if kind == "unbatched":
        shape = (T, I)
    x = torch.randn(shape, generator=g, dtype=dtype, requires_grad=True)
    hx = None
    if with_hx:
        hshape = (L * D, H) if kind == "unbatched" else (L * D, B, H)
        states = [torch.randn(hshape, generator=g, dtype=dtype, requires_grad=True)
                  for _ in range(2 if cls == "LSTM" else 1)]
        hx = tuple(states) if cls == "LSTM" else states[0]
    lengths = None if kind == "tensor" else LENGTHS
    expected, got = run(ref, x, hx, kind, lengths), run(fast, x, hx, kind, lengths)
    for a, b in zip([expected[0], *expected[1], *expected[2]], [got[0], *got[1], *got[2]]):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(b, a, **TOL[dtype])


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("batched", [True, False])
def test_cells_match_torch(cls, batched):
    torch.manual_seed(0)
    ref = getattr(torch.nn, cls + "Cell")(I, H).double()
    fast = getattr(ft, cls + "Cell")(I, H).double()
    fast.load_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(2)
    lead = (B,) if batched else ()
    x = torch.randn(lead + (I,), generator=g, dtype=torch.float64, requires_grad=True)
    for hx in (None, tuple(torch.randn(lead + (H,), generator=g, dtype=torch.float64,
                                       requires_grad=True) for _ in range(2 if cls == "LSTM"
                                                                          else 1))):
        arg = None if hx is None else (hx if cls == "LSTM" else hx[0])
        results = []
        for m in (ref, fast):
            out = flat(m(x, arg))
            loss = sum((o * o).sum() + o.sum() for o in out)
            results.append(out + list(torch.autograd.grad(
                loss, [x, *(hx or ()), *m.parameters()])))
        for a, b in zip(*results):
            torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("cls", CLASSES)
def test_gradcheck_through_packed_sequences_and_hx(cls):
    """dx and dhx of a 2-layer bidirectional layer over a packed batch, and of
    a cell (the parameters' gradients: the next test)."""
    _, fast = pair(cls, torch.float64, num_layers=2, bidirectional=True)
    g = torch.Generator().manual_seed(3)
    k = 2 if cls == "LSTM" else 1
    x = torch.randn(4, 3, I, generator=g, dtype=torch.float64, requires_grad=True)
    h = [torch.randn(4, 3, H, generator=g, dtype=torch.float64, requires_grad=True)
         for _ in range(k)]

    def layer(x, *h):
        packed = pack_padded_sequence(x, [2, 4, 3], enforce_sorted=False)
        out, hn = fast(packed, tuple(h) if k == 2 else h[0])
        return (out.data, *flat(hn))

    assert torch.autograd.gradcheck(layer, (x, *h), eps=1e-6, atol=1e-7)
    cell = getattr(ft, cls + "Cell")(3, 4).double()
    xc = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    hc = [torch.randn(2, 4, generator=g, dtype=torch.float64, requires_grad=True)
          for _ in range(k)]

    def step(x, *h):
        return tuple(flat(cell(x, tuple(h) if k == 2 else h[0])))

    assert torch.autograd.gradcheck(step, (xc, *hc), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("cls", CLASSES)
def test_parameter_gradients_pass_gradcheck(cls):
    """Every parameter's gradient, through torch.func.functional_call."""
    _, fast = pair(cls, torch.float64, num_layers=2)
    x = torch.randn(4, 3, I, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    names = [n for n, _ in fast.named_parameters()]
    values = tuple(p.detach().clone().requires_grad_(True) for p in fast.parameters())

    def f(*values):
        out, hn = torch.func.functional_call(fast, dict(zip(names, values)), (x,))
        return (out, *flat(hn))

    assert torch.autograd.gradcheck(f, values, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("cls", CLASSES)
def test_inference_saves_nothing(cls):
    ref, fast = pair(cls, torch.float32, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I)
    for context in (torch.no_grad, torch.inference_mode):
        with context():
            out, h = fast(x)
        assert out.grad_fn is None and not out.requires_grad
        torch.testing.assert_close(out, ref(x)[0].detach(), **TOL[torch.float32])
    for p in fast.parameters():
        p.requires_grad_(False)
    out, _ = fast(x)
    assert out.grad_fn is None
    x.requires_grad_(True)
    out, _ = fast(x)  # the input alone needs a gradient
    assert out.grad_fn is not None


def test_double_backward_says_it_is_not_supported():
    _, fast = pair("GRU", torch.float64)
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    out, _ = fast(x)
    with pytest.raises(RuntimeError, match="does not support double backward"):
        torch.autograd.grad(out.sum(), x, create_graph=True)


def test_backward_twice_through_one_forward():
    _, fast = pair("LSTM", torch.float64)
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    out, _ = fast(x)
    (first,) = torch.autograd.grad(out.sum(), x, retain_graph=True)
    (second,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(first, second)


def test_dropout_between_layers():
    """p = 0 and eval mode are exact; in training each value of a layer's
    output reaches the next layer zeroed with probability p or scaled by
    1/(1-p), from torch's RNG."""
    p = 0.3
    torch.manual_seed(0)
    for dropout in (0.0, p):
        ref = torch.nn.LSTM(I, H, num_layers=2, dropout=dropout).double()
        fast = ft.LSTM(I, H, num_layers=2, dropout=dropout).double()
        fast.load_state_dict(ref.state_dict())
        x = torch.randn(T, B, I, dtype=torch.float64)
        ref.eval(), fast.eval()
        torch.testing.assert_close(fast(x)[0], ref(x)[0], rtol=1e-9, atol=1e-11)
        if dropout == 0:
            ref.train(), fast.train()
            torch.testing.assert_close(fast(x)[0], ref(x)[0], rtol=1e-9, atol=1e-11)
    # Layer 1 as the identity on layer 0's (non-negative) output: relu, no
    # recurrence, no bias, W_ih = I.  Then output = mask * h0 / (1 - p).
    rnn = ft.RNN(I, 50, num_layers=2, nonlinearity="relu", dropout=p).double()
    with torch.no_grad():
        rnn.weight_ih_l1.copy_(torch.eye(50))
        rnn.weight_hh_l1.zero_(), rnn.bias_ih_l1.zero_(), rnn.bias_hh_l1.zero_()
    x = torch.randn(40, 8, I, dtype=torch.float64)
    rnn.eval()
    h0 = rnn(x)[0]
    rnn.train()
    torch.manual_seed(5)
    out = rnn(x)[0]
    torch.manual_seed(5)
    torch.testing.assert_close(rnn(x)[0], out)  # torch.manual_seed governs the masks
    positive = h0 > 0
    dropped = (out[positive] == 0).double().mean().item()
    assert abs(dropped - p) < 0.02, dropped  # 8k values: 4.5 standard deviations
    kept = positive & (out != 0)
    torch.testing.assert_close(out[kept], h0[kept] / (1 - p))


@pytest.mark.parametrize("cls", CLASSES)
def test_bad_input_gives_torchs_errors(cls):
    ref, fast = pair(cls, torch.float32)
    bad = [torch.randn(T, B, I + 1), torch.randn(T, B, I, 2), torch.randn(T, B, I).double()]
    k = 2 if cls == "LSTM" else 1
    wrong_h = torch.randn(1, B + 1, H)
    bad_hx = [(torch.randn(T, B, I), (wrong_h,) * k if k == 2 else wrong_h),
              (torch.randn(T, B, I), (torch.randn(B, H),) * k if k == 2 else torch.randn(B, H))]
    for args in [(x,) for x in bad] + bad_hx:
        with pytest.raises(Exception) as expected:
            ref(*args)
        with pytest.raises(type(expected.value)) as got:
            fast(*args)
        assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("cls", CLASSES)
def test_bad_cell_input_gives_torchs_errors(cls):
    torch.manual_seed(0)
    ref, fast = getattr(torch.nn, cls + "Cell")(I, H), getattr(ft, cls + "Cell")(I, H)
    k = 2 if cls == "LSTM" else 1

    def hx(*shape):
        return (torch.randn(shape),) * k if k == 2 else torch.randn(shape)

    cases = [(torch.randn(3, I + 1),), (torch.randn(3, I, 2),), (torch.randn(3, I), hx(4, H)),
             (torch.randn(3, I), hx(3, H + 1)), (torch.randn(3, I), hx(H)),
             (torch.randn(I), hx(3, H)), (torch.randn(3, I), hx(3, H, 1)),
             (torch.randn(3, I).double(),)]
    for args in cases:
        with pytest.raises(Exception) as expected:
            ref(*args)
        with pytest.raises(type(expected.value)) as got:
            fast(*args)
        if args[0].dtype == torch.float32:  # torch's dtype message comes from its matmul
            assert str(got.value) == str(expected.value)
        else:
            assert "dtype (torch.float64) does not match weight dtype" in str(got.value)


def test_what_fastrnn_cannot_run_names_it():
    with pytest.raises(ValueError, match="float16.*torch.nn.LSTM"):
        ft.LSTM(I, H, proj_size=3, dtype=torch.float16)
    with pytest.raises(ValueError, match="float16.*torch.nn.GRU"):
        ft.GRU(I, H, dtype=torch.float16)
    fast = ft.GRU(I, H)
    with pytest.raises(ValueError, match="input is on meta.*torch.nn.GRU"):
        fast(torch.empty(T, B, I, device="meta"))
    fast.half()
    with pytest.raises(ValueError, match="float16"):
        fast(torch.randn(T, B, I).half())


class _Nested(torch.nn.Module):
    """Recurrent modules at several depths, one fastrnn cannot run."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(10, I)
        self.encoder = torch.nn.Sequential(torch.nn.LSTM(I, H))
        self.decoder = torch.nn.ModuleDict({"cells": torch.nn.ModuleList(
            [torch.nn.GRUCell(H, H), torch.nn.RNNCell(H, H, nonlinearity="relu")])})
        self.halved = torch.nn.LSTM(I, H, proj_size=2).half()  # not in the forward

    def forward(self, tokens):
        out, _ = self.encoder[0](self.emb(tokens))
        h = out[-1]
        for cell in self.decoder["cells"]:
            h = cell(h, h)
        return out.sum() + h.sum()


def test_convert_swaps_in_place_and_keeps_the_parameters():
    torch.manual_seed(0)
    model = _Nested()
    params = {n: p for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    state = copy.deepcopy(model.state_dict())
    reference = copy.deepcopy(model)
    with pytest.warns(UserWarning, match="halved .LSTM.*float16"):
        assert ft.convert(model) is model
    assert type(model.encoder[0]) is ft.LSTM and isinstance(model.encoder[0], torch.nn.LSTM)
    assert [type(c) for c in model.decoder["cells"]] == [ft.GRUCell, ft.RNNCell]
    assert type(model.halved) is torch.nn.LSTM
    assert all(p is params[n] for n, p in model.named_parameters())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    # The state dict goes both ways between converted and unconverted models.
    fresh = _Nested()
    fresh.load_state_dict(model.state_dict())
    with pytest.warns(UserWarning, match="halved"):
        ft.convert(copy.deepcopy(fresh)).load_state_dict(reference.state_dict())
    x = torch.randint(0, 10, (T, B))
    torch.testing.assert_close(model(x), fresh(x), rtol=1e-4, atol=1e-4)
    model(x).backward()
    before = model.encoder[0].weight_hh_l0.detach().clone()
    opt.step()  # the optimizer made before the swap updates the same tensors
    assert not torch.equal(model.encoder[0].weight_hh_l0, before)
    single = ft.convert(torch.nn.RNN(I, H))
    assert type(single) is ft.RNN
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ft.convert(torch.nn.Linear(2, 2))  # nothing to swap, nothing to say


def test_training_loop_matches_torch():
    """embedding -> LSTM -> linear -> cross-entropy with Adam, 20 steps, float64:
    the converted model's losses are the original's."""
    def model():
        torch.manual_seed(0)
        return torch.nn.ModuleDict({"emb": torch.nn.Embedding(12, 6), "rnn": torch.nn.LSTM(
            6, 8, num_layers=2, batch_first=True), "head": torch.nn.Linear(8, 12)}).double()

    g = torch.Generator().manual_seed(1)
    data = torch.randint(0, 12, (20, 5, 9), generator=g)
    losses = []
    for convert in (False, True):
        m = model()
        if convert:
            ft.convert(m)
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        run = []
        for batch in data:
            out, _ = m["rnn"](m["emb"](batch[:, :-1]))
            loss = torch.nn.functional.cross_entropy(m["head"](out).reshape(-1, 12),
                                                     batch[:, 1:].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.append(loss.item())
        losses.append(run)
    assert losses[0][-1] < losses[0][0]
    assert losses[1] == pytest.approx(losses[0], rel=1e-10, abs=1e-12)


def test_import_without_torch_says_what_to_install():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import fastrnn\n"
            "try:\n    import fastrnn.torch\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install" in out.stdout and "torch" in out.stdout


def test_distributed_data_parallel_matches_one_process(tmp_path):
    """A converted model trained with torch's DDP (gloo, two processes on
    localhost, each its half of every batch) ends with the weights of the
    one-process run on the whole batches (tests/ddp_train.py)."""
    pytest.importorskip("torch.distributed")
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    script = pathlib.Path(__file__).with_name("ddp_train.py")
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, timeout=300)
    init, single, ddp = (torch.load(tmp_path / f"{name}.pt") for name in ("init", "single", "ddp"))
    assert single.keys() == ddp.keys() == init.keys()
    for key in single:
        assert not torch.equal(single[key], init[key])  # the steps trained every parameter
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-9, atol=1e-11)
