"""fastrnn.torch in bfloat16: under torch.autocast("cpu", dtype=torch.bfloat16)
and with bfloat16 parameters, held to torch's own modules in the same modes
(dtypes, outputs and gradients within bf16's accuracy) and to fastrnn's own
bf16 computation (exactly)."""
import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ft = pytest.importorskip("fastrnn.torch")
import fastrnn  # noqa: E402

T, B, I, H = 12, 3, 5, 16
# bf16's 8 bits over a short sequence: outputs and gradients against torch's
# bf16 run, relative to the largest value (measured 0.2-1% for gradients).
BF16_TOL = 3e-2


def autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


@functools.lru_cache(maxsize=None)
def _torch_cannot(cls):
    """torch's own error where its module ``cls`` does not run under CPU
    autocast on this CPU, else None.  (Its bf16 LSTM is a oneDNN primitive:
    on an AMD EPYC with AVX2 only, torch 2.13 raised "could not create a
    primitive descriptor for the LSTM forward propagation primitive".)"""
    module = getattr(torch.nn, cls)(I, H)
    x = torch.randn(T, B, I) if not cls.endswith("Cell") else torch.randn(B, I)
    try:
        with autocast():
            module(x)
    except RuntimeError as e:
        return str(e).splitlines()[0]
    return None


def skip_unless_torch_runs(cls):
    reason = _torch_cannot(cls)
    if reason:
        pytest.skip(f"torch's own {cls} does not run under autocast on this CPU: {reason}")


def pair(cls, **kw):
    torch.manual_seed(0)
    ref = getattr(torch.nn, cls)(I, H, **kw)
    fast = getattr(ft, cls)(I, H, **kw)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def close(a, b, tol=BF16_TOL):
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))


@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell"])
def test_the_autocast_table_is_torchs(cls):
    """_AUTOCAST_OUT is what torch's own modules return under autocast."""
    skip_unless_torch_runs(cls)
    module = getattr(torch.nn, cls)(I, H)
    x = torch.randn(T, B, I) if not cls.endswith("Cell") else torch.randn(B, I)
    with autocast():
        out = module(x)
    first = out[0] if isinstance(out, tuple) else out
    assert ft._AUTOCAST_OUT[getattr(torch.nn, cls)] == first.dtype


@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU"])
def test_layers_under_autocast_match_torch(cls):
    skip_unless_torch_runs(cls)
    ref, fast = pair(cls, num_layers=2)
    x = torch.randn(T, B, I)
    xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    with autocast():
        out_r, h_r = ref(xr)
        out_f, h_f = fast(xf)
    assert out_f.dtype == out_r.dtype
    for a, b in zip(h_f if isinstance(h_f, tuple) else (h_f,),
                    h_r if isinstance(h_r, tuple) else (h_r,)):
        assert a.dtype == b.dtype and close(a, b)
    assert close(out_f, out_r)
    out_r.float().square().sum().backward()
    out_f.float().square().sum().backward()
    assert close(xf.grad, xr.grad)
    for (name, p), q in zip(fast.named_parameters(), ref.parameters()):
        assert p.grad.dtype == torch.float32 and close(p.grad, q.grad), name


def test_autocast_runs_fastrnns_bf16_compute():
    """Not torch's rounding but fastrnn's: equal to lstm_forward's bf16 mode."""
    _, fast = pair("LSTM")
    x = torch.randn(T, B, I)
    with autocast(), torch.no_grad():
        out, _ = fast(x)
    w = [getattr(fast, n).detach().numpy() for n in
         ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")]
    want = fastrnn.lstm_forward(x.numpy(), None, None, *w, training=False,
                                compute_dtype="bfloat16")[0]
    np.testing.assert_array_equal(out.float().numpy(),
                                  torch.from_numpy(want).bfloat16().float().numpy())


@pytest.mark.parametrize("cls", ["RNN", "LSTM", "GRU", "GRUCell"])
def test_bfloat16_parameters_run_and_train(cls):
    ref, fast = pair(cls)
    ref, fast = ref.to(torch.bfloat16), fast.to(torch.bfloat16)
    shape = (B, I) if cls.endswith("Cell") else (T, B, I)
    x = torch.randn(shape).bfloat16()
    out_r, out_f = ref(x), fast(x)
    out_r = out_r[0] if isinstance(out_r, tuple) else out_r
    out_f = out_f[0] if isinstance(out_f, tuple) else out_f
    assert out_f.dtype == torch.bfloat16 and close(out_f, out_r)
    out_r.float().sum().backward()
    out_f.float().sum().backward()
    for (name, p), q in zip(fast.named_parameters(), ref.parameters()):
        assert p.grad.dtype == torch.bfloat16 and close(p.grad, q.grad, 5e-2), name


def test_convert_takes_bfloat16_modules():
    model = torch.nn.Sequential(torch.nn.GRU(I, H)).to(torch.bfloat16)
    ft.convert(model)
    assert type(model[0]) is ft.GRU
    out, _ = model[0](torch.randn(T, B, I).bfloat16())
    assert out.dtype == torch.bfloat16
