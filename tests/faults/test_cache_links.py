"""`runner cache ls|clean` never follows a link out of the cache, and a killed clean is finished by the next one.

Each row builds an outputs folder with a real cache entry (one file, hard-linked from a run's level like the
store does), plants one link, and runs `runner cache ls` and `runner cache clean` as subprocesses (a timeout):
exit 2, one line naming the link, and the link's target and the outputs folder byte-identical.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fault_rows import assert_refused, digest, runner  # noqa: E402

from tiny_runs import tiny  # noqa: E402


def outputs_with_entry(root: Path) -> Path:
    """outputs/.cache/imp/k1/level_0/model.safetensors, hard-linked from outputs/run/level_0 (a user of it)."""
    outputs = root / "outputs"
    level = outputs / ".cache" / "imp" / "k1" / "level_0"
    level.mkdir(parents=True)
    (level / "model.safetensors").write_bytes(b"weights" * 100)
    run_level = outputs / "run" / "level_0"
    run_level.mkdir(parents=True)
    os.link(level / "model.safetensors", run_level / "model.safetensors")
    (outputs / "run" / "run.json").write_text('{"status": "done"}')
    return outputs


def precious(root: Path) -> Path:
    """A user's folder with subfolders (what `cache clean` removed through a symlinked `.cache/imp`)."""
    target = root / "precious"
    (target / "thesis" / "figures").mkdir(parents=True)
    (target / "thesis" / "main.tex").write_text("chapter one\n")
    (target / "thesis" / "figures" / "a.png").write_bytes(b"\x89PNG")
    return target


def kind_link(outputs: Path, target: Path) -> Path:
    link = outputs / ".cache" / "distill"
    link.symlink_to(os.path.relpath(target, link.parent))
    return link


def entry_link(outputs: Path, target: Path) -> Path:
    link = outputs / ".cache" / "imp" / "k2"
    link.symlink_to(target / "thesis")
    return link


def cache_link(outputs: Path, target: Path) -> Path:
    real = outputs / ".cache"
    real.rename(outputs / "old-cache")
    real.symlink_to(target)
    return real


ROWS = [(action, plant) for plant in (kind_link, entry_link, cache_link) for action in ("ls", "clean")]


@pytest.mark.parametrize("action,plant", ROWS, ids=[f"{a}-{p.__name__}" for a, p in ROWS])
def test_a_symlink_in_the_cache_is_refused_and_not_followed(tmp_path, action, plant):
    outputs = outputs_with_entry(tmp_path)
    target = precious(tmp_path)
    link = plant(outputs, target)
    before = {"outputs": digest(outputs), "target": digest(target)}
    result = runner(["cache", action, str(outputs)], cwd=tmp_path)
    assert_refused(result, "cache", contains=f"{link} is a symlink")
    assert {"outputs": digest(outputs), "target": digest(target)} == before
    assert not list(outputs.rglob("*.removing-*"))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_clean_is_listed_and_finished_by_the_next(tmp_path):
    """A clean killed mid-removal leaves `.<key>.removing-<pid>` (renamed, partly removed) with its process gone:
    `cache ls` lists it, the next `cache clean` removes it and nothing else."""
    outputs = outputs_with_entry(tmp_path)
    leftover = outputs / ".cache" / "imp" / f".k0.removing-{_dead_pid()}"
    (leftover / "level_1").mkdir(parents=True)
    (leftover / "level_1" / "model.safetensors").write_bytes(b"half removed")
    run_before = digest(outputs / "run")

    listed = runner(["cache", "ls", str(outputs)], cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert f"imp/{leftover.name}  left by an interrupted clean" in listed.stdout
    assert leftover.is_dir()  # listing removes nothing

    cleaned = runner(["cache", "clean", str(outputs), "--unused"], cwd=tmp_path)
    assert cleaned.returncode == 0, cleaned.stderr
    assert f"finished removing imp/{leftover.name}" in cleaned.stdout
    assert "kept    imp/k1: used by 1 run(s)" in cleaned.stdout
    assert not leftover.exists() and (outputs / ".cache" / "imp" / "k1" / "level_0" / "model.safetensors").is_file()
    assert digest(outputs / "run") == run_before
    again = runner(["cache", "clean", str(outputs), "--unused"], cwd=tmp_path)
    assert "finished removing" not in again.stdout and again.returncode == 0


def test_a_leftover_that_is_a_link_is_unlinked_not_followed(tmp_path):
    outputs = outputs_with_entry(tmp_path)
    target = precious(tmp_path)
    before = digest(target)
    leftover = outputs / ".cache" / "imp" / f".k0.removing-{_dead_pid()}"
    leftover.symlink_to(target)
    result = runner(["cache", "clean", str(outputs)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not os.path.lexists(leftover) and digest(target) == before


def test_training_does_not_publish_levels_through_a_symlinked_cache_kind(tmp_path):
    """`runner train method=imp` with `.cache/imp` linked to a user's folder: refused, nothing written there."""
    outputs = tmp_path / "outputs"
    (outputs / ".cache").mkdir(parents=True)
    target = precious(tmp_path)
    before = digest(target)
    (outputs / ".cache" / "imp").symlink_to(target)
    result = runner(["train", *tiny(2), "method=imp", "sparsity=0.5", f"paths.output_dir={outputs}"], cwd=tmp_path)
    assert_refused(result, "train", contains=f"{outputs / '.cache' / 'imp'} is a symlink")
    assert digest(target) == before
