"""A merge evaluates each ingredient on the examples it was validated on, or refuses naming the one that trained
on them (dataset.split_seed is fixed, so a seed sweep's runs all hold out the same examples)."""

from __future__ import annotations

import json

import pytest

from overparam.cli.main import main as runner
from overparam.cli.train import train_in_process

from tiny_runs import tiny

TINY = tiny(30)


@pytest.fixture(scope="module")
def seed_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeds")
    for seed in (0, 1, 2):
        train_in_process([*TINY, f"seed={seed}"], root / "sweep" / str(seed))
    return root


def test_a_greedy_soup_over_a_seed_sweep_scores_each_ingredient_on_its_own_val_split(seed_sweep, tmp_path):
    summary = train_in_process(["method=greedy_soup", f"ingredients={seed_sweep / 'sweep'}"], tmp_path / "soup")
    assert summary["val_split_shared"] == 1 and summary["val_split_seed"] == 0
    rows = [r for r in summary["rows"] if r["role"] == "ingredient"]
    own = [json.loads((seed_sweep / "sweep" / str(s) / "summary.json").read_text()) for s in (0, 1, 2)]
    # The val accuracy the soup selects by is the one each ingredient reported on its own held-out split.
    assert [r["val_accuracy"] for r in rows] == [o["val_accuracy"] for o in own]


@pytest.mark.parametrize("split, difference", [
    (["dataset.split_seed=1"], "dataset.split_seed=1 vs 0"),
    (["dataset.split_seed=null", "seed=1"], "dataset.split_seed=1 vs 0"),
    (["dataset.val_fraction=0.2"], "dataset.val_fraction=0.2 vs 0.1"),
    (["dataset.variant=warped"], "dataset.variant=warped vs unset"),
])
def test_an_ingredient_that_trained_on_the_merge_val_split_is_refused(seed_sweep, tmp_path, capsys, split,
                                                                      difference):
    other = tmp_path / "other"
    train_in_process([*TINY, *split], other)
    ingredients = f"ingredients=[{seed_sweep / 'sweep' / '0'},{other}]"
    for method in ("greedy_soup", "rebasin"):
        assert runner(["train", f"method={method}", ingredients, f"hydra.run.dir={tmp_path / method}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{other}" in err[0] and "trained on examples of the val split" in err[0]
        assert err[0].endswith(f"merge evaluates on: {difference}); train the ingredients with one dataset split, "
                               f"or set merge.allow_val_overlap=true to accept optimistic val numbers")
        assert not (tmp_path / method).exists()  # refused before anything is written
    # Opting in runs the merge and records that the split was not shared.
    summary = train_in_process(["method=greedy_soup", ingredients, "merge.allow_val_overlap=true"],
                               tmp_path / "allowed")
    assert summary["val_split_shared"] == 0
