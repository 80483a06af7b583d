"""``python -m fastrnn``: every pool listed, and a busy machine reported as busy."""
import subprocess
import sys
import time

import pytest

import fastrnn
from fastrnn import __main__ as main
from fastrnn._timing import Load, interleaved_times, steady


def test_lists_every_pool_the_kernels_use_and_agrees():
    result = subprocess.run([sys.executable, "-m", "fastrnn", "--no-speed"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "all backends agree with the reference" in out
    if "cython" in fastrnn.available_backends():
        assert "bfloat16 compute" in out and "FAIL" not in out
    pools = out[out.index("threads:"):]
    assert "numpy  blas" in pools  # numpy's own OpenBLAS
    if "cython" in fastrnn.available_backends():
        from fastrnn.kernels._build import build_info

        assert "scipy  blas" in pools  # SciPy's, which the Cython kernels call
        if build_info()["openmp"]:
            assert "openmp" in pools  # the engine's team, loaded by the check before the list


def test_steady_wants_the_best_seen_twice():
    assert steady([1.0, 1.1, 5.0])
    assert not steady([1.0, 2.0, 2.1])
    assert not steady([1.0])
    calls = []
    times = interleaved_times({"a": lambda: calls.append("a") or 1.0,
                               "b": lambda: calls.append("b") or 2.0}, 2, warm_up=False)
    assert times == {"a": [1.0, 1.0], "b": [2.0, 2.0]}
    assert calls == ["a", "b", "b", "a"]  # a different one first each round


def _spin(seconds):
    return subprocess.Popen([sys.executable, "-c",
                             f"import time\nend = time.time() + {seconds}\n"
                             "while time.time() < end: pass"])


@pytest.mark.skipif(Load().other_cores() is None, reason="no /proc/stat: load unknown")
def test_a_busy_core_makes_the_table_say_unreliable(monkeypatch, capsys):
    monkeypatch.setattr(main, "SPEED_SHAPES", [(16, 1, 16)])
    monkeypatch.setattr(main, "CELLS", {"rnn": fastrnn._spec.CELLS["rnn"]})
    hog = _spin(60)
    try:
        time.sleep(0.3)
        main.report_noise(*main.speed_table(["numpy", *fastrnn.available_backends()[:1]], 3))
    finally:
        hog.kill()
    out = capsys.readouterr().out
    assert "TIMINGS UNRELIABLE" in out and "* other processes busy" in out, out
    assert "- other processes busy: they kept" in out and "--threads 1" in out


def test_the_verdict_names_each_reason_and_what_to_do(capsys):
    assert main.report_noise(0.01, 1.05, [], 0)
    out = capsys.readouterr().out
    assert out.startswith("timings: reliable") and "0.01 of" in out
    assert main.report_noise(0.01, 1.05, [], 2)
    assert "2 timings of a row repeated" in capsys.readouterr().out
    assert not main.report_noise(0.01, 1.6, [["changed"]] * 2, 3)
    out = capsys.readouterr().out
    assert out.startswith("TIMINGS UNRELIABLE in 2 rows") and "- machine's speed changed" in out
    assert "at worst 60%" in out and "other processes busy" not in out
    assert not main.report_noise(1.0, 1.1, [["busy"]] * 4 + [["busy", "unsteady"]], 6)
    out = capsys.readouterr().out
    assert "in 5 rows" in out and "- other processes busy" in out and "- unsteady" in out
