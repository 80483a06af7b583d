"""ONNX Runtime and OpenVINO (oneDNN's RNN primitives) as peers of fastrnn's
inference: one ONNX RNN / LSTM / GRU node built from PyTorch-layout weights,
in float32 and at the lower precisions each offers (``low_precision_runners``:
OpenVINO in bf16, its own choice on CPUs with AVX512_BF16; ONNX Runtime's
dynamically quantized LSTM, int8 weights and activations).

ONNX orders the gates differently (LSTM i, o, f, c against PyTorch's
i, f, g, o; GRU z, r, h against r, z, n), and its GRU matches PyTorch's
only with linear_before_reset=1.  ``check`` holds each runner to
fastrnn's reference before it is timed.  Optional: without onnx and a
runtime, ``runners`` returns nothing.
"""
import numpy as np

from fastrnn import reference

# Rows of PyTorch's stacked weights, in ONNX's gate order.
ONNX_GATES = {"rnn": [0], "lstm": [0, 3, 1, 2], "gru": [1, 0, 2]}
OP = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


def _reorder(w, cell, H):
    return np.concatenate([w[k * H:(k + 1) * H] for k in ONNX_GATES[cell]])


def model(cell, W_ih, W_hh, b_ih, b_hh):
    """Serialized ONNX model: X (T, B, I) -> Y (T, 1, B, H), weights as initializers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    H, I = W_hh.shape[1], W_ih.shape[1]
    W = _reorder(W_ih, cell, H)[None]
    R = _reorder(W_hh, cell, H)[None]
    Bias = np.concatenate([_reorder(b_ih, cell, H), _reorder(b_hh, cell, H)])[None]
    attrs = {"hidden_size": H}
    if cell == "gru":
        attrs["linear_before_reset"] = 1
    node = helper.make_node(OP[cell], ["X", "W", "R", "B"], ["Y"], **attrs)
    graph = helper.make_graph(
        [node], f"fastrnn_peer_{cell}",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "N", I])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", 1, "N", H])],
        initializer=[numpy_helper.from_array(a.astype(np.float32), name)
                     for name, a in (("W", W), ("R", R), ("B", Bias))])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(m)
    return m.SerializeToString()


def onnxruntime_runner(onnx_bytes, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"X": x})[0][:, 0]


def openvino_runner(onnx_bytes, threads, precision="f32"):
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(onnx_bytes, b""), "CPU",
                                  {"INFERENCE_NUM_THREADS": threads,
                                   "INFERENCE_PRECISION_HINT": precision})
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x})[0][:, 0]


def cpu_has_vnni():
    """Whether this CPU has AVX512_VNNI or AVX-VNNI (Linux's /proc/cpuinfo;
    True where it cannot tell)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line.split() for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        return True
    return "avx512_vnni" in flags or "avx_vnni" in flags


def onnxruntime_int8_reduce_range():
    """The ``reduce_range`` ONNX Runtime's int8 peer quantizes with: True (7-bit
    weights) on a CPU without VNNI, as ONNX Runtime's documentation advises
    there.  Its int8 products then run on vpmaddubsw, whose 16-bit sums
    saturate with 8-bit weights: on an AMD EPYC (Zen 3, AVX2 only) its
    default quantization gave an LSTM's outputs errors of 0.10-0.48 against
    float64 (H = 16, 64, 256, T = 32, B = 3; PyTorch's initialisation at
    256), 7-bit weights 1.0-1.4e-2."""
    return not cpu_has_vnni()


def onnxruntime_int8_facts(cells):
    """How the int8 peer quantized, for a benchmark's facts: a line where it
    runs (an LSTM among ``cells``, ONNX Runtime installed), none otherwise."""
    from importlib.util import find_spec

    if "lstm" not in cells or find_spec("onnxruntime") is None:
        return []
    if onnxruntime_int8_reduce_range():
        return ["ONNX Runtime int8: quantize_dynamic(weight_type=QInt8, reduce_range=True): "
                "7-bit weights, as its documentation advises on a CPU without VNNI, where its "
                "default's 16-bit sums saturate (benches/onnx_peers.py)."]
    return ["ONNX Runtime int8: quantize_dynamic(weight_type=QInt8), its default."]


def onnxruntime_int8_runner(onnx_bytes, threads):
    """ONNX Runtime's dynamic quantization (quantize_dynamic: int8 weights,
    activations quantized per call), which turns an LSTM node into its
    DynamicQuantizeLSTM; 7-bit weights where the CPU lacks VNNI
    (onnxruntime_int8_reduce_range)."""
    import logging
    import os
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as folder:
        src, dst = os.path.join(folder, "f32.onnx"), os.path.join(folder, "int8.onnx")
        with open(src, "wb") as f:
            f.write(onnx_bytes)
        root = logging.getLogger()
        level, _ = root.level, root.setLevel(logging.ERROR)  # its advice on pre-processing
        try:
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=["LSTM"],
                             reduce_range=onnxruntime_int8_reduce_range())
        finally:
            root.setLevel(level)
        with open(dst, "rb") as f:
            quantized = f.read()
    return onnxruntime_runner(quantized, threads)


def runners(cell, W_ih, W_hh, b_ih, b_hh, threads):
    """{peer name: run(x) -> out (T, B, H)} for the peers installed here."""
    try:
        onnx_bytes = model(cell, W_ih, W_hh, b_ih, b_hh)
    except ImportError:
        return {}
    found = {}
    for name, make in (("onnxruntime", onnxruntime_runner), ("openvino", openvino_runner)):
        try:
            found[name] = make(onnx_bytes, threads)
        except ImportError:
            pass
    return found


def low_precision_runners(cell, W_ih, W_hh, b_ih, b_hh, threads):
    """{peer name: run(x)} below float32, for the peers installed here:
    "openvino bf16" (every cell) and "onnxruntime int8" (the LSTM)."""
    try:
        onnx_bytes = model(cell, W_ih, W_hh, b_ih, b_hh)
    except ImportError:
        return {}
    found = {}
    try:
        found["openvino bf16"] = openvino_runner(onnx_bytes, threads, "bf16")
    except ImportError:
        pass
    if cell == "lstm":
        try:
            found["onnxruntime int8"] = onnxruntime_int8_runner(onnx_bytes, threads)
        except ImportError:
            pass
    return found


def check(run, cell, W_ih, W_hh, b_ih, b_hh, T=5, B=3):
    """Raise AssertionError unless ``run`` matches fastrnn's reference in float32."""
    x = np.random.default_rng(1).standard_normal((T, B, W_ih.shape[1])).astype(np.float32)
    states = [None] * (2 if cell == "lstm" else 1)
    expected = getattr(reference, cell + "_forward")(
        x.astype(np.float64), *states, W_ih.astype(np.float64), W_hh.astype(np.float64),
        b_ih.astype(np.float64), b_hh.astype(np.float64), training=False)[0]
    np.testing.assert_allclose(run(x), expected, rtol=1e-4, atol=1e-4)
