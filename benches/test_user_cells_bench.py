"""benches/user_cells.py: a tiny run (--quick), so that the script cannot rot."""
import contextlib
import io
import math


def test_user_cells_quick_run(tmp_path):
    from benches import user_cells

    out = tmp_path / "user_cells.md"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rows, text = user_cells.main(**user_cells.parse(["--quick", "--out", str(out)]))
    assert printed.getvalue().startswith(text) and out.read_text() == text
    assert [shape for shape, _ in rows] == user_cells.QUICK_SHAPES
    for shape, (times, errs) in rows:
        for name in user_cells.CONTENDERS:
            for mode in user_cells.MODES:
                assert 0 < times[name, mode] < math.inf, (shape, name, mode)
            out_err, grad_err = errs[name]
            assert out_err < 1e-4 and grad_err < 1e-3, (shape, name, errs[name])
    assert "GRU user / GRU built in" in text and "CPU:" in text
