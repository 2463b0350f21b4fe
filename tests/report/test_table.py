"""`runner table` on hand-made run directories: known means and stds, failed runs shown, formats parse."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics

import pytest
from report_helpers import base_config, make_run, method_config

from overparam.cli.main import main as runner
from overparam.errors import UserError
from overparam.report.aggregate import build_table
from overparam.report.formats import render
from overparam.report.index import index_runs, records_of

# method -> sparsity -> seed -> test accuracy
ACCURACY = {
    "imp": {0.5: [0.90, 0.92, 0.94], 0.9: [0.80, 0.83, 0.89]},
    "random_prune": {0.5: [0.85, 0.86, 0.87], 0.9: [0.60, 0.70]},
}


@pytest.fixture
def sweep(tmp_path):
    """A multirun-like folder: 2 methods x 2 sparsities x seeds, one failed and one unfinished job."""
    root = tmp_path / "multirun"
    job = 0
    for method, by_sparsity in ACCURACY.items():
        for sparsity, values in by_sparsity.items():
            for seed, accuracy in enumerate(values):
                make_run(root / str(job), method_config(method, seed=seed, sparsity=sparsity),
                         {"test_accuracy": accuracy, "val_accuracy": accuracy - 0.01, "method": method},
                         overrides=[f"method={method}", f"sparsity={sparsity}", f"seed={seed}"])
                job += 1
    make_run(root / str(job), method_config("random_prune", seed=2, sparsity=0.9), None, status="failed",
             reason="FloatingPointError: loss is nan at step 12")
    make_run(root / str(job + 1), method_config("imp", seed=3, sparsity=0.9), None, status="running")
    (root / "multirun.yaml").write_text("hydra: {}\n")
    return root


def test_mean_std_n_and_failed_runs(sweep):
    table = build_table(records_of(index_runs([sweep])))
    assert table.row_keys == ["method"] and table.col_keys == ["sparsity"]
    for method, by_sparsity in ACCURACY.items():
        for sparsity, values in by_sparsity.items():
            cell = table.cell((method,), (sparsity,))
            assert cell.n == len(values)
            assert cell.mean == pytest.approx(statistics.mean(values), abs=1e-12)
            assert cell.std == pytest.approx(statistics.stdev(values), abs=1e-12)
    assert table.cell(("random_prune",), (0.9,)).failed == 1
    assert table.cell(("imp",), (0.9,)).unfinished == 1
    statuses = sorted(status for _, status, _ in table.problems)
    assert statuses == ["failed", "unfinished"]
    markdown = render(table, "md")
    assert "0.9200 ± 0.0200 (n=3)" in markdown  # imp at 0.5: mean 0.92, sample std 0.02
    assert "[1 failed]" in markdown and "[1 unfinished]" in markdown
    assert "loss is nan at step 12" in markdown


def test_markdown_parses_as_a_pipe_table(sweep):
    text = render(build_table(records_of(index_runs([sweep]))), "md")
    lines = [line for line in text.splitlines() if line.startswith("|")]
    widths = {line.count("|") - line.count("\\|") for line in lines}
    assert len(lines) == 2 + 2 and widths == {4}  # header, rule, two methods; 3 columns
    assert re.fullmatch(r"\|(---\|)+", lines[1])
    assert lines[0] == "| method | sparsity=0.5 | sparsity=0.9 |"


def test_csv_is_tidy_and_parses(sweep):
    text = render(build_table(records_of(index_runs([sweep]))), "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 4
    row = next(r for r in rows if r["method"] == "random_prune" and r["sparsity"] == "0.9")
    assert float(row["mean"]) == pytest.approx(0.65) and float(row["std"]) == pytest.approx(statistics.stdev([0.6, 0.7]))
    assert (row["n"], row["failed"], row["unfinished"], row["metric"]) == ("2", "1", "0", "test_accuracy")


def test_latex_is_a_consistent_booktabs_tabular(sweep):
    text = render(build_table(records_of(index_runs([sweep]))), "latex")
    lines = text.strip().splitlines()
    assert lines[0] == r"\begin{tabular}{lrr}" and lines[-1] == r"\end{tabular}"
    assert lines.count(r"\toprule") == lines.count(r"\midrule") == lines.count(r"\bottomrule") == 1
    body = [line for line in lines if line.endswith(r"\\")]
    assert len(body) == 3 and all(line.count("&") == 2 for line in body)
    assert r"random\_prune" in text  # underscores escaped
    assert r"$0.9200 \pm 0.0200$" in text
    # every math span is balanced
    assert all(line.count("$") % 2 == 0 for line in body)


def test_json_has_every_cell_and_problem(sweep):
    payload = json.loads(render(build_table(records_of(index_runs([sweep]))), "json"))
    assert payload["rows"] == ["method"] and payload["cols"] == ["sparsity"]
    cell = next(c for c in payload["cells"] if c["method"] == "imp" and c["sparsity"] == 0.9)
    assert cell["n"] == 3 and math.isclose(cell["mean"], statistics.mean([0.80, 0.83, 0.89]))
    assert {p["status"] for p in payload["problems"]} == {"failed", "unfinished"}


def test_prune_levels_give_a_level_column(tmp_path):
    levels = lambda shift: [{"level": lv, "sparsity": 1 - 0.8 ** lv, "remaining_fraction": 0.8 ** lv,  # noqa: E731
                             "test_accuracy": 0.9 + 0.01 * lv + shift, "val_accuracy": 0.9} for lv in range(3)]
    for seed, shift in enumerate((0.0, 0.02)):
        make_run(tmp_path / f"imp{seed}", method_config("imp", seed=seed),
                 {"test_accuracy": 0.0, "levels": levels(shift)})
    table = build_table(records_of(index_runs([tmp_path])), rows=["method"], cols=["level"])
    assert table.cols == [(0,), (1,), (2,)]
    cell = table.cell(("imp",), (2,))
    assert cell.values == pytest.approx([0.92, 0.94]) and cell.mean == pytest.approx(0.93)


def test_cli_formats_and_bad_keys(sweep, tmp_path, capsys):
    out = tmp_path / "t.tex"
    assert runner(["table", str(sweep), "--format", "latex", "--out", str(out)]) == 0
    assert out.read_text().startswith(r"\begin{tabular}")
    assert runner(["table", str(sweep), "--rows", "no.such.key"]) == 2
    assert "no run has the key 'no.such.key'" in capsys.readouterr().err
    assert runner(["table", str(sweep), "--metric", "bogus"]) == 2
    assert runner(["table", str(tmp_path / "missing")]) == 2
    with pytest.raises(UserError, match="no run directories"):
        index_runs([tmp_path / "t.tex"])


def test_glob_and_reference_resolution(tmp_path):
    config = base_config(sparsity=0.8)
    config["prune"] = {"target": "${sparsity}"}
    # A run from before run.json held the config: its .hydra/config.yaml is unresolved.
    make_run(tmp_path / "a" / "0", config, {"test_accuracy": 0.5}, config_in_run_json=False)
    make_run(tmp_path / "b" / "0", base_config(sparsity=0.5), {"test_accuracy": 0.4})
    runs = index_runs([str(tmp_path / "*")])
    assert len(runs) == 2
    assert runs[0].flat_config["prune.target"] == 0.8


def test_a_thousand_runs_of_both_formats_make_one_table(tmp_path):
    import yaml

    # Files written directly (Run.start and PyYAML's dumper would dominate the test's time); how
    # fast this is, is measured by bench/index.py, not here.
    configs = {seed: base_config(seed=seed, sparsity=[0.0, 0.5, 0.8][seed % 3]) for seed in range(6)}
    texts = {seed: yaml.safe_dump(config) for seed, config in configs.items()}
    for job in range(1000):
        run = tmp_path / str(job)
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(texts[job % 6])
        info = {"status": "done"} if job % 2 else {"status": "done", "config": configs[job % 6]}
        (run / "run.json").write_text(json.dumps(info))
        (run / "summary.json").write_text(json.dumps({"test_accuracy": 0.5 + (job % 7) / 100}))
    table = build_table(records_of(index_runs([tmp_path])))
    assert sum(cell.n for cell in table.cells.values()) == 1000
    assert table.col_keys == [] and table.row_keys == ["sparsity"]
    assert {row[0]: cell.n for (row, _), cell in table.cells.items()} == {0.0: 334, 0.5: 333, 0.8: 333}
