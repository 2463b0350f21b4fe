"""A mistyped option or key is answered with the closest names first, in one line, before anything is written."""

from __future__ import annotations

import subprocess
import sys

import pytest

from overparam.cli.train import compose_checked, validate_overrides
from overparam.errors import UserError

# (overrides, the exact one line)
ROWS = [
    (["method=imp", "sparsty=0.9"],
     "unknown key sparsty: nothing in this run (method=imp) reads it; did you mean sparsity?"),
    (["method=ties", "ties.densty=0.3"],
     "unknown key ties.densty: nothing in this run (method=ties) reads it; did you mean ties.density?"),
    (["method=ties", "densty=0.3"],
     "unknown key densty: nothing in this run (method=ties) reads it; did you mean ties.density?"),
    (["method=imp", "train.stpes=3"],
     "unknown key train.stpes: nothing in this run (method=imp) reads it; did you mean train.steps?"),
    # Two unknown keys: the first is answered, from the config composed without either.
    (["method=ties", "ties.densty=0.3", "foo=2"],
     "unknown key ties.densty: nothing in this run (method=ties) reads it; did you mean ties.density?"),
    (["hydra.job.chdirr=true"],  # Hydra's own section keeps Hydra's answer
     "Could not override 'hydra.job.chdirr'. To append to your config use +hydra.job.chdirr=true"),
    (["modle=mlp"], "unknown key modle: nothing in this run (method=dense) reads it; did you mean model?"),
    (["method=imp", "foo=1"],
     "unknown key foo: nothing in this run (method=imp) reads it (runner train method=imp --cfg job shows every key)"),
    # The model's builder takes keywords its config need not list: there `+` is the right advice.
    (["model.dropuot=0.1"], "unknown key model.dropuot: nothing in this run (method=dense) reads it (a keyword the "
     "model takes but its config does not list: +model.dropuot=0.1)"),
    (["method=lotery"],
     "method=lotery is not an option; did you mean imp (lottery tickets)? (runner ls method lists them all)"),
    (["method=tie"], "method=tie is not an option; did you mean ties? (runner ls method lists them all)"),
    (["method=soup"], "method=soup is not an option; did you mean greedy_soup (Greedy model soup) or uniform_soup "
     "(Uniform model soup) or sms (Sparse model soups)? (runner ls method lists them all)"),
    (["model=mlpp"], "model=mlpp is not an option; did you mean mlp? (runner ls model lists them all)"),
    (["dataset=mnist1"], "dataset=mnist1 is not an option; did you mean mnist1d or mnist or fashion_mnist "
     "(Fashion-MNIST)? (runner ls dataset lists them all)"),
    (["hardware=cpuu"], "hardware=cpuu is not an option; did you mean cpu? (runner ls hardware lists them all)"),
    (["experiment=lotery"], "experiment=lotery is not an option; did you mean lth_lenet_mnist (Lottery tickets) or "
     "lth_mlp (Lottery tickets) or rewind_late (Stabilizing the lottery ticket)? (runner ls experiment lists them "
     "all)"),
    (["method=imp", "sparsty=0.5,0.9"],  # a sweep: each value is checked before Hydra starts it
     "unknown key sparsty: nothing in this run (method=imp) reads it; did you mean sparsity?"),
    (["method=kd", "+kd.temprature=2"],
     "+kd.temprature adds a key that nothing in this run (method=kd) reads; did you mean kd.temperature?"),
]


@pytest.mark.parametrize("overrides, line", ROWS, ids=[" ".join(row[0]) for row in ROWS])
def test_the_closest_names_come_first(overrides, line):
    with pytest.raises(UserError) as info:
        validate_overrides(overrides)
    assert str(info.value) == line


def test_nothing_close_still_lists_every_option():
    with pytest.raises(UserError) as info:
        compose_checked(["method=prune_everything"])
    message = str(info.value)
    assert message.startswith("method=prune_everything is not an option; choose one of: adalora, breadcrumbs, channel,")
    assert "did you mean" not in message and "wise_ft" in message


def test_through_runner_train_one_line_exit_2_nothing_written(tmp_path):
    command = [sys.executable, "-m", "overparam.cli.main", "train", "method=imp", "sparsty=0.9"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr == ("runner train: error: unknown key sparsty: nothing in this run (method=imp) reads it; "
                           "did you mean sparsity?\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, line", [
    (["ls", "method", "tie"], "runner ls: error: unknown method 'tie'; did you mean ties? (runner ls method lists "
     "them all)"),
    (["ls", "method", "lotery"], "runner ls: error: unknown method 'lotery'; did you mean imp (lottery tickets)? "
     "(runner ls method lists them all)"),
    (["ls", "metod"], "runner ls: error: unknown group 'metod'; did you mean method? (runner ls lists them all)"),
])
def test_runner_ls_suggests_without_importing_torch(args, line):
    code = ("import sys, time\nfrom overparam.cli.main import main\nstart = time.perf_counter()\n"
            f"assert main({args!r}) == 2\n"
            "print(time.perf_counter() - start)\n"
            "assert not [m for m in ('torch', 'hydra') if m in sys.modules]\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == line + "\n"
    assert float(done.stdout) < 1.0


def test_the_readme_shows_what_the_runner_prints():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    lines = {" ".join(overrides): line for overrides, line in ROWS
             if " ".join(overrides) in ("method=imp sparsty=0.9", "method=ties ties.densty=0.3", "method=lotery")}
    assert len(lines) == 3
    for overrides, line in lines.items():
        assert f"| `{overrides}` | `{line}` |" in readme  # the bad-input table
    # the console block of these three commands is run by tests/cli/test_readme.py (marked `run suggestions`)
