"""The Cython backend's recurrent engine (kernels/_engine.pxi, kernels/engine.h):
shapes that stress its blocking (units per panel, rows per tile, k blocks,
chunks of steps), threads taking each other's items, inference keeping only
a chunk of steps, and several Python threads at once (Ctrl-C: test_interrupt.py)."""
import threading

import numpy as np
import pytest

import fastrnn
from fastrnn import _tuning
from fastrnn import reference as R
from fastrnn._spec import CELLS
from fastrnn._testing import (as_float64, assert_close, backward, engine_layout, forward,
                              random_problem, random_upstream)
from conftest import backend_or_skip


@pytest.fixture(autouse=True)
def cython():
    backend_or_skip("cython")


@pytest.fixture(params=[(1, -1), (3, 0), (3, 1)], ids=["1-thread", "3-threads", "3-batch-shares"])
def threads(request):
    """One engine thread, or three (more than the cores: items change hands)
    sharing each step's units, or three each taking a share of the batch's
    rows (the forward's split, forced wherever B gives each a row)."""
    n, split = request.param
    with engine_layout(n, split):
        yield n


# Sequences of more than 4 steps and more than 64 rows (T*B) run on packed
# weights; shorter ones take BLAS's products (kernels/_engine.pxi).  The
# tests of the packed path use at least this many rows.
PACKED_ROWS = 65


def check(cell, T, B, I, H, dtype, lengths=None, **kwargs):  # noqa: E741
    p = random_problem(T, B, I, H, dtype, cell=cell, lengths=lengths, seed=T * 1000 + B * 10 + H)
    outs, cache = forward(cell, p, "cython", **kwargs)
    ref, ref_cache = forward(cell, as_float64(p), **kwargs)
    for name in outs:
        assert_close(outs[name], ref[name], dtype, name)
    ups = random_upstream(cell, T, B, H, dtype)
    grads = backward(cell, ups, cache)
    ref_grads = backward(cell, as_float64(ups), ref_cache, R)
    for name in grads:
        assert_close(grads[name], ref_grads[name], dtype, name)
    inference, none = forward(cell, p, "cython", training=False, **kwargs)
    assert none is None
    for name in outs:
        np.testing.assert_array_equal(inference[name], outs[name], err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("H", [1, 7, 9, 33, 255, 257])
def test_hidden_sizes(cell, H, threads, dtype):
    """H not a multiple of the units per panel or of the vector width."""
    check(cell, 6, 11, 6, H, dtype)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("B", [1, 2, 3, 5, 17, 63, 65])
def test_batch_sizes(cell, B, threads):
    """B not a multiple of the rows per tile, and above the 64 rows of a block."""
    check(cell, max(5, PACKED_ROWS // B), B, 5, 19, np.float32)


@pytest.mark.parametrize("cell", CELLS)
def test_large_hidden_size(cell, threads):
    """H = 1000: several blocks of k per panel."""
    check(cell, 5, 13, 300, 1000, np.float32)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("lengths", ["zeros", "all-different"])
def test_lengths(cell, lengths, threads, dtype):
    B = 17
    steps = [0] * B if lengths == "zeros" else list(np.random.default_rng(0).permutation(B))
    steps[-1] = 0
    check(cell, B, B, 4, 21, dtype, lengths=steps)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("T, B, H", [(1, 1, 1), (1, 3, 7), (4, 17, 33), (1, 5, 257), (60, 1, 9)])
def test_short_sequences_without_packing(cell, T, B, H, threads, dtype):
    """Few steps or few rows take BLAS's products instead of packing the weights."""
    check(cell, T, B, 6, H, dtype)
    check(cell, T, B, 6, H, dtype, lengths=[0] * (B - 1) + [T])


@pytest.mark.parametrize("cell", CELLS)
def test_long_sequence_in_chunks(cell, threads):
    """T far beyond one chunk of steps: inference keeps a ring of a chunk's
    gates, the training forward all of them; both give the same output.  The
    backward keeps a chunk of da and adds each chunk's weight gradients to
    the later chunks' (sequences ending inside a chunk and on its edges)."""
    B = 16
    T = 5 * _tuning.CHUNK_ROWS // B + 3
    ring = _tuning.workspace_steps("cython", T, B)
    assert _tuning.kept_steps("cython", False, T, B) < T
    assert T // ring >= 2
    check(cell, T, B, 3, 10, np.float32,
          lengths=[T, T - 1, 0, T // 2, ring, ring - 1, ring + 1, 2 * ring] * 2)


@pytest.mark.parametrize("cell", CELLS)
def test_short_wide_backward_in_chunks(cell, threads, dtype):
    """A few steps of many rows (BLAS's products) with a backward chunk of one step."""
    T, B = 3, _tuning.BACKWARD_CHUNK_ROWS + 5
    assert _tuning.workspace_steps("cython", T, B) == 1
    check(cell, T, B, 4, 9, dtype, lengths=[3, 2, 1, 0] * (B // 4) + [3] * (B % 4))


@pytest.mark.parametrize("cell", CELLS)
def test_python_threads_at_once(cell):
    """Several Python threads calling the engine at once get the serial answers."""
    problems = [random_problem(30, 8, 16, 40, np.float32, cell=cell, seed=s) for s in range(4)]
    expected = [forward(cell, p, "cython")[0] for p in problems]
    results = [None] * 8

    def run(i):
        results[i] = forward(cell, problems[i % 4], "cython")[0]

    workers = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for i, got in enumerate(results):
        for name, value in expected[i % 4].items():
            np.testing.assert_array_equal(got[name], value, err_msg=name)
