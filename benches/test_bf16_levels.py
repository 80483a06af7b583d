"""benches/bf16_levels.py: a row per cell, shape and pass, a ratio per level."""
import pytest

import fastrnn


def test_bf16_levels_table(monkeypatch, capsys):
    try:
        levels = fastrnn.cpu_isa_levels()
    except ImportError as e:
        pytest.skip(f"the Cython kernels are not built: {e}")
    from benches import bf16_levels

    monkeypatch.setattr(bf16_levels, "SHAPES", [(2, 8, 5)])
    before = fastrnn.get_isa_level()
    bf16_levels.main(1)
    assert fastrnn.get_isa_level() == before  # left as it found it
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("| cell"))
    rows = [line for line in lines if line.startswith("| ") and "x |" in line]
    assert header.count("`") == 2 * len(levels)
    assert len(rows) == 3 * 2  # every cell, inference and training
    for row in rows:
        ratios = [float(c.strip().rstrip("x")) for c in row.strip("| \n").split("|")[3:]]
        assert len(ratios) == len(levels) and all(r > 0 for r in ratios)
