"""fastrnn's benchmark suite (pytest-benchmark) and its report tool.

    pytest benches/ --benchmark-only                    # quick grid
    pytest benches/ --benchmark-only --bench-grid=full --benchmark-json=run.json
    python -m benches.report run.json                   # tables + plot into benches/results/

``grid`` says what is measured, ``cells`` how each recurrent cell is run by
each implementation, ``report`` turns a saved run into tables and a plot.
"""
