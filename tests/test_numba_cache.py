"""Numba compile cost: lazy import, an on-disk cache, and a clean fallback without one.

Each case runs in a fresh interpreter, since what is tested is process state.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("numba")

RUN_FORWARD = """
import json, sys, numpy as np
import fastrnn
out, h_n, cache = fastrnn.rnn_forward(np.ones((3, 2, 4)), None, np.full((5, 4), 0.1),
                                      np.full((5, 5), 0.1), backend="numba")
ref = fastrnn.reference.rnn_forward(np.ones((3, 2, 4)), None, np.full((5, 4), 0.1),
                                    np.full((5, 5), 0.1))[0]
from fastrnn.kernels import rnn_numba
print(json.dumps({"err": float(abs(out - ref).max()),
                  "hits": sum(rnn_numba.forward_steps.stats.cache_hits.values()),
                  "misses": sum(rnn_numba.forward_steps.stats.cache_misses.values())}))
"""


def run(code, **env):
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_import_does_not_import_numba():
    code = "import sys, fastrnn; print('numba' in sys.modules)"
    assert run(code).strip() == "False"


def test_compiled_code_is_cached_on_disk(tmp_path):
    cold = json.loads(run(RUN_FORWARD, NUMBA_CACHE_DIR=str(tmp_path)))
    assert cold["err"] < 1e-12 and cold["misses"] >= 1 and cold["hits"] == 0
    assert any(p.suffix == ".nbi" for p in tmp_path.rglob("*")), "no cache index written"
    warm = json.loads(run(RUN_FORWARD, NUMBA_CACHE_DIR=str(tmp_path)))
    assert warm["err"] < 1e-12 and warm["hits"] >= 1 and warm["misses"] == 0


def test_no_writable_cache_location_falls_back_to_memory():
    """What a read-only install without NUMBA_CACHE_DIR looks like to Numba: no locator."""
    code = ("import numba.core.caching as c; c.CacheImpl._locator_classes = []\n" + RUN_FORWARD)
    result = json.loads(run(code))
    assert result["err"] < 1e-12 and result["hits"] == 0


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_unreadable_cache_files_are_a_miss_not_an_error(tmp_path, damage):
    """Cache files that cannot be unpickled (a crashed write, a disk error, a
    user's edit): the kernel compiles again, writes a sound cache, and the
    next process reads it."""
    run(RUN_FORWARD, NUMBA_CACHE_DIR=str(tmp_path))
    files = [p for p in tmp_path.rglob("*") if p.suffix in (".nbi", ".nbc")]
    assert files
    for p in files:
        data = p.read_bytes()
        p.write_bytes({"truncated": data[:len(data) // 2], "garbage": b"\x80\x04not a pickle",
                       "empty": b""}[damage])
    again = json.loads(run(RUN_FORWARD, NUMBA_CACHE_DIR=str(tmp_path)))
    assert again["err"] < 1e-12 and again["hits"] == 0
    warm = json.loads(run(RUN_FORWARD, NUMBA_CACHE_DIR=str(tmp_path)))
    assert warm["err"] < 1e-12 and warm["hits"] >= 1 and warm["misses"] == 0


def test_an_edit_of_the_shared_helpers_makes_the_cells_kernels_stale(tmp_path):
    """A cell's cached kernel holds what it inlined from _numba_util.py
    (fast_tanh here): an edit there must recompile it, although the cell's
    own file did not change (Numba alone looks at that file only)."""
    import fastrnn.kernels
    src = os.path.dirname(fastrnn.kernels.__file__)
    pkg = tmp_path / "copied_kernels"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("_numba_util.py", "rnn_numba.py"):
        (pkg / name).write_text(open(os.path.join(src, name)).read())
    code = """
import json, sys, numpy as np
sys.path.insert(0, sys.argv[1])
from copied_kernels import rnn_numba as k
f = np.float32
x2d, W = np.full((1, 1), 3, f), np.ones((1, 1), f)
out, h_n = np.empty((1, 1, 1), f), np.empty((1, 1), f)
k.forward(x2d, W, np.zeros(1, f), np.zeros((1, 1), f), np.zeros((1, 1), f),
          np.ones(1, np.int64), False, False, False, 1, np.empty((1, 1), f), out, h_n)
print(json.dumps({"h": float(out[0, 0, 0]),
                  "misses": sum(k.forward_steps.stats.cache_misses.values())}))
"""
    def tanh_of_3():
        result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                                text=True, env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)},
                                timeout=300)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    first = tanh_of_3()
    assert abs(first["h"] - np.tanh(3)) < 1e-6 and first["misses"] >= 1
    assert tanh_of_3() == {**first, "misses": 0}  # cached
    helpers = pkg / "_numba_util.py"
    text = helpers.read_text()
    clamp = "_CLAMP = np.float32(7.90531110763549805)"
    assert clamp in text
    helpers.write_text(text.replace(clamp, "_CLAMP = np.float32(1.0)"))  # tanh(3) -> tanh(1)
    edited = tanh_of_3()
    assert abs(edited["h"] - np.tanh(1)) < 1e-6 and edited["misses"] >= 1
