"""`runner cache ls|clean`: entries, sizes and users of the level cache; cleaning never changes a finished run."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from overparam.cli.main import main as runner
from overparam.cli.train import train_in_process

from tiny_runs import tiny

TINY = tiny(10, "method=imp", "prune.rate=0.5")


def _digests(run_dir):
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture
def outputs(tmp_path):
    """Two IMP runs that share levels 0-1 through the cache (sparsity 0.5 and 0.75), and one of another config."""
    out = tmp_path / "outputs"
    runs = {}
    for name, extra in (("a", ["sparsity=0.5"]), ("b", ["sparsity=0.75"]), ("c", ["sparsity=0.5", "seed=1"])):
        runs[name] = out / "runs" / name
        train_in_process([*TINY, *extra, f"paths.output_dir={out}"], runs[name])
    return out, runs


def test_ls_shows_entries_levels_sizes_and_users(outputs, capsys):
    out, runs = outputs
    capsys.readouterr()
    assert runner(["cache", "ls", str(out)]) == 0
    text = capsys.readouterr().out
    entries = [line for line in text.splitlines() if line.startswith("imp/")]
    assert len(entries) == 2
    shared = next(line for line in entries if "used by 2 run(s)" in line)
    assert "levels 0-2" in shared
    alone = next(line for line in entries if "used by 1 run(s)" in line)
    assert "levels 0-1" in alone
    assert f"    {runs['a']}" in text and f"    {runs['b']}" in text and f"    {runs['c']}" in text
    assert "2 entries" in text


def test_a_level_from_the_cache_is_a_line_in_the_log(outputs):
    out, runs = outputs
    log = (runs["b"] / "train.log").read_text()  # b (0.75) took levels 0-1 from a (0.5) and trained level 2
    assert "[level 0/2 (100.0%)] taken from the level cache" in log
    assert "[level 1/2 (50.0%)] taken from the level cache" in log
    assert "[level 2/2 (25.0%)] start: 10 steps" in log


def test_clean_keeps_every_finished_run_byte_for_byte(outputs, capsys, tmp_path):
    out, runs = outputs
    before = {name: _digests(path) for name, path in runs.items()}
    assert runner(["cache", "clean", str(out), "--dry-run"]) == 0
    assert (out / ".cache" / "imp").is_dir() and len(list((out / ".cache" / "imp").iterdir())) == 2
    assert runner(["cache", "clean", str(out)]) == 0
    assert "2 entries removed" in capsys.readouterr().out
    assert list((out / ".cache" / "imp").iterdir()) == []
    assert {name: _digests(path) for name, path in runs.items()} == before
    # The runs still export and tabulate from their own level files.
    assert runner(["export", f"{runs['b']}@level_2", "--to", str(tmp_path / "b.safetensors")]) == 0
    assert runner(["table", str(out / "runs")]) == 0
    # A later run with the same config trains its levels again (nothing refers to the removed entry).
    train_in_process([*TINY, "sparsity=0.5", f"paths.output_dir={out}"], out / "runs" / "d")
    log = (out / "runs" / "d" / "train.log").read_text()
    assert "[level 0/1 (100.0%)] start" in log and "[level 1/1 (50.0%)] start" in log


def test_clean_unused_and_a_locked_entry_stay(outputs, capsys):
    out, runs = outputs
    import shutil

    shutil.rmtree(runs["c"])  # its entry is now used by no run
    entry = next(p for p in (out / ".cache" / "imp").iterdir() if not (p / "level_2").exists())
    assert runner(["cache", "clean", str(out), "--unused"]) == 0
    assert not entry.exists() and len(list((out / ".cache" / "imp").iterdir())) == 1
    shared = next((out / ".cache" / "imp").iterdir())
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom filelock import FileLock\n"
                               "lock = FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); "
                               "time.sleep(60)", str(shared / "level_1.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        assert runner(["cache", "clean", str(out)]) == 0
        assert "a running job holds its lock" in capsys.readouterr().out and shared.exists()
    finally:
        holder.kill()
        holder.wait()
    assert runner(["cache", "clean", str(out)]) == 0 and not shared.exists()


def test_bad_folder_is_one_line_exit_2(tmp_path, capsys):
    assert runner(["cache", "ls", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.startswith("runner cache: error: ")


def test_ls_lists_a_run_whose_run_json_is_damaged_and_still_counts_its_links(outputs, capsys):
    out, runs = outputs
    (runs["b"] / "run.json").write_bytes(b'{"status": "do\xff')
    capsys.readouterr()
    assert runner(["cache", "ls", str(out)]) == 0
    text = capsys.readouterr().out
    # b's level files are hard links into the shared entry: it is still a user, judged by its files.
    assert any(line.startswith("imp/") and "used by 2 run(s)" in line for line in text.splitlines())
    assert text.splitlines()[-1] == (f"unreadable run {runs['b']}: run.json is not UTF-8 text (invalid start byte "
                                     "at byte 14) (its use of the cache judged by its level files alone)")
