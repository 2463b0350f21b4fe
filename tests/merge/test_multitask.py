"""`merge.tasks`: task arithmetic / TIES evaluated on each ingredient's own task, normalized as in TIES."""

from __future__ import annotations

import os

import pytest

from overparam.cli.train import train_in_process
from overparam.errors import UserError

from tiny_runs import tiny

TINY = tiny(30)  # the merge ingredients' length (tests/merge/conftest.py)


@pytest.fixture(scope="module")
def tuned(ingredients, tmp_path_factory) -> dict:
    """Run `a` fine-tuned on two MNIST-1D variants (two tasks sharing the ten labels)."""
    root = tmp_path_factory.mktemp("tasks")
    runs = {}
    for variant in ("noisy", "centered"):
        train_in_process(TINY + ["method=finetune", f"from={ingredients['a']}", f"dataset.variant={variant}",
                                 "optim.lr=0.1"], root / "finetune" / variant)
        runs[variant] = root / "finetune" / variant
    return runs


def _merge(method, ingredients, tuned, where, *extra):
    return train_in_process([f"method={method}", f"base={ingredients['a']}",
                             f"ingredients=[{tuned['noisy']},{tuned['centered']}]", "merge.tasks=true",
                             "merge.allow_val_overlap=true", *extra], where)


@pytest.mark.parametrize("method", ["task_arithmetic", "ties"])
def test_every_model_is_scored_on_every_task_and_normalized_by_its_fine_tuned_model(ingredients, tuned, tmp_path,
                                                                                    method):
    from overparam.data import load_dataset
    from overparam.engine.evaluate import evaluate
    from overparam.store.load import RunRef, load_run_model

    summary = _merge(method, ingredients, tuned, tmp_path / method)
    assert summary["tasks"] == "noisy,centered"
    merged, base, noisy, centered = summary["rows"]
    assert (merged["role"], base["role"], noisy["role"], centered["role"]) == ("merged", "base", "ingredient",
                                                                               "ingredient")
    # A task column is the model's accuracy on that variant's test split.
    data = load_dataset({"name": "mnist1d", "_target_": "overparam.data.mnist1d.load", "variant": "noisy"},
                        os.environ["OVERPARAM_DATA_DIR"])
    model, _ = load_run_model(RunRef.parse(str(tuned["noisy"])), data=data)
    assert noisy["task_noisy_accuracy"] == pytest.approx(evaluate(model, data.test_x, data.test_y)["accuracy"])
    # The variants really are different tasks: the noisy one is harder for the base.
    assert base["task_noisy_accuracy"] < base["task_centered_accuracy"]
    # Normalized accuracy: mean over tasks of accuracy / the accuracy of the model fine-tuned on that task.
    reference = {"noisy": noisy["task_noisy_accuracy"], "centered": centered["task_centered_accuracy"]}
    for row in (merged, base, noisy, centered):
        expected = sum(row[f"task_{t}_accuracy"] / reference[t] for t in reference) / 2
        assert row["normalized_accuracy"] == pytest.approx(expected)
        assert row["task_mean_accuracy"] == pytest.approx(
            (row["task_noisy_accuracy"] + row["task_centered_accuracy"]) / 2)
    assert summary["normalized_accuracy"] == merged["normalized_accuracy"]
    assert summary["base_normalized_accuracy"] == base["normalized_accuracy"]
    assert summary["base_normalized_accuracy"] != summary["normalized_accuracy"]


def test_without_tasks_no_task_columns(ingredients, tuned, tmp_path):
    summary = train_in_process(["method=task_arithmetic", f"base={ingredients['a']}",
                                f"ingredients=[{tuned['noisy']},{tuned['centered']}]",
                                "merge.allow_val_overlap=true"], tmp_path / "plain")
    assert "normalized_accuracy" not in summary and "tasks" not in summary
    assert not any(k.startswith("task_") and k.endswith("_accuracy") for k in summary["rows"][0])


def test_a_bad_tasks_value_is_refused_before_writing(ingredients, tuned, tmp_path):
    with pytest.raises(UserError, match="merge.tasks"):
        _merge("ties", ingredients, tuned, tmp_path / "bad", "merge.tasks=sometimes")
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_ties_multitask_preset_reproduces_with_its_claims(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "overparam.cli.main", "reproduce", "--out", str(tmp_path / "r"),
                             "experiment=ties_multitask"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2/2 claims passed" in (tmp_path / "r" / "claims.md").read_text()
