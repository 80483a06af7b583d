"""The ONNX peers of benches/versus_peers.py compute what fastrnn's reference
does (skips where onnx or a runtime is not installed)."""
import numpy as np
import pytest

from benches import onnx_peers
from fastrnn._spec import CELLS

pytest.importorskip("onnx")


@pytest.mark.parametrize("cell", CELLS)
def test_onnx_peers_match_the_reference(cell):
    G, H, I = CELLS[cell].G, 6, 5
    rng = np.random.default_rng(0)
    W_ih, W_hh = (rng.uniform(-0.5, 0.5, (G * H, n)).astype(np.float32) for n in (I, H))
    b_ih, b_hh = (rng.uniform(-0.5, 0.5, G * H).astype(np.float32) for _ in range(2))
    found = onnx_peers.runners(cell, W_ih, W_hh, b_ih, b_hh, threads=1)
    if not found:
        pytest.skip("no ONNX runtime installed (pip install onnxruntime openvino)")
    for run in found.values():
        onnx_peers.check(run, cell, W_ih, W_hh, b_ih, b_hh)


@pytest.mark.parametrize("cell", CELLS)
def test_low_precision_peers_are_close_to_the_reference(cell):
    """OpenVINO in bf16 and ONNX Runtime's int8 LSTM: what they compute is the
    cell, within their precision (they are timed beside fastrnn's bf16)."""
    G, H, I = CELLS[cell].G, 16, 8
    rng = np.random.default_rng(0)
    W_ih, W_hh = (rng.uniform(-0.5, 0.5, (G * H, n)).astype(np.float32) for n in (I, H))
    b = rng.uniform(-0.5, 0.5, G * H).astype(np.float32)
    found = onnx_peers.low_precision_runners(cell, W_ih, W_hh, b, b, threads=1)
    if not found:
        pytest.skip("no low-precision ONNX peer installed (pip install onnxruntime openvino)")
    x = rng.standard_normal((6, 3, I)).astype(np.float32)
    states = [None] * (2 if cell == "lstm" else 1)
    want = getattr(onnx_peers.reference, cell + "_forward")(
        x.astype(np.float64), *states, W_ih.astype(np.float64), W_hh.astype(np.float64),
        b.astype(np.float64), b.astype(np.float64), training=False)[0]
    for name, run in found.items():
        assert np.abs(run(x) - want).max() < 0.1, name
