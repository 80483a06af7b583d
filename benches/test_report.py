"""The report tool on a synthetic run whose answers are known, and once on a real tiny run.

Not benchmarks: ``--benchmark-only`` skips them, ``--benchmark-disable`` (CI) runs them.
"""
import json
import os
import subprocess
import sys

import pytest

from benches import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# time(T) = overhead + T * per_step, seconds, for every (pass, B, H, backend)
MODEL = {"numpy": (20e-6, 8e-6), "numba": (5e-6, 1e-6), "cython": (4e-6, 1e-6),
         "torch": (40e-6, 4e-6)}
SHAPES = [(1, 64), (64, 1024)]
TS = [16, 256, 4096]
GEMM_GFLOPS = 10000.0  # above every case of MODEL: shares under 100%


def _entry(group, name, extra, time_s, rounds=5):
    return {"group": group, "name": name, "fullname": f"benches/x.py::{name}", "params": None,
            "param": None, "extra_info": extra, "options": {},
            "stats": {"min": time_s, "max": time_s * 1.1, "mean": time_s * 1.05,
                      "stddev": 0.0, "rounds": rounds, "median": time_s, "iqr": 0.0, "q1": time_s,
                      "q3": time_s, "iqr_outliers": 0, "stddev_outliers": 0, "outliers": "0;0",
                      "ld15iqr": time_s, "hd15iqr": time_s, "ops": 1 / time_s,
                      "total": time_s * rounds, "iterations": 1}}


def synthetic_run(drop=(), model=MODEL, gemm_gflops=GEMM_GFLOPS):
    """A pytest-benchmark JSON as the suite writes it, from ``model`` (cases in
    ``drop`` left out), with a GEMM calibration of ``gemm_gflops``."""
    benchmarks = []
    for pass_ in ("inference", "training"):
        scale = 3 if pass_ == "training" else 1
        for B, H in SHAPES:
            for T in TS:
                for backend, (overhead, per_step) in model.items():
                    if (backend, B, T) in drop:
                        continue
                    group = f"rnn-{pass_}-float32-T{T}-B{B}-H{H}"
                    time_s = scale * B * (overhead + T * per_step)
                    if backend == "cython" and T == 4096 and B == 1:
                        time_s *= 1.25  # throughput falls at long T: 0.8 of the best
                    extra = {"kind": "throughput", "cell": "rnn", "pass_": pass_, "backend": backend,
                             "threads": 2, "dtype": "float32", "T": T, "B": B, "I": H, "H": H,
                             "flop": 2 * T * B * 2 * H * H * scale, "max_rel_err": 1e-7,
                             "err_T": min(T, 64), "probe_us": [50.0, 51.0]}
                    if (pass_, backend, B, T) == ("training", "torch", 64, 256):
                        extra["probe_us"] = [50.0, 90.0]  # timed in a slow window
                    benchmarks.append(_entry(group, f"test_throughput[{group}-{backend}]", extra,
                                             time_s))
    flop = 2 * 2048 ** 3
    benchmarks.append(_entry("gemm-float32-2048", "test_gemm[float32]",
                             {"kind": "gemm", "dtype": "float32", "threads": 2, "N": 2048,
                              "flop": flop}, flop / gemm_gflops / 1e9))
    benchmarks.append(_entry("coldstart-import", "test_coldstart[import-fastrnn]",
                             {"kind": "coldstart", "case": "fastrnn", "measures": "import fastrnn",
                              "import_s": [0.12, 0.11], "numba_imported_by_import": False},
                             0.2, rounds=2))
    benchmarks.append(_entry("coldstart-first-forward", "test_coldstart[first-forward-numba-cold]",
                             {"kind": "coldstart", "case": "numba-cold", "backend": "numba",
                              "import_s": [0.1], "first_call_s": [4.5],
                              "numba_imported_by_import": False}, 4.8, rounds=1))
    return {"machine_info": {"cpu": {"brand_raw": "Test CPU"}, "python_version": "3.x",
                             "fastrnn": {"cpu_count": 2, "versions": {"fastrnn": "0.1.0"},
                                         "env": {"OPENBLAS_CORETYPE": None},
                                         "load": {"wall_s": 10.0, "own_cores": 1.0,
                                                  "other_cores": 0.0}}},
            "commit_info": {}, "benchmarks": benchmarks, "datetime": "2025-01-01T00:00:00",
            "version": "5.2.3"}


