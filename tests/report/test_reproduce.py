"""`runner reproduce` of a tiny real run: exact on CPU; a tampered summary gives exit 1; bad input exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from overparam.cli.main import main as runner
from overparam.cli.train import train_in_process
from overparam.report.compare import compare_summaries, flatten_summary

from tiny_runs import tiny

TINY = tiny(6, "seed=3", eval_every=3, batch_size=None)


def _in_process_train(args: list[str], trust: bool = False) -> int:
    """Stand-in for the `runner train` subprocess: the same composition and recipe, in this process."""
    from omegaconf import OmegaConf

    from overparam.cli.train import execute
    from overparam.store.atomic import atomic_write_text

    out_dir = next(a.partition("=")[2] for a in args if a.startswith("hydra.run.dir="))
    config_path = next((a.partition("=")[2] for a in args if a.startswith("--config-path=")), None)
    if config_path is None:
        train_in_process([a for a in args if not a.startswith("hydra.")], out_dir)
        return 0
    config = OmegaConf.load(f"{config_path}/config.yaml")
    config.pop("hydra")
    atomic_write_text(f"{out_dir}/.hydra/config.yaml", OmegaConf.to_yaml(config))
    execute(config, Path(out_dir))
    return 0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    run = root / "original"
    train_in_process(TINY, run)
    return run


@pytest.fixture
def in_process(monkeypatch):
    monkeypatch.setattr("overparam.cli.reproduce._runner_train", _in_process_train)


def _check_exact_then_tampered(run, tmp_path, capsys):
    assert runner(["reproduce", str(run), "--out", str(tmp_path / "again")]) == 0
    out = capsys.readouterr().out
    assert "metrics agree exactly" in out and "DIFFERS" not in out
    original = json.loads((run / "summary.json").read_text())
    again = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert again["test_accuracy"] == original["test_accuracy"] and again["test_loss"] == original["test_loss"]
    assert json.loads((tmp_path / "again" / "run.json").read_text())["config_hash"] == \
        json.loads((run / "run.json").read_text())["config_hash"]

    tampered = tmp_path / "tampered"
    shutil.copytree(run, tampered)
    summary = dict(original, test_accuracy=original["test_accuracy"] + 0.125)
    (tampered / "summary.json").write_text(json.dumps(summary))
    assert runner(["reproduce", str(tampered), "--out", str(tmp_path / "again2")]) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("test_accuracy "))
    assert "DIFFERS" in row and "-0.125" in row
    assert "DIFFER: test_accuracy" in out


def test_reproduce_is_exact_and_a_tampered_summary_differs(tiny_run, tmp_path, capsys, in_process):
    _check_exact_then_tampered(tiny_run, tmp_path, capsys)


def test_changed_defaults_run_the_saved_config(tiny_run, tmp_path, capsys, in_process):
    # A run whose saved config has a value its overrides do not explain (a default changed since).
    changed = tmp_path / "changed"
    shutil.copytree(tiny_run, changed)
    config_file = changed / ".hydra" / "config.yaml"
    config_file.write_text(config_file.read_text().replace("batch_size: 128", "batch_size: 64"))
    (changed / "summary.json").write_text("{}")
    runner(["reproduce", str(changed), "--out", str(tmp_path / "again")])
    out = capsys.readouterr().out
    assert "running the saved config.yaml" in out and "train.batch_size: saved 64, today 128" in out
    assert "batch_size: 64" in (tmp_path / "again" / ".hydra" / "config.yaml").read_text()


@pytest.mark.slow
def test_reproduce_through_runner_train_subprocesses(tiny_run, tmp_path, capsys):
    """The real path: `runner train` in a subprocess (about 10 s per run on an idle core)."""
    _check_exact_then_tampered(tiny_run, tmp_path, capsys)


def test_bad_input_exits_2(tiny_run, tmp_path, capsys):
    assert runner(["reproduce", str(tmp_path / "nowhere")]) == 2
    unfinished = tmp_path / "unfinished"
    shutil.copytree(tiny_run, unfinished)
    info = json.loads((unfinished / "run.json").read_text())
    (unfinished / "run.json").write_text(json.dumps(dict(info, status="running")))
    assert runner(["reproduce", str(unfinished)]) == 2
    assert "has not finished" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert runner(["reproduce", str(tiny_run), "--out", str(tmp_path / "full")]) == 2
    assert runner(["reproduce", "experiment=no_such_preset"]) == 2
    assert runner(["reproduce", str(tiny_run), "seed=1"]) == 2


def test_compare_levels_rows_and_timings():
    original = {"test_accuracy": 0.5, "train_seconds": 1.0, "method": "imp",
                "levels": [{"level": 0, "test_accuracy": 0.9}, {"level": 1, "test_accuracy": 0.8}]}
    reproduced = {"test_accuracy": 0.5004, "train_seconds": 9.0, "method": "imp",
                  "levels": [{"level": 0, "test_accuracy": 0.9}, {"level": 1, "test_accuracy": 0.7}]}
    assert set(flatten_summary(original)) == {"test_accuracy", "train_seconds", "method", "level_0.test_accuracy",
                                              "level_1.test_accuracy"}
    by_name = {d.name: d for d in compare_summaries(original, reproduced, tolerance=0.001)}
    assert by_name["test_accuracy"].agrees and not by_name["level_1.test_accuracy"].agrees
    assert by_name["train_seconds"].agrees and not by_name["train_seconds"].judged
    exact = {d.name: d for d in compare_summaries(original, reproduced, tolerance=0.0)}
    assert not exact["test_accuracy"].agrees
    missing = {d.name: d for d in compare_summaries({"a": 1}, {"b": 1})}
    assert not missing["a"].agrees and not missing["b"].agrees


def _inodes(root: Path) -> dict[int, Path]:
    return {p.stat().st_ino: p for p in root.rglob("*.safetensors") if p.is_file()}


def test_reproducing_an_imp_run_retrains_every_level_and_shares_no_weight_file(tmp_path, capsys, in_process):
    """The original took levels 0-1 from a cache another job wrote; the reproduction trains them all again."""
    outputs = tmp_path / "outputs"
    imp = [*TINY, "method=imp", "prune.rate=0.5", f"paths.output_dir={outputs}"]
    train_in_process([*imp, "sparsity=0.5"], outputs / "s05")
    original = outputs / "s08"
    train_in_process([*imp, "sparsity=0.8"], original)
    lineage = json.loads((original / "run.json").read_text())["lineage"]
    assert [lineage[f"level_{i}"]["origin"] for i in range(4)] == ["reused", "reused", "trained", "trained"]

    cache_before = sorted((outputs / ".cache").rglob("*"))
    again = tmp_path / "again"
    assert runner(["reproduce", str(original), "--out", str(again)]) == 0
    out = capsys.readouterr().out
    assert "metrics agree exactly" in out and "NOT REPRODUCED" not in out
    reproduced = json.loads((again / "run.json").read_text())["lineage"]
    assert all(entry["origin"] == "trained" and entry["run_dir"] == str(again.resolve())
               for entry in reproduced.values()), reproduced
    assert len(reproduced) == 4
    shared = set(_inodes(again)) & set(_inodes(outputs))  # the original, the other job and their cache
    assert not shared, [str(_inodes(outputs)[i]) for i in shared]
    assert sorted((outputs / ".cache").rglob("*")) == cache_before  # nothing was added to the old cache
    ours = json.loads((again / "summary.json").read_text())
    theirs = json.loads((original / "summary.json").read_text())
    assert [lv["test_accuracy"] for lv in ours["levels"]] == [lv["test_accuracy"] for lv in theirs["levels"]]

    # Opting in to the original's cache: the reused levels are named as not reproduced.
    reused = tmp_path / "reused"
    assert runner(["reproduce", str(original), "--out", str(reused), "--reuse-cache"]) == 0
    out = capsys.readouterr().out
    assert "NOT REPRODUCED (3 reused" in out
    assert all(f"level_{i} (trained by" in out for i in (0, 1, 2)) and "level_3 (" not in out
    assert set(_inodes(reused)) & set(_inodes(outputs / ".cache"))
