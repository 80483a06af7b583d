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