def _write(tmp_path, run, name="run.json"):
    path = tmp_path / name
    path.write_text(json.dumps(run))
    return str(path)


def test_fit_recovers_overhead_and_per_step():
    rows = report.throughput_rows(synthetic_run())
    by_key = {f.key: f for f in report.fits(rows)}
    fit = by_key[("rnn", "inference", "float32", 64, 1024, "numba")]
    assert fit.n == 3
    assert fit.overhead_us == pytest.approx(64 * 5, rel=1e-6)
    assert fit.per_step_us == pytest.approx(64 * 1, rel=1e-6)
    assert fit.max_residual < 1e-9
    training = by_key[("rnn", "training", "float32", 1, 64, "numpy")]
    assert training.overhead_us == pytest.approx(60, rel=1e-6)
    assert training.per_step_us == pytest.approx(24, rel=1e-6)


def test_fit_line_weights_short_T():
    # 1 us of overhead must survive a 1% error at the longest T.
    a, b, _ = report.fit_line([16, 256, 4096], [1 + 16 * 0.5, 1 + 256 * 0.5, (1 + 4096 * 0.5) * 1.01])
    assert 0 < a < 2 and b == pytest.approx(0.5, rel=0.02)


def test_report_tables(tmp_path):
    run = synthetic_run(drop={("numpy", 64, 4096)})
    markdown, written = report.make_report(run, "run.json", str(tmp_path), want_plot=False)
    assert written == [str(tmp_path / "report.md")]
    assert (tmp_path / "report.md").read_text() == markdown
    # speed-ups at (1, 64), T=16, inference: rates are T*B / time
    numpy_t, numba_t, torch_t = (MODEL[b][0] + 16 * MODEL[b][1] for b in ("numpy", "numba", "torch"))
    line = next(l for l in markdown.splitlines() if l.startswith("| 1 | 64 | 16 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    header = next(l for l in markdown.splitlines() if l.startswith("| B | H | T |"))
    names = [c.strip() for c in header.strip("|").split("|")]
    col = dict(zip(names, cells))
    assert col["numba"] == report.fmt_rate(16 / numba_t)
    assert col["numba vs ref"] == report.fmt_ratio(numpy_t / numba_t)
    assert col["numba vs torch"] == report.fmt_ratio(torch_t / numba_t)
    # a capped reference shows as missing, not as zero
    line = next(l for l in markdown.splitlines() if l.startswith("| 64 | 1024 | 4096 |"))
    assert "—" in line
    # GEMM: the rate and, at (64, 1024), each case's share of it
    assert f"**{GEMM_GFLOPS:.1f} GFLOP/s**" in markdown
    r = next(r for r in report.throughput_rows(run)
             if (r.backend, r.pass_, r.B, r.T) == ("numba", "inference", 64, 4096))
    assert f"{r.gflops / GEMM_GFLOPS:.0%} ({r.gflops:.3g})" in markdown
    # flatness: cython at (1, 64) slows by 1.25 at T=4096, against its best (T=256)
    flat = [l for l in markdown.splitlines() if l.startswith("| rnn | inference | float32 | 1 | 64 |")]
    cython = next(l for l in flat if "| cython |" in l and "4096" in l)
    ratio = (4096 / (1.25 * (4e-6 + 4096e-6))) / (256 / (4e-6 + 256e-6))
    assert f"| 256 | {report.fmt_rate(256 / 260e-6)} | {ratio:.2f} | **no** |" in cython
    numba = next(l for l in flat if "| numba |" in l and "4096" in l)
    assert "| yes |" in numba
    # cold start
    assert "| coldstart-first-forward | numba-cold |" in markdown and "4.500" in markdown
    # the one case timed in a slow window is named
    assert f"1 of {len(report.throughput_rows(run))} cases saw the probe over" in markdown
    assert "| rnn | training | float32 | 64 | 1024 | 256 | torch | 1.00x / 1.80x |" in markdown


def test_plot_written(tmp_path):
    pytest.importorskip("matplotlib")
    markdown, written = report.make_report(synthetic_run(), "run.json", str(tmp_path))
    png = tmp_path / "throughput.png"
    assert str(png) in written and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "throughput.png" in markdown


def test_plot_skipped_without_matplotlib(tmp_path, monkeypatch, capsys):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    path = _write(tmp_path, synthetic_run())
    assert report.main([path, "--out", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    assert "Plot skipped: matplotlib is not installed" in out and report.PLOT_HINT in out
    assert report.PLOT_HINT in err
    assert not (tmp_path / "out" / "throughput.png").exists()
    assert (tmp_path / "out" / "report.md").exists()


def test_finds_a_saved_run(tmp_path, monkeypatch):
    saved = tmp_path / ".benchmarks" / "Linux-CPython-3.11-64bit"
    saved.mkdir(parents=True)
    (saved / "0003_baseline.json").write_text(json.dumps(synthetic_run()))
    monkeypatch.chdir(tmp_path)
    expected = os.path.join(".benchmarks", "Linux-CPython-3.11-64bit", "0003_baseline.json")
    assert report.find_run("baseline") == expected
    assert report.find_run("0003") == expected
    with pytest.raises(SystemExit, match="no run"):
        report.find_run("nothing")


def test_real_run_end_to_end(tmp_path):
    """A tiny real run of the suite (one shape, the GEMM) goes through the report."""
    out = tmp_path / "run.json"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           os.path.join(REPO, "benches", "test_throughput.py"), "--benchmark-only",
           "--bench-cells=rnn", "-k", "T16-B1-H64 and (numpy or cython) or gemm", "--bench-time=0.02",
           f"--benchmark-json={out}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = json.loads(out.read_text())
    kinds = {b["extra_info"]["kind"] for b in run["benchmarks"]}
    assert kinds == {"throughput", "gemm"}
    for b in run["benchmarks"]:
        if b["extra_info"]["kind"] == "throughput":
            e = b["extra_info"]
            assert b["group"] == f"rnn-{e['pass_']}-float32-T16-B1-H64"
            assert e["steps_per_s"] == pytest.approx(16 / b["stats"]["min"])
            if e["compute_dtype"] == "bfloat16":  # cython-bf16 too
                assert e["max_rel_err"] < 3e-2 and e["err_T"] == 16
            else:
                assert e["max_abs_err"] < 1e-4 and e["err_T"] == 16
    markdown, _ = report.make_report(run, str(out), str(tmp_path / "report"), want_plot=False)
    assert "### rnn, inference, float32" in markdown and "GFLOP/s" in markdown


def test_impossible_values_are_marked_as_noise(tmp_path, capsys):
    # numba's times lie on a line with a negative intercept; the GEMM calibration
    # is slower than the cases at (64, 1024): both are noise, not results.
    model = {**MODEL, "numba": (-10e-6, 1e-6)}
    markdown, _ = report.make_report(synthetic_run(model=model, gemm_gflops=1.0), "run.json",
                                     str(tmp_path), want_plot=False)
    fit_lines = [l for l in markdown.splitlines() if l.startswith("| rnn |") and "| numba |" in l
                 and "| 3 |" in l]
    assert fit_lines and all("| noise |" in l for l in fit_lines)
    assert "-1e" not in markdown and "| -" not in markdown
    assert "noise: a negative overhead or per-step cost" in markdown
    gemm = markdown[markdown.index("## GEMM calibration"):].split("\n## ")[0]
    assert "noise (" in gemm and "%" not in gemm.split("| T=16 |")[1].split("noise:")[0]
    assert "noise: over 100% of the GEMM rate" in gemm
    # The terminal gets the facts and the notes, not the tables.
    assert report.main([_write(tmp_path, synthetic_run(model=model, gemm_gflops=1.0)),
                        "--out", str(tmp_path / "out"), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "noise: a negative overhead" in out and "noise: over 100%" in out
    assert "|" not in out and "Load:" in out


def test_print_echoes_the_whole_report(tmp_path, capsys):
    assert report.main([_write(tmp_path, synthetic_run()), "--out", str(tmp_path / "out"),
                        "--no-plot", "--print"]) == 0
    assert capsys.readouterr().out.strip() == (tmp_path / "out" / "report.md").read_text().strip()


def test_each_table_names_pytorchs_module_of_its_cell(tmp_path):
    run = synthetic_run()
    for b in run["benchmarks"]:
        if b["extra_info"].get("kind") == "throughput" and "training" in b["group"]:
            b["extra_info"]["cell"] = "lstm"
    markdown, _ = report.make_report(run, "run.json", str(tmp_path), want_plot=False)
    assert "### lstm, training, float32, threads 2; torch: nn.LSTM" in markdown
    assert "### rnn, inference, float32, threads 2; torch: nn.RNN" in markdown
    assert "nn.RNN with the same weights" not in markdown
