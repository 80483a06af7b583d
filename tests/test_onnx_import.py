"""fastrnn.onnx.layer_from_onnx: a layer from an ONNX model's RNN, LSTM or
GRU node computes what ONNX Runtime computes for that node, and what
fastrnn has no layer for is refused by name."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from fastrnn.onnx import layer_from_onnx  # noqa: E402

T, B, I, H = 7, 3, 5, 4
G = {"RNN": 1, "LSTM": 4, "GRU": 3}


def make_model(op, *, D=1, layout=0, bias=True, states=False, seed=0, extra_inputs=(),
               peepholes=False, **attrs):
    """An ONNX model of one node: X -> Y (and Y_h), random weights as initializers
    (with ``peepholes``, an LSTM's P too)."""
    rng = np.random.default_rng(seed)
    g = G[op]
    weights = {"W": rng.uniform(-0.5, 0.5, (D, g * H, I)),
               "R": rng.uniform(-0.5, 0.5, (D, g * H, H))}
    if bias:
        weights["B"] = rng.uniform(-0.5, 0.5, (D, 2 * g * H))
    if peepholes:
        weights["P"] = rng.uniform(-1, 1, (D, 3 * H))
    weights.update(dict(extra_inputs))
    inputs = ["X", "W", "R", "B" if bias else "", "", "initial_h" if states else ""]
    if op == "LSTM":
        inputs += ["initial_c" if states else "", "P" if "P" in weights else ""]
    while inputs[-1] == "":
        inputs.pop()
    if op == "GRU":
        attrs.setdefault("linear_before_reset", 1)
    attrs.setdefault("direction", "bidirectional" if D == 2 else "forward")
    node = helper.make_node(op, inputs, ["Y", "Y_h"], name="rnn_node", hidden_size=H, layout=layout,
                            **attrs)
    x_shape = [B, T, I] if layout else [T, B, I]
    h_shape = [B, D, H] if layout else [D, B, H]
    graph_inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
    if states:
        graph_inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, h_shape)
                         for n in (["initial_h", "initial_c"] if op == "LSTM" else ["initial_h"])]
    y_shape = [B, T, D, H] if layout else [T, D, B, H]
    graph = helper.make_graph(
        [node], "g", graph_inputs,
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, y_shape),
         helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, h_shape)],
        initializer=[numpy_helper.from_array(a.astype(np.float32), n) for n, a in weights.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


CASES = [("RNN", {}), ("RNN", {"activations": ["Relu"]}), ("LSTM", {}),
         ("LSTM", {"peepholes": True}), ("GRU", {}), ("GRU", {"linear_before_reset": 0})]


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("D", [1, 2])
@pytest.mark.parametrize("op, attrs", CASES)
def test_a_layer_from_an_onnx_node_matches_onnx_runtime(op, attrs, D, layout):
    """ONNX Runtime runs the layout-0 node (it refuses layout 1); the layer
    comes from the node in ``layout`` with the same weights."""
    ort = pytest.importorskip("onnxruntime")
    if "activations" in attrs:
        attrs = {**attrs, "activations": attrs["activations"] * D}
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    feeds = {"X": x, "initial_h": rng.standard_normal((D, B, H)).astype(np.float32)}
    if op == "LSTM":
        feeds["initial_c"] = rng.standard_normal((D, B, H)).astype(np.float32)
    session = ort.InferenceSession(make_model(op, D=D, states=True, **attrs).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    Y, Y_h = session.run(None, feeds)  # (T, D, B, H), (D, B, H)

    layer = layer_from_onnx(make_model(op, D=D, layout=layout, states=True, **attrs),
                            dtype=np.float64).eval()
    assert layer.bidirectional == (D == 2) and layer.batch_first == (layout == 1)
    assert getattr(layer, "peepholes", False) == attrs.get("peepholes", False)
    assert getattr(layer, "reset_after", True) == (attrs.get("linear_before_reset", 1) == 1)
    states = [feeds[k].astype(np.float64) for k in ("initial_h", "initial_c") if k in feeds]
    x64 = x.astype(np.float64)
    out, h_n = layer(x64.transpose(1, 0, 2) if layout else x64,
                     tuple(states) if op == "LSTM" else states[0])
    out = out.transpose(1, 0, 2) if layout else out
    h_n = h_n[0] if op == "LSTM" else h_n
    # ONNX's Y is fastrnn's out with the directions split off
    np.testing.assert_allclose(out, Y.transpose(0, 2, 1, 3).reshape(T, B, D * H), atol=2e-6)
    np.testing.assert_allclose(h_n, Y_h, atol=2e-6)


def test_the_gate_order_is_reordered_to_pytorchs():
    """An LSTM whose ONNX blocks (i, o, f, c) are told apart by their bias."""
    m = make_model("LSTM", extra_inputs={"B": np.repeat([[0.0, 1, 2, 3, 0, 0, 0, 0]], H, axis=1)})
    layer = layer_from_onnx(m)
    # fastrnn's (i, f, g, o) are ONNX's blocks 0, 2, 3, 1
    np.testing.assert_array_equal(layer.state_dict()["bias_ih_l0"],
                                  np.repeat([0.0, 2, 3, 1], H).astype(np.float32))


def test_the_model_can_be_bytes_or_a_path(tmp_path):
    m = make_model("GRU")
    path = tmp_path / "gru.onnx"
    onnx.save(m, str(path))
    ref = layer_from_onnx(m).state_dict()
    for source in (m.SerializeToString(), path, str(path)):
        got = layer_from_onnx(source).state_dict()
        assert all(np.array_equal(got[k], ref[k]) for k in ref)
    assert not layer_from_onnx(make_model("RNN", bias=False)).bias


REFUSED = [
    (dict(op="LSTM", direction="reverse"), "direction='reverse'"),
    (dict(op="LSTM", clip=3.0), "clip"),
    (dict(op="LSTM", input_forget=1), "input_forget"),
    (dict(op="LSTM", activations=["Sigmoid", "Tanh", "Relu"]), "activations"),
    (dict(op="RNN", activations=["Sigmoid"]), "activations"),
    (dict(op="RNN", D=2, activations=["Tanh", "Relu"]), "activations"),
    (dict(op="LSTM", extra_inputs={"P": np.full((1, 2 * H), 0.5)}), "P must have shape"),
]


@pytest.mark.parametrize("kwargs, words", REFUSED)
def test_what_fastrnn_has_no_layer_for_is_refused_by_name(kwargs, words):
    op = kwargs.pop("op")
    with pytest.raises(ValueError, match=words):
        layer_from_onnx(make_model(op, **kwargs))


def test_zero_peepholes_are_no_peepholes():
    m = make_model("LSTM", extra_inputs={"P": np.zeros((1, 3 * H))})
    assert not layer_from_onnx(m).peepholes


def test_the_peephole_order_is_reordered_to_fastrnns():
    """P's blocks (i, o, f), told apart by their values, become weight_ch's (i, f, o)."""
    m = make_model("LSTM", extra_inputs={"P": np.repeat([[1.0, 2, 3]], H, axis=1)})
    layer = layer_from_onnx(m)
    assert layer.peepholes
    np.testing.assert_array_equal(layer.state_dict()["weight_ch_l0"],
                                  np.repeat([1.0, 3, 2], H).astype(np.float32))


def test_finding_the_node():
    m = make_model("GRU")
    assert layer_from_onnx(m, node="rnn_node").hidden_size == H
    with pytest.raises(ValueError, match="no RNN, LSTM or GRU node named 'other'"):
        layer_from_onnx(m, node="other")
    m.graph.node.append(helper.make_node("GRU", ["X", "W", "R"], ["Y2"], name="second",
                                         hidden_size=H, linear_before_reset=1))
    with pytest.raises(ValueError, match="2 RNN, LSTM or GRU nodes"):
        layer_from_onnx(m)
    with pytest.raises(TypeError, match="model must be"):
        layer_from_onnx(42)


def test_weights_that_are_not_initializers_are_refused():
    m = make_model("RNN")
    w = next(t for t in m.graph.initializer if t.name == "W")
    m.graph.initializer.remove(w)
    m.graph.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, [1, H, I]))
    with pytest.raises(ValueError, match="'W'.*not an initializer"):
        layer_from_onnx(m)


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("D", [1, 2])
@pytest.mark.parametrize("op", ["RNN", "LSTM", "LSTM+P", "GRU", "GRU+lbr0"])
def test_a_layer_from_an_onnx_node_matches_onnx_operator_tests(op, D, layout):
    """The expected outputs of ONNX's own operator tests (the NumPy helpers
    of onnx/backend/test/case/node/{rnn,lstm,gru}.py, part of the onnx
    package): no runtime needed, and layout 1 too.  LSTM+P: with peepholes;
    GRU+lbr0: linear_before_reset=0 (ONNX's default, the reset before the product)."""
    op, variant = (op.split("+") + [""])[:2]
    peepholes = variant == "P"
    gru_attrs = {"linear_before_reset": 0 if variant == "lbr0" else 1} if op == "GRU" else {}
    helpers = pytest.importorskip(f"onnx.backend.test.case.node.{op.lower()}")
    helper_class = getattr(helpers, f"{op}Helper" if op != "RNN" else "RNNHelper")
    m = make_model(op, D=D, layout=layout, peepholes=peepholes, **gru_attrs)
    weights = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in m.graph.initializer}
    rng = np.random.default_rng(2)
    x = rng.standard_normal((B, T, I) if layout else (T, B, I))
    h0 = rng.standard_normal((B, D, H) if layout else (D, B, H))
    params = dict(X=x, initial_h=h0, layout=layout,
                  direction="bidirectional" if D == 2 else "forward", **weights)
    params.update(gru_attrs)
    if op == "LSTM":
        params["initial_c"] = np.zeros_like(h0)
    try:
        Y, Y_h = helper_class(**params).step()[:2]
    except (TypeError, KeyError, AssertionError) as exc:  # an older onnx without these options
        pytest.skip(f"this onnx's {op}Helper does not take {sorted(params)}: {exc}")
    layer = layer_from_onnx(m, dtype=np.float64).eval()
    hx = h0.transpose(1, 0, 2) if layout else h0
    out, h_n = layer(x, (hx, np.zeros_like(hx)) if op == "LSTM" else hx)
    h_n = h_n[0] if op == "LSTM" else h_n
    if layout:  # ONNX's Y (B, T, D, H) and Y_h (B, D, H); fastrnn's out (B, T, D*H)
        expected, Y_h = Y.reshape(B, T, D * H), Y_h.transpose(1, 0, 2)
    else:  # Y (T, D, B, H)
        expected = Y.transpose(0, 2, 1, 3).reshape(T, B, D * H)
    np.testing.assert_allclose(out, expected, atol=1e-12)
    np.testing.assert_allclose(h_n, Y_h, atol=1e-12)
