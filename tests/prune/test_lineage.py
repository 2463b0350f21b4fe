"""Lineage: every IMP level records which run trained its weights; the table counts trainings, not runs."""

from __future__ import annotations

import json

from overparam.report.aggregate import build_table
from overparam.report.index import index_runs, records_of


def _json(path):
    return json.loads(path.read_text())


def test_a_one_seed_sparsity_sweep_counts_each_shared_level_once(train_tiny, tmp_path):
    runs = {}
    for sparsity in (0.5, 0.8, 0.9):
        _, runs[sparsity] = train_tiny(f"s{sparsity}", "method=imp", f"sparsity={sparsity}", "prune.rate=0.5")
    first = _json(runs[0.5] / "run.json")
    second = _json(runs[0.8] / "run.json")
    assert first["run_id"] != second["run_id"]
    # The first job trained every level; the second reused levels 0 and 1 from the cache entry the first wrote.
    assert {entry["origin"] for entry in first["lineage"].values()} == {"trained"}
    reused = second["lineage"]["level_0"]
    assert reused["origin"] == "reused" and reused["run_id"] == first["run_id"]
    assert reused["run_dir"] == str(runs[0.5].resolve()) and reused["phase"] == "level_0"
    assert "/.cache/imp/" in reused["reused_from"]
    # 0.5 stops at level 1: 0.8 trains canonical level 2 (25%) and its own last level 3 (20%).
    assert second["lineage"]["level_2"]["origin"] == "trained"
    assert second["lineage"]["level_2"]["run_id"] == second["run_id"]
    assert _json(runs[0.9] / "run.json")["lineage"]["level_2"]["run_id"] == second["run_id"]
    summary = _json(runs[0.8] / "summary.json")
    assert summary["levels"][0]["lineage"] == f"{first['run_id']}/level_0"

    records = records_of(index_runs([tmp_path]))
    table = build_table(records, rows=["level"], cols=[])
    level0 = table.cell((0,), ())
    assert level0.n == 1 and level0.shared == 2 and level0.std is None  # trained once, appears in three runs
    assert "(n=1)" in level0.text()
    assert table.cell((1,), ()).n == 1 and table.cell((2,), ()).n == 1
    # Level 3 of 0.8 (its last, 80% sparse) and of 0.9 (canonical 87.5%) are two trainings.
    assert table.cell((3,), ()).n == 2
