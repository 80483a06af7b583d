"""benches/lstm_proj.py: a tiny run, so that the script cannot rot."""
import pytest

pytest.importorskip("torch")


def test_lstm_proj_runs_every_contender(capsys):
    """--quick with both backends: a time and an error for every contender in
    both modes (a contender that failed would be missing), errors of
    float32 size, and the tables and the sgemm rate printed."""
    from benches import lstm_proj

    rows, gemm = lstm_proj.main(**lstm_proj.parse(["--quick", "--backends", "cython,numba",
                                                   "--rounds", "1"]))
    assert gemm > 0 and len(rows) == 2 * len(lstm_proj.QUICK_SHAPES)
    for shape, mode, res in rows:
        for who in ("cython", "numba", "torch"):
            t, (out_err, grad_err) = res[(who, mode)]
            assert 0 < t < float("inf")
            assert out_err < 1e-5, (shape, mode, who)
            assert (grad_err is None) == (mode == "inference")
            assert grad_err is None or grad_err < 1e-4, (shape, mode, who)
        assert res[("plain", mode)][0] > 0
    printed = capsys.readouterr().out
    assert "torch / cython" in printed and "% sgemm" in printed and "GMAC/s" in printed
