"""The README is executed: each command block runs (or says why not) and prints what the README quotes.

scripts/readme.py does the work; the quick blocks run here with small keys, the rest under -m slow, and
the slow `figures` check runs the blocks as written and compares every quoted number (timings aside).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("readme_script", ROOT / "scripts" / "readme.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


readme = _script()
BLOCKS = readme.blocks((ROOT / "README.md").read_text(encoding="utf-8"))
COMMAND_LANGS = ("bash", "console", "python")


def test_every_command_block_is_run_or_says_why_not():
    commands = [b for b in BLOCKS if b.lang in COMMAND_LANGS]
    assert len(commands) >= 15
    unmarked = [f"README line {b.line}" for b in commands if b.kind not in ("run", "skip")]
    assert unmarked == []
    ids = [b.id for b in BLOCKS if b.kind]
    assert len(ids) == len(set(ids))
    assert all(len(b.reason) > 20 for b in BLOCKS if b.kind == "skip")
    sessions = {b.options.get("session", b.id) for b in BLOCKS if b.kind == "run"}
    assert all(b.options["session"] in sessions for b in BLOCKS if b.kind == "output")
    # every command of a run block is a runner command the checker can run
    for block in (b for b in BLOCKS if b.kind == "run" and b.lang != "python"):
        for command in block.commands:
            assert readme.argv_of(command, ROOT, small=True)[0] in ("train", "ls", "table", "reproduce", "export",
                                                                    "cache", "search"), command.text
    assert {"quickstart", "cnn_vs_mlp", "ls-runs", "export", "train-log", "cache", "table", "recipe"} <= set(ids)


def test_a_quoted_line_that_drifts_from_the_code_is_reported(tmp_path):
    """The checker itself: a real command, its real output quoted, then one word of it changed."""
    block = readme.Block("run", "drift", {}, "console", 1, [
        "$ runner ls hydra/launcher",
        "hydra/launcher:",
        " *basic           Hydra's own launcher: a sweep's jobs one after another in this process.",
        "...",
        "  submitit_slurm  Submit a sweep's jobs to Slurm as one job array (submitit); each job runs `runner train` on a node.",
    ])
    assert readme.run_block(block, tmp_path, small=True).problems == []
    block.body[2] = block.body[2].replace("one after another", "all at once")
    problems = readme.run_block(block, tmp_path, small=True).problems
    assert problems == ["`runner ls hydra/launcher` did not print:  *basic           Hydra's own launcher: a sweep's "
                        "jobs all at once in this process."]
    block.body = ["$ runner ls hydra/launcher  # exits 2"]
    assert "exited 0, not 2" in readme.run_block(block, tmp_path, small=True).problems[0]


def test_shapes_hide_numbers_and_steady_lines_hide_only_timings():
    assert readme.shape("| cnn1d | 0.8635 ± 0.0078 (n=2) |") == readme.shape("| cnn1d | 0.1 ± 0.25 (n=4) |")
    assert readme.shape("done    53s  outputs/x  imp") == readme.shape("done     1m  outputs/x  imp")
    assert readme.shape("4/4 job(s) reproduced") != readme.shape("4/4 job(s) reproduced; some DIFFER")
    assert readme.steady("train_seconds  102.007  225.99  +124  (timing, not compared)") == \
        readme.steady("train_seconds  3.1  2.9  -0.2  (timing, not compared)")
    assert readme.steady("| 100 | 0.3025 ± 0.0121 (n=4) |") != readme.steady("| 100 | 0.3025 ± 0.0121 (n=2) |")
    assert readme.steady("done: 58/58 steps in 4.6s") == readme.steady("done: 58/58 steps in 0.1s")


def test_the_quick_blocks_print_what_the_readme_says(tmp_path):
    chosen = readme.selection(BLOCKS, [], slow=False)
    assert [b.id for b in chosen] == ["quickstart", "suggestions"]
    outcomes = readme.run_blocks(chosen, tmp_path, small=True)
    assert [p for o in outcomes for p in o.problems] == []
    # "writes a run directory under outputs/<date>/<time>/"
    assert len(list((tmp_path / "quickstart").glob("outputs/*-*-*/*-*-*/summary.json"))) == 1


@pytest.mark.slow
def test_every_run_block_prints_what_the_readme_says_with_small_keys(tmp_path):
    outcomes = readme.run_blocks(readme.selection(BLOCKS, [], slow=True), tmp_path, small=True)
    assert [p for o in outcomes for p in o.problems] == []


@pytest.mark.slow
def test_the_quoted_numbers_are_what_real_runs_print(tmp_path):
    """`scripts/readme.py figures`: the figures blocks run as written; every quoted line, timings aside."""
    assert readme.main(["figures", "--keep", str(tmp_path)]) == 0
