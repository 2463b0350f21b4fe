"""`merge.shift` (a merge also evaluated on a shifted copy of the dataset) and staged presets for reproduce."""

from __future__ import annotations

import pytest

from overparam.cli.presets import stage_list
from overparam.cli.train import train_in_process
from overparam.errors import UserError


def test_wise_ft_evaluates_every_alpha_on_the_shifted_test_split(ingredients, tmp_path):
    from overparam.data import load_dataset
    from overparam.engine.evaluate import evaluate
    from overparam.store.load import RunRef, load_run_model

    summary = train_in_process(["method=wise_ft", f"ingredients={ingredients['b']}", f"base={ingredients['a']}",
                                "wise_ft.alphas=[0,1]", "merge.shift={variant: noisy}"], tmp_path / "wise")
    assert summary["shift"] == "variant=noisy"
    rows = summary["rows"]
    assert all("shift_accuracy" in row and "shift_loss" in row for row in rows)
    # alpha=0 is the base: its shift numbers are the base model's on the noisy variant's test split.
    import os

    data = load_dataset({"name": "mnist1d", "_target_": "overparam.data.mnist1d.load", "variant": "noisy"},
                        os.environ["OVERPARAM_DATA_DIR"])
    model, _ = load_run_model(RunRef.parse(str(ingredients["a"])), data=data)
    expected = evaluate(model, data.test_x, data.test_y)
    assert rows[0]["shift_accuracy"] == pytest.approx(expected["accuracy"])
    assert rows[0]["shift_loss"] == pytest.approx(expected["loss"], rel=1e-5)
    # The shift is real: the base loses accuracy on it (noisier signals than it trained on).
    assert rows[0]["shift_accuracy"] < rows[0]["test_accuracy"]


@pytest.mark.parametrize("shift, message", [
    ("{variant: rotated}", "not an MNIST-1D variant"),
    ("{val_fraction: 0.5}", "cannot be shifted"),
])
def test_a_bad_shift_is_refused_before_anything_is_written(ingredients, tmp_path, shift, message):
    with pytest.raises(UserError, match=message):
        train_in_process(["method=wise_ft", f"ingredients={ingredients['b']}", f"base={ingredients['a']}",
                          f"merge.shift={shift}"], tmp_path / "wise")
    assert not (tmp_path / "wise").exists()


def test_stage_list_defaults_and_refusals():
    stages = stage_list([{"name": "base", "overrides": ["train.epochs=1"]},
                         {"name": "merge", "overrides": ["ingredients={out}/base"], "multirun": False}])
    assert [s["report"] for s in stages] == [None, True] and stages[1]["overrides"] == ["ingredients={out}/base"]
    assert stage_list(None) == []
    for bad, message in (
            ([{"name": "a b", "overrides": []}], "plain word"),
            ([{"name": "a", "overrides": []}, {"name": "a", "overrides": []}], "different for each stage"),
            ([{"name": "a", "overrides": ["hydra.run.dir=/tmp/x"]}], "may not set its own directory"),
            ([{"name": "a", "overrides": "train.epochs=1"}], "list of key=value"),
            ([{"name": "a", "run": "rm"}], "mapping of name, overrides")):
        with pytest.raises(UserError, match=message):
            stage_list(bad)


@pytest.mark.slow
def test_wise_ft_shift_preset_reproduces_with_its_claims(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "overparam.cli.main", "reproduce", "--out", str(tmp_path / "r"),
                             "experiment=wise_ft_shift"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert [p.name for p in sorted((tmp_path / "r").iterdir()) if p.is_dir()] == ["base", "finetune", "wise_ft"]
    assert "2/2 claims passed" in (tmp_path / "r" / "claims.md").read_text()
