"""Cold start: what a fresh process pays before its first result.

Every round is a new interpreter (``subprocess.run``), started in an empty
folder so it imports the installed fastrnn as a user would.  The benchmark
value is the wall time of the whole process (interpreter start and exit
included); the child also reports, in ``extra_info``, its own time for
``import fastrnn`` and for the first ``rnn_forward``, and whether
``import fastrnn`` imported numba (it must not: the Numba backend loads on
first use).

Numba's compile cache is pointed at a fresh empty folder for the cold case
(``NUMBA_CACHE_DIR``, one per round) and at a folder filled by an earlier
process for the warm case.
"""
import json
import os
import subprocess
import sys
import time

import pytest

FIRST_CALL = dict(T=16, B=1, H=64, dtype="float32")  # I = H

CHILD = r"""
import json, sys, time
start = time.perf_counter()
import fastrnn
imported = time.perf_counter()
result = {"import_s": imported - start, "numba_imported_by_import": "numba" in sys.modules}
mode = sys.argv[1]
if mode != "import":
    import numpy as np
    T, B, H, dtype = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    rng = np.random.default_rng(0)
    s = 1 / np.sqrt(H)
    x = rng.standard_normal((T, B, H)).astype(dtype)
    W_ih, W_hh = (rng.uniform(-s, s, (H, H)).astype(dtype) for _ in range(2))
    b_ih, b_hh = (rng.uniform(-s, s, H).astype(dtype) for _ in range(2))
    backend = None if mode == "default" else mode
    called = time.perf_counter()
    out, h_n, cache = fastrnn.rnn_forward(x, None, W_ih, W_hh, b_ih, b_hh, backend=backend)
    done = time.perf_counter()
    result.update(first_call_s=done - called, total_s=done - start,
                  backend=backend or fastrnn.get_default_backend(),
                  numba_imported="numba" in sys.modules, finite=bool(np.isfinite(out).all()))
    if "numba" in sys.modules:
        try:  # Numba's own count of cache hits and misses (kernel internals: best effort)
            from fastrnn.kernels import rnn_numba
            stats = rnn_numba.forward.stats
            result.update(numba_cache_hits=sum(stats.cache_hits.values()),
                          numba_cache_misses=sum(stats.cache_misses.values()))
        except Exception:
            pass
print(json.dumps(result))
"""

# (group, case, child arguments, numba cache, what it measures)
IMPORT_GROUP = "coldstart-import"
FIRST_GROUP = "coldstart-first-forward-rnn-{dtype}-T{T}-B{B}-H{H}".format(**FIRST_CALL)
_FIRST = "import fastrnn + first rnn_forward, backend={}"
CASES = [
    (IMPORT_GROUP, "python", ["-c", "pass"], None, "python -c pass (interpreter start-up)"),
    (IMPORT_GROUP, "numpy", ["-c", "import numpy"], None, "import numpy"),
    (IMPORT_GROUP, "fastrnn", ["-c", CHILD, "import"], None, "import fastrnn"),
    (FIRST_GROUP, "numpy", ["-c", CHILD, "numpy"], None, _FIRST.format('"numpy"')),
    (FIRST_GROUP, "cython", ["-c", CHILD, "cython"], None, _FIRST.format('"cython"')),
    (FIRST_GROUP, "numba-cold", ["-c", CHILD, "numba"], "cold",
     _FIRST.format('"numba"') + ", empty NUMBA_CACHE_DIR"),
    (FIRST_GROUP, "numba-warm", ["-c", CHILD, "numba"], "warm",
     _FIRST.format('"numba"') + ", NUMBA_CACHE_DIR filled by an earlier process"),
    (FIRST_GROUP, "default", ["-c", CHILD, "default"], None, _FIRST.format("None (the default)")),
]
ROUNDS = {"quick": {"cold": 1, None: 2, "warm": 2}, "full": {"cold": 2, None: 3, "warm": 3}}


def _command(args):
    if args[-1] in ("numpy", "cython", "numba", "default") and args[1] == CHILD:
        args = args + [str(FIRST_CALL[k]) for k in ("T", "B", "H", "dtype")]
    return [sys.executable, *args]


def _run(command, cwd, env):
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, f"{command[1:3]} failed:\n{proc.stderr[-3000:]}"
    lines = proc.stdout.strip().splitlines()
    return wall, (json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {})


@pytest.fixture(scope="session")
def warm_numba_cache(tmp_path_factory):
    """A NUMBA_CACHE_DIR that one process has already filled."""
    folder = tmp_path_factory.mktemp("numba-warm-cache")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(folder)}
    _run(_command(["-c", CHILD, "numba"]), tmp_path_factory.mktemp("cwd"), env)
    return folder


@pytest.mark.parametrize("group, name, args, numba_cache, measures", CASES,
                         ids=[f"{'import' if c[0] == IMPORT_GROUP else 'first-forward'}-{c[1]}"
                              for c in CASES])
def test_coldstart(group, name, args, numba_cache, measures, benchmark, request, tmp_path):
    import fastrnn

    backend = args[-1] if args[-1] in ("numpy", "cython", "numba") else None
    if backend is not None:
        reason = fastrnn.unavailable_backends().get(backend)
        if reason:
            pytest.skip(f"backend {backend} unavailable: {reason}")
    warm_dir = request.getfixturevalue("warm_numba_cache") if numba_cache == "warm" else None
    command = _command(args)
    base_env = dict(os.environ)
    rounds_made = []

    def setup():
        env = dict(base_env)
        if numba_cache == "cold":
            folder = tmp_path / f"numba-cache-{len(rounds_made)}"
            folder.mkdir()
            env["NUMBA_CACHE_DIR"] = str(folder)
        elif numba_cache == "warm":
            env["NUMBA_CACHE_DIR"] = str(warm_dir)
        return (env,), {}

    def child(env):
        rounds_made.append(_run(command, tmp_path, env))

    grid_name = request.config.getoption("bench_grid")
    rounds = ROUNDS[grid_name][numba_cache]
    benchmark.group = group
    benchmark.pedantic(child, setup=setup, rounds=rounds, iterations=1)

    reports = [r for _, r in rounds_made]
    info = benchmark.extra_info
    info.update(kind="coldstart", case=name, numba_cache=numba_cache, rounds=len(rounds_made),
                wall_s=[w for w, _ in rounds_made], measures=measures)
    if group == FIRST_GROUP:
        info.update(call="rnn_forward(x (T, B, I), None, W_ih, W_hh, b_ih, b_hh), training=True",
                    **FIRST_CALL, I=FIRST_CALL["H"])
    for key in ("import_s", "first_call_s", "total_s", "numba_cache_hits", "numba_cache_misses"):
        if any(key in r for r in reports):
            info[key] = [r.get(key) for r in reports]
    for key in ("backend", "numba_imported_by_import", "numba_imported", "finite"):
        if any(key in r for r in reports):
            info[key] = reports[-1].get(key)
    if "numba_imported_by_import" in info:
        assert not info["numba_imported_by_import"], "import fastrnn imported numba"
    if "finite" in info:
        assert info["finite"], "the first forward returned non-finite values"
    if numba_cache == "cold" and "numba_cache_hits" in info:
        assert not any(info["numba_cache_hits"]), "the cold case found a filled Numba cache"
    if numba_cache == "warm" and "numba_cache_misses" in info:
        assert not any(info["numba_cache_misses"]), "the warm case compiled instead of loading"
