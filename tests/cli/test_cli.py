"""The `runner` command line: fast help, listings, clear errors with exit code 2, nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from overparam.cli.main import main

from light_cli import run_light


def _run(args, cwd, timeout=300):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "overparam.cli.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_help_and_ls_import_no_torch():
    stdout = run_light(["--help"], ["ls"], heavy=("torch", "torchvision", "hydra", "matplotlib"))
    for command in ("train", "ls", "table", "reproduce"):
        assert command in stdout
    for group in ("method:", "model:", "dataset:", "hardware:", "experiment:"):
        assert group in stdout


def test_ls_one_group_lists_options_with_descriptions(capsys):
    assert main(["ls", "model"]) == 0
    out = capsys.readouterr().out
    assert "mlp" in out and "cnn1d" in out and "lenet300_100" in out
    line = next(l for l in out.splitlines() if "lenet300_100" in l)
    assert "LeNet-300-100" in line


def test_ls_unknown_group_is_a_clear_error(capsys):
    assert main(["ls", "nonsense"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nonsense" in err[0] and "method" in err[0]


def test_unknown_command_exits_2(capsys):
    assert main(["trian"]) == 2
    assert "train" in capsys.readouterr().err


@pytest.mark.parametrize("override, words", [
    ("method=nope", ["method=nope", "dense"]),
    ("model=nope", ["model=nope", "mlp"]),
    ("sparsity=1.5", ["sparsity", "[0.0, 1.0)"]),
    ("sparsity=abc", ["sparsity", "number"]),
    ("optim.lr=-1", ["optim.lr", "range"]),
    ("train.batch_size=0", ["train.batch_size"]),
    ("nokey=3", ["nokey"]),
    ("model._target_=os.system", ["os.system", "--trust"]),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, override, words):
    out = _run(["train", override, f"paths.output_dir={tmp_path / 'outputs'}"], cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = [l for l in out.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1, out.stderr
    for word in words:
        assert word in lines[0]
    assert not (tmp_path / "outputs").exists()


def test_train_help_lists_groups(tmp_path):
    out = _run(["train", "--help"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "== Config groups ==" in out.stdout
    for group in ("method: ", "model: ", "dataset: ", "hardware: "):
        assert group in out.stdout


def test_cfg_job_prints_the_composed_config(tmp_path):
    out = _run(["train", "--cfg", "job", "model=cnn1d", "seed=4"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "name: cnn1d" in out.stdout and "seed: 4" in out.stdout


def test_multirun_writes_one_complete_run_dir_per_job(tmp_path):
    out = _run(["train", "-m", "seed=0,1,2", "train.steps=6", "train.epochs=null", "train.eval_every=3",
                f"paths.output_dir={tmp_path / 'outputs'}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    jobs = sorted((tmp_path / "outputs" / "multirun").glob("*/*/[0-9]*"))
    assert len(jobs) == 3
    accuracies = []
    for job in jobs:
        for name in (".hydra/config.yaml", ".hydra/overrides.yaml", "run.json", "metrics.jsonl", "summary.json",
                     "checkpoints/model.safetensors"):
            assert (job / name).exists(), f"{job}/{name} missing"
        info = json.loads((job / "run.json").read_text())
        assert info["status"] == "done"
        accuracies.append(json.loads((job / "summary.json").read_text())["test_accuracy"])
    assert len(set(accuracies)) > 1, "different seeds should give different results"
