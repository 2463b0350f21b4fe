"""The one metrics.jsonl reader: a torn last line is left out and flagged; other damage is one clear error."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from overparam.errors import UserError
from overparam.store.metrics import end_torn_line, read_metric_rows


def row(step, value, level=None, split="test", metric="accuracy"):
    return {"step": step, "level": level, "split": split, "metric": metric, "value": value}


def write(path, rows, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail, encoding="utf-8")


def test_a_torn_last_line_is_left_out_and_flagged(tmp_path):
    rows = [row(0, 0.1), row(10, 0.5), row(10, 1.25, split="train", metric="loss")]
    write(tmp_path / "metrics.jsonl", rows, tail='{"step": 20, "level": null, "spl')
    read = read_metric_rows(tmp_path)  # a run directory or the file itself
    assert read == rows and read.torn is True
    assert read_metric_rows(tmp_path / "metrics.jsonl") == rows
    write(tmp_path / "metrics.jsonl", rows)
    assert read_metric_rows(tmp_path).torn is False
    assert read_metric_rows(tmp_path / "absent") == [] and read_metric_rows(tmp_path / "absent").torn is False


def test_a_complete_last_row_without_its_newline_is_kept(tmp_path):
    write(tmp_path / "metrics.jsonl", [row(0, 0.1)], tail=json.dumps(row(5, 0.7)))
    read = read_metric_rows(tmp_path)
    assert [r["step"] for r in read] == [0, 5] and not read.torn


@pytest.mark.parametrize("bad", ['{"step": 3, "va', '[1, 2]', '{"step": "3"}', '{"step": true}'])
def test_a_broken_line_before_the_end_is_one_clear_error(tmp_path, bad):
    (tmp_path / "metrics.jsonl").write_text(json.dumps(row(0, 0.1)) + "\n" + bad + "\n" + json.dumps(row(1, 0.2))
                                            + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"metrics.jsonl: line 2 is not a metrics row"):
        read_metric_rows(tmp_path)


def test_appending_after_a_kill_never_glues_a_row_onto_the_torn_line(tmp_path):
    from overparam.store.run import Run

    (tmp_path / "run").mkdir()
    path = tmp_path / "run" / "metrics.jsonl"
    write(path, [row(0, 0.25)], tail='{"step": 5, "lev')  # an earlier process, killed while writing
    assert read_metric_rows(path).torn
    resumed = Run(tmp_path / "run", {})
    resumed.log(5, "test", {"accuracy": 0.5})
    read = resumed.read_metrics()
    assert [(r["step"], r["value"]) for r in read] == [(0, 0.25), (5, 0.5)] and not read.torn
    assert end_torn_line(path) is False  # nothing left to cut


def test_the_curves_figure_says_when_it_left_a_torn_line_out(tmp_path):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    run.mkdir()
    write(run / "metrics.jsonl", [row(s, 0.1 * s) for s in range(5)], tail='{"step": 5, "le')
    code = ("import sys; from overparam.report.plots import curves_figure; "
            f"curves_figure({str(run)!r}, {str(tmp_path / 'c.png')!r})")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "ends in a line cut short" in done.stderr and (tmp_path / "c.png").stat().st_size > 0
