"""Numba compile cost: lazy import, an on-disk cache, and a clean fallback without one.

Each case runs in a fresh interpreter, since what is tested is process state.
"""
import json
import os
import subprocess
import sys

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
                  "hits": sum(rnn_numba.forward.stats.cache_hits.values()),
                  "misses": sum(rnn_numba.forward.stats.cache_misses.values())}))
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
