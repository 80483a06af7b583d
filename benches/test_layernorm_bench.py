"""benches/layernorm.py: a tiny run (--quick, torch.compile left out), so that
the script cannot rot."""
import contextlib
import io
import math

import pytest


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One --quick run written to a file: (rows, the printed text, the file's text)."""
    from benches import layernorm

    out = tmp_path_factory.mktemp("layernorm") / "layernorm.md"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rows, text = layernorm.main(**layernorm.parse(["--quick", "--out", str(out)]))
    assert printed.getvalue().startswith(text)
    return rows, text, out.read_text()


def _check(rows, name, out_tol=1e-4, grad_tol=1e-3):
    """``name`` ran at every quick shape: both modes timed, both errors small."""
    from benches import layernorm

    assert [shape for shape, _ in rows] == layernorm.QUICK_SHAPES
    for shape, res in rows:
        assert name not in res["failed"], (shape, name, res["failed"].get(name))
        for mode in layernorm.MODES:
            t = res["times"][name, mode]
            assert 0 < t < math.inf, (shape, name, mode, t)
        out_err, grad_err = res["errs"][name]
        assert math.isfinite(out_err) and out_err < out_tol, (shape, name, out_err)
        assert math.isfinite(grad_err) and grad_err < grad_tol, (shape, name, grad_err)


def test_fastrnn_contenders(run):
    """fastrnn LN and plain everywhere; the tables, the targets and the facts
    printed and written to --out."""
    rows, text, written = run
    _check(rows, "fastrnn LN")
    _check(rows, "fastrnn plain")
    assert written == text
    for piece in ("| contender |", "inf ms", "train ms", "out err", "dW_hh err",
                  "| BxHxT |", "plain/LN inf", "plain/LN train", "eager/LN inf", "JAX/LN train",
                  "Targets", "torch.compile: left out", "Run:", "CPU:", "Versions:",
                  "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "XLA_FLAGS", "Threads:",
                  "Load: other processes"):
        assert piece in text, piece
    # The quick shapes are none of the issue's: no ratio is marked.
    ratios = text.split("| BxHxT |")[1].split("\n\n")[0]
    assert "✓" not in ratios and "✗" not in ratios


def test_torch_eager(run):
    pytest.importorskip("torch")
    rows, text, _ = run
    _check(rows, "torch eager")
    assert "| torch eager |" in text


def test_jax(run):
    pytest.importorskip("jax")
    rows, text, _ = run
    _check(rows, "jax")
    assert "| jax |" in text and "jax first call" in text


def test_targets_marked():
    """At the issue's shapes a ratio is marked against its target."""
    from benches import layernorm

    res = {"times": {("fastrnn LN", "inference"): 1.0, ("torch eager", "inference"): 25.0,
                     ("jax", "inference"): 1.5, ("torch.compile", "inference"): 3.0}}
    assert layernorm._ratio(res, "torch eager", "inference", (1, 64, 256)) == "25.0x ✓"
    assert layernorm._ratio(res, "jax", "inference", (1, 64, 256)) == "1.50x ✗"
    assert layernorm._ratio(res, "torch.compile", "inference", (1, 64, 256)) == "3.00x"
    assert layernorm._ratio(res, "jax", "training", (1, 64, 256)) == "-"
