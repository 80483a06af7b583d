"""The GRU with the reset before its product (reset_after=False) against
PyTorch's form and against ONNX Runtime's GRU node (linear_before_reset 0
and 1, the same weights), inference and training, fastrnn's two backends:

    python -m benches.gru_reset_before     # needs onnx and onnxruntime

Each figure is the median over 5 interleaved rounds (the order alternating)
of the best call in 0.3 s; the first line of each shape is the largest
difference between ONNX Runtime's output and fastrnn's.
"""

import numpy as np

import fastrnn
from fastrnn._testing import random_problem
from fastrnn._timing import best_within

SHAPES = [(1024, 1, 64), (256, 16, 256), (64, 64, 512)]  # T, B, H with I = H
ROUNDS = 5
# fastrnn's gate blocks (r, z, n) for each of ONNX's (z, r, h)
_ONNX_ORDER = [1, 0, 2]


def onnx_runner(p, linear_before_reset, threads):
    """ONNX Runtime's GRU node with the problem's weights: a call returning (Y, Y_h)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    T, B, I = p["x"].shape  # noqa: E741
    H = p["W_hh"].shape[1]

    def theirs(w):
        return np.concatenate([w[k * H:(k + 1) * H] for k in _ONNX_ORDER])[None]

    weights = {"W": theirs(p["W_ih"]), "R": theirs(p["W_hh"]),
               "B": np.concatenate([theirs(p["b_ih"]), theirs(p["b_hh"])], axis=1)}
    node = helper.make_node("GRU", ["X", "W", "R", "B", "", "h0"], ["Y", "Y_h"], hidden_size=H,
                            linear_before_reset=linear_before_reset)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I]),
         helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, B, H])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(a.astype(np.float32), n) for n, a in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    feeds = {"X": p["x"], "h0": p["h0"][None]}
    return lambda: session.run(None, feeds)


def runners(p):
    """name -> call: fastrnn's two forms in each backend (inference, training)
    and ONNX Runtime's two forms (inference)."""
    d_out = np.ones(p["x"].shape[:2] + (p["W_hh"].shape[1],), np.float32)
    calls = {}
    for backend in ("cython", "numba"):
        for reset_after in (True, False):
            tag = f"{backend}-{'after' if reset_after else 'before'}"

            def inference(backend=backend, reset_after=reset_after):
                fastrnn.gru_forward(**p, reset_after=reset_after, training=False, backend=backend)

            def training(backend=backend, reset_after=reset_after):
                *_, cache = fastrnn.gru_forward(**p, reset_after=reset_after, backend=backend)
                fastrnn.gru_backward(d_out, None, cache)

            calls[tag + "-inference"] = inference
            calls[tag + "-training"] = training
    for lbr in (0, 1):
        calls[f"onnxruntime-lbr{lbr}-inference"] = onnx_runner(p, lbr, fastrnn.get_num_threads())
    return calls


def main():
    for T, B, H in SHAPES:
        p = random_problem(T, B, H, H, np.float32, cell="gru", seed=0)
        calls = runners(p)
        y = calls["onnxruntime-lbr0-inference"]()[0][:, 0]
        ours = fastrnn.gru_forward(**p, reset_after=False, training=False)[0]
        times = {name: [] for name in calls}
        for k in range(ROUNDS):
            for name in (list(calls) if k % 2 == 0 else list(calls)[::-1]):
                times[name].append(best_within(calls[name], 0.3))
        print(f"(T, B, H) = {(T, B, H)}: ONNX Runtime (linear_before_reset=0) against "
              f"fastrnn (reset_after=False), largest difference {np.abs(y - ours).max():.1e}")
        for name, ts in times.items():
            print(f"  {name:32s} {np.median(ts) * 1e3:9.3f} ms")


if __name__ == "__main__":
    main()
