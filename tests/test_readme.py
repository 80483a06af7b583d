"""The README's usage examples run as written."""
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_usage_example_runs():
    example = next(b for b in python_blocks() if "rnn_backward(d_out" in b)
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)
    grads = namespace["grads"]
    assert grads.dW_hh.shape == (64, 64) and grads.dx.shape == (100, 8, 32)


def test_the_gated_cell_example_runs_after_the_usage_example():
    blocks = python_blocks()
    usage = next(b for b in blocks if "rnn_backward(d_out" in b)
    gated = next(b for b in blocks if "lstm_backward(d_out" in b)
    namespace = {}
    exec(compile(usage + gated, "README.md", "exec"), namespace)
    grads = namespace["grads"]  # the GRU's, the last one
    assert grads.dW_hh.shape == (3 * 64, 64) and grads.dx.shape == (100, 8, 32)


def test_the_backend_examples_name_real_functions():
    import fastrnn

    for name in re.findall(r"fastrnn\.(\w+)\(", README.read_text()):
        assert hasattr(fastrnn, name), f"README mentions fastrnn.{name}, which does not exist"


def test_the_layer_examples_run():
    blocks = python_blocks()
    layer = next(b for b in blocks if "lstm.backward(" in b)
    namespace = {}
    exec(compile(layer, "README.md", "exec"), namespace)
    assert namespace["lstm"].grads["weight_hh_l1_reverse"].shape == (128, 32)
    pytest.importorskip("torch")
    transfer = next(b for b in blocks if "t_lstm.load_state_dict" in b)
    exec(compile(transfer, "README.md", "exec"), namespace)


def test_the_training_example_runs():
    block = next(b for b in python_blocks() if "opt.step(grads)" in b)
    namespace = {}
    exec(compile("import numpy as np\nimport fastrnn\n" + block, "README.md", "exec"), namespace)
    assert namespace["norm"] > 0


def test_the_pytorch_example_runs():
    pytest.importorskip("torch")
    block = next(b for b in python_blocks() if "fastrnn.torch.convert(model)" in b)
    namespace = {}
    exec(compile(block, "README.md", "exec"), namespace)
    import fastrnn.torch

    assert type(namespace["model"].rnn) is fastrnn.torch.LSTM
    assert namespace["out"].shape == (16, 20, 64) and namespace["out"].grad_fn is None
