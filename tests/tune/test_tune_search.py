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
