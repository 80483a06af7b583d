"""benches/int8.py: a tiny run, so that the script cannot rot."""
import contextlib
import importlib.util
import io
import math

import pytest

from fastrnn._backends import kernels


def _installed(*names):
    return all(importlib.util.find_spec(n) is not None for n in names)


@pytest.fixture(scope="module")
def run():
    """One --quick run of every cell: (rows, peak, the printed text)."""
    from benches import int8

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rows, peak, text = int8.main(**int8.parse(["--quick"]))
    assert printed.getvalue().startswith(text)
    return rows, peak, text


def _check(rows, names_of_cell):
    """Every (cell, shape) has a time and a finite error for each of
    names_of_cell(cell)."""
    from benches import int8

    cells = {cell for cell, _, _ in rows}
    assert cells == set(int8.CELLS)
    assert len(rows) == len(int8.CELLS) * len(int8.QUICK_SHAPES)
    for cell, shape, res in rows:
        for name in names_of_cell(cell):
            assert name in res, (cell, shape, name, "missing: its call failed or was not made")
            t, err = res[name]
            assert 0 < t < math.inf and math.isfinite(err), (cell, shape, name, t, err)


def test_fastrnn_contenders(run):
    """fastrnn f32, bf16 and int8 (and int8 without AMX where it uses AMX)
    in every row, int8's error below 5e-2, and both tables and the facts."""
    rows, peak, text = run
    amx = {cell: kernels("cython", cell)._amx() for cell in ("rnn", "lstm", "gru")}
    _check(rows, lambda cell: ["fastrnn f32", "fastrnn bf16", "fastrnn int8"]
           + (["fastrnn int8 (VNNI)"] if amx[cell] else []))
    for cell, shape, res in rows:
        assert res["fastrnn f32"][1] < 1e-5, (cell, shape)
        assert res["fastrnn int8"][1] < 5e-2, (cell, shape)
        if amx[cell]:  # the same products on either path
            assert res["fastrnn int8 (VNNI)"][1] == res["fastrnn int8"][1], (cell, shape)
    assert peak[False] > 0 and (True in peak) == any(amx.values())
    for piece in ("| cell | contender |", "f32/int8", "int8 GMAC/s (% peak)", "fastrnn int8 path",
                  "int8 peak", "OPENBLAS_CORETYPE", "Load: other processes"):
        assert piece in text, piece


def test_torch_contenders(run):
    """torch f32 everywhere, torch int8 for the LSTM and the GRU."""
    pytest.importorskip("torch")
    rows, _, text = run
    _check(rows, lambda cell: ["torch f32"] + (["torch int8"] if cell != "rnn" else []))
    assert "torch int8/int8" in text


def test_onnxruntime_contenders(run):
    """ONNX Runtime f32 everywhere, its int8 (DynamicQuantizeLSTM) for the LSTM."""
    if not _installed("onnx", "onnxruntime"):
        pytest.skip("onnx and onnxruntime are needed")
    rows, _, _ = run
    _check(rows, lambda cell: ["onnxruntime f32"]
           + (["onnxruntime int8"] if cell == "lstm" else []))


def test_openvino_contenders(run):
    if not _installed("onnx", "openvino"):
        pytest.skip("onnx and openvino are needed")
    rows, _, _ = run
    _check(rows, lambda cell: ["openvino f32", "openvino bf16"])
