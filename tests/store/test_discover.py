"""store finds runs: run directories under folders and globs, a sweep's jobs in job order, run references."""

import json
from pathlib import Path

import pytest

from overparam.errors import UserError
from overparam.store.discover import expand_refs, find_runs, sweep_jobs


def _run(path: Path, status: str = "done") -> Path:
    path.mkdir(parents=True)
    (path / "run.json").write_text(json.dumps({"status": status, "config_hash": "x"}))
    return path


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "multirun" / "2026-01-01" / "10-00-00"
    for job in ("0", "1", "2", "10"):
        _run(root / job)
    _run(root / "3", status="interrupted")
    (root / ".submitit" / "7").mkdir(parents=True)          # hidden: never a job
    _run(root / ".cache" / "imp" / "k")
    (root / "notes").mkdir()                                  # not a run
    _run(root / "0" / "ticket")                                # a run inside a run: part of it
    return root


def test_a_sweeps_jobs_come_in_job_order_without_hidden_or_foreign_folders(sweep):
    assert [p.name for p in sweep_jobs(sweep)] == ["0", "1", "2", "3", "10"]
    assert sweep_jobs(sweep / "missing") == []


def test_find_runs_walks_folders_and_globs_once_each_and_stops_at_a_run(sweep, tmp_path):
    found = find_runs([tmp_path / "multirun"])
    assert [p.name for p in found] == ["0", "1", "2", "3", "10"]
    again = find_runs([str(sweep / "*"), sweep / "1"])
    assert [p.name for p in again] == ["0", "1", "2", "3", "10"]
    with pytest.raises(UserError, match="no files match"):
        find_runs([str(tmp_path / "nothing*")])


def test_expand_refs_takes_a_sweeps_finished_jobs_a_glob_and_a_tagged_run(sweep):
    refs = expand_refs([f"{sweep}@level_2"])
    assert [(r.root.name, r.tag) for r in refs] == [("0", "level_2"), ("1", "level_2"), ("2", "level_2"),
                                                   ("10", "level_2")]   # 3 is not finished
    refs = expand_refs(str(sweep / "[12]*"), key="base")
    assert [r.root.name for r in refs] == ["1", "10", "2"]
    assert [(r.root, r.tag) for r in expand_refs(f"{sweep / '3'}@dense")] == [(sweep / "3", "dense")]
    with pytest.raises(UserError, match=r"^base: .*matches no run directory"):
        expand_refs(str(sweep / "9*"), key="base")
    with pytest.raises(UserError, match="ingredients is empty"):
        expand_refs(None)
    for job in ("0", "1", "2", "10"):
        (sweep / job / "run.json").write_text(json.dumps({"status": "failed"}))
    with pytest.raises(UserError, match="has no finished job"):
        expand_refs(str(sweep))
