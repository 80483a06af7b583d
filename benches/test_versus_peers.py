"""benches/versus_peers.py: its table and the facts it writes with a run."""


def test_versus_peers_table_and_facts(monkeypatch):
    """A tiny run of benches/versus_peers.py: one row a pass, every contender a
    rate, and the facts a reader needs (sgemm rate, OpenBLAS variables, load)."""
    from benches import versus_peers

    monkeypatch.setattr(versus_peers, "ROUNDS", 1)
    monkeypatch.setattr(versus_peers, "PAUSE", 0.0)
    rows, rate = versus_peers.main(["lstm"], [(2, 8, 6)])
    assert rate > 0 and len(rows) == 1
    (cell, B, H, T, best, err), = rows
    assert (cell, B, H, T) == ("lstm", 2, 8, 6)
    assert all(0 < s < float("inf") for s in best.values())
    assert err["fastrnn"] < 1e-5 < err["fastrnn bf16"] < 3e-2  # bf16 is on, and accurate
    low = versus_peers.low_precision_table(rows).splitlines()
    assert len(low) == 4 and "fastrnn bf16" in low[0] and low[2].split(" | ")[3] == "inference"
    lines = versus_peers.table(rows, rate).splitlines()
    header, rule, *body = lines
    assert [row.split(" | ")[3] for row in body] == ["inference", "training"]
    assert header.count("|") == rule.count("|") == body[0].count("|") == body[1].count("|")
    facts = "\n".join(versus_peers.facts(rate, 1.0, 0.0, ["lstm"]))
    assert "GFLOP/s" in facts and "OpenBLAS variables" in facts and "cores busy" in facts
