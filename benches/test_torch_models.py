"""benches/torch_models.py at a tiny size: both models train and infer, every
row has its two timings."""
import pytest

pytest.importorskip("torch")


def test_torch_models_runs_both_models(monkeypatch, capsys):
    from benches import torch_models

    monkeypatch.setattr(torch_models, "ROUNDS", 1)
    monkeypatch.setattr(torch_models, "PAUSE", 0.0)
    rows = torch_models.main(["lstm", "gru"], [(2, 8, 5)])
    assert [(r[0], r[4]) for r in rows] == [("lstm", "training"), ("lstm", "inference"),
                                            ("gru", "training"), ("gru", "inference")]
    assert all(0 < r[5] < float("inf") and 0 < r[6] < float("inf") for r in rows)
    assert capsys.readouterr().out.count("\n| lstm |") == 2
