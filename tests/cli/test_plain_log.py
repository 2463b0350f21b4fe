"""Without a terminal (Slurm, CI, nohup) a run prints a plain line per phase and per evaluation, also to train.log."""

from __future__ import annotations

import json
import re
import subprocess
import sys


def test_plain_lines_on_stdout_and_in_train_log_match_the_metrics(tmp_path):
    out = subprocess.run([sys.executable, "-m", "overparam.cli.main", "train", "train.steps=6", "train.epochs=null",
                          "train.eval_every=3", f"hydra.run.dir={tmp_path / 'run'}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if "[dense]" in line]
    assert re.fullmatch(r"\d\d:\d\d:\d\d \[dense\] start: 6 steps, 78,858 of 78,858 parameters trainable", lines[0])
    evaluations = [line for line in lines if "] step " in line]
    assert [int(re.search(r"step (\d+)/6", line).group(1)) for line in evaluations] == [0, 3, 6]
    assert "train_loss" not in evaluations[0] and "train_loss" in evaluations[1]
    assert re.search(r"\] done: 6/6 steps in [\d.]+s$", lines[-1])
    # Each printed accuracy is the one metrics.jsonl recorded at that step.
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for line, step in zip(evaluations, (0, 3, 6)):
        logged = next(r["value"] for r in rows if r["step"] == step and r["split"] == "test"
                      and r["metric"] == "accuracy")
        printed = float(re.search(r"test_accuracy ([\d.]+)", line).group(1))
        assert printed == round(logged, 4)
    # train.log holds the same lines (the terminal-free log a cluster user tails).
    log = (tmp_path / "run" / "train.log").read_text().splitlines()
    assert [line for line in log if "[dense]" in line] == lines
