"""The Optuna preset: 3 trials on a tiny model write the best parameters; eval seeds re-run the best."""

from __future__ import annotations

import subprocess

import pytest
from saved_model import saved_accuracy
from tiny_runs import TINY

from overparam.errors import UserError


@pytest.mark.slow  # about 15-25 s: a subprocess sweep of 3 trials x 2 tuning seeds, then one eval run
def test_optuna_search_runs_three_trials_and_reevaluates_on_eval_seeds(tmp_path):
    from omegaconf import OmegaConf

    from overparam.cli.search import evaluate_best

    sweep = tmp_path / "sweep"
    command = ["runner", "train", "-m", "hparams_search=lr_wd", "hydra.sweeper.n_trials=3",
               "search.tuning_seeds=[0,1]", "search.eval_seeds=[5]", *TINY, "train.steps=5", f"hydra.sweep.dir={sweep}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    results = OmegaConf.load(sweep / "optimization_results.yaml")
    assert set(results.best_params) == {"optim.lr", "optim.weight_decay"}
    assert 0.003 <= results.best_params["optim.lr"] <= 0.5
    trials = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in trials] == ["0", "1", "2"]
    # Each trial trained on both tuning seeds and returned their mean.
    import json

    values = []
    for trial in trials:
        summary = json.loads((trial / "summary.json").read_text())
        per_seed = [json.loads((trial / f"seed_{s}" / "summary.json").read_text())["val_accuracy"] for s in (0, 1)]
        assert summary["val_accuracy"] == pytest.approx(sum(per_seed) / 2)
        values.append(summary["val_accuracy"])
    assert results.best_value == pytest.approx(max(values))
    out = evaluate_best(sweep)
    assert out["eval_seeds"] == [5] and len(out["rows"]) == 1
    assert (sweep / "eval_results.yaml").is_file() and (sweep / "eval" / "seed_5" / "summary.json").is_file()
    evaluated = json.loads((sweep / "eval" / "seed_5" / "summary.json").read_text())["test_accuracy"]
    assert out["test_accuracy_mean"] == pytest.approx(evaluated)
    assert evaluated == pytest.approx(saved_accuracy(sweep / "eval" / "seed_5"))


def test_tuning_and_eval_seeds_must_differ():
    from overparam.cli.train import compose_checked

    with pytest.raises(UserError, match="share \\[0\\]"):
        compose_checked(["hparams_search=lr_wd", "search.eval_seeds=[0,1]"])


def _trial(path, container, overrides):
    import json

    from omegaconf import OmegaConf

    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(container)))
    (path / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
    (path / "run.json").write_text(json.dumps({"status": "done"}))
    (path / "summary.json").write_text(json.dumps({"val_accuracy": 0.5}))


def test_a_damaged_trial_is_named_and_skipped_and_the_best_config_still_runs(tmp_path, capsys, monkeypatch):
    from overparam.cli import train
    from overparam.cli.main import main as runner
    from overparam.cli.train import compose_checked

    container = compose_checked(["hparams_search=lr_wd", "search.eval_seeds=[5,6]", *TINY])
    sweep = tmp_path / "sweep"
    for job in (0, 1, 2):
        _trial(sweep / str(job), container, ["hparams_search=lr_wd", f"optim.lr=0.0{job + 1}", "seed=0", *TINY])
    (sweep / "0" / "run.json").write_bytes(b'{"status": "do')  # cut short by a full disk
    (sweep / "2" / "summary.json").write_bytes(b"\xff\xfe")
    (sweep / "optimization_results.yaml").write_text("best_params:\n  optim.lr: 0.02\nbest_value: 0.5\n")
    calls = []

    def fake_train(overrides, out_dir):
        calls.append((list(overrides), out_dir))
        return {"val_accuracy": 0.5, "test_accuracy": 0.25 + 0.5 * len(calls) / 10}

    monkeypatch.setattr(train, "train_in_process", fake_train)
    capsys.readouterr()
    assert runner(["search", str(sweep)]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"runner search: unreadable trial {sweep / '0'}: run.json: not valid JSON (Unterminated string starting at "
        "at line 1) (skipped)",
        f"runner search: unreadable trial {sweep / '2'}: summary.json is not UTF-8 text (invalid start byte at byte 0)"
        " (skipped)"]
    assert [c[0][-2:] for c in calls] == [["optim.lr=0.02", "seed=5"], ["optim.lr=0.02", "seed=6"]]
    assert out == "best {'optim.lr': 0.02} (tuning 0.5000) on eval seeds [5, 6]: test_accuracy 0.3250 +- 0.0354\n"
    assert (sweep / "0" / "run.json").read_bytes() == b'{"status": "do'  # left as it was
    for job in (0, 1, 2):
        (sweep / str(job) / "run.json").write_bytes(b"{\xff")
    assert runner(["search", str(sweep)]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (f"runner search: error: no trial of {sweep} can be read "
                                                        "(each one is listed above)")


def test_help_says_how_a_damaged_trial_is_handled(capsys):
    from overparam.cli.main import main as runner

    assert runner(["search", "--help"]) == 0
    assert ("A trial that cannot be read is named on stderr and skipped (exit code 0): the result does not depend "
            "on it.") in capsys.readouterr().out
