"""The four RNN shapes in examples/ run and learn (small, seeded settings)."""
import importlib
import pathlib

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def example(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module


@pytest.mark.parametrize("name, steps, threshold", [
    ("one_to_many", 300, 1.0),  # all four patterns generated exactly
    ("many_to_one", 150, 0.95),  # accuracy; the majority class scores about 0.67
    ("many_to_many_aligned", 150, 0.95),  # per-step accuracy; no memory: 0.75
    ("many_to_many_delayed", 600, 0.5),  # exact reversals; chance is about 0
])
def test_example_learns(example, name, steps, threshold):
    score = example(name).main(steps=steps, seed=0, verbose=False)
    assert score >= threshold
