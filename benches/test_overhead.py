"""The per-call overhead script runs (one round) and reports every case."""
import json

from benches import overhead


def test_overhead_reports_every_case(capsys):
    overhead.main(["--rounds", "1"])
    times = json.loads(capsys.readouterr().out)
    assert len(times) == 7 and all(t > 0 for t in times.values())
