"""Merge methods end to end on tiny runs: what goes in is checked, what comes out is a normal run."""

from __future__ import annotations

import json

import pytest
import torch

from overparam.cli.main import main as runner
from overparam.cli.train import train_in_process
from overparam.store.checkpoint import load_state
from overparam.store.load import load_run_model


def _weights(run_dir):
    return load_state(run_dir / "checkpoints" / "model.safetensors")


def test_soup_of_identical_ingredients_equals_the_ingredient(ingredients, tmp_path):
    a = ingredients["a"]
    summary = train_in_process(["method=uniform_soup", f"ingredients=[{a},{a},{a}]"], tmp_path / "soup")
    soup, original = _weights(tmp_path / "soup"), _weights(a)
    assert soup.keys() == original.keys()
    for key in original:
        assert torch.equal(soup[key], original[key]), key
    assert summary["test_accuracy"] == summary["rows"][1]["test_accuracy"]
    assert [row["role"] for row in summary["rows"]] == ["merged", "ingredient", "ingredient", "ingredient"]


def test_uniform_soup_of_a_multirun_is_the_mean(ingredients, tmp_path):
    summary = train_in_process(["method=uniform_soup", f"ingredients={ingredients['sweep']}"], tmp_path / "soup")
    assert summary["ingredients"] == 3
    soup = _weights(tmp_path / "soup")
    parts = [_weights(ingredients[n]) for n in "abc"]
    for key in soup:
        expected = ((parts[0][key].double() + parts[1][key].double() + parts[2][key].double()) / 3).float()
        assert torch.equal(soup[key], expected), key
    model, _ = load_run_model(tmp_path / "soup")
    assert sum(p.numel() for p in model.parameters()) > 0


def test_greedy_soup_is_never_below_its_best_ingredient_on_val(ingredients, tmp_path):
    summary = train_in_process(["method=greedy_soup", f"ingredients={ingredients['sweep']}/*"], tmp_path / "greedy")
    ingredient_rows = [r for r in summary["rows"] if r["role"] == "ingredient"]
    assert len(ingredient_rows) == 3
    assert summary["val_accuracy"] >= max(r["val_accuracy"] for r in ingredient_rows)
    assert summary["soup_size"] == sum(r["in_soup"] for r in ingredient_rows) >= 1


def test_sparse_merges_keep_the_mask_exactly(ingredients, tmp_path):
    a, b = ingredients["masked_a"], ingredients["masked_b"]
    masks = {k: v for k, v in _weights(a).items() if k.endswith("_mask")}
    for method, extra in (("uniform_soup", []), ("ties", [f"base={ingredients['a']}", "ties.density=0.5"]),
                          ("dare", [f"base={ingredients['a']}", "dare.drop=0.5"])):
        train_in_process([f"method={method}", f"ingredients=[{a},{b}]", *extra], tmp_path / method)
        merged = _weights(tmp_path / method)
        for key, mask in masks.items():
            assert torch.equal(merged[key], mask), (method, key)
            assert bool((merged[key[: -len("_mask")]][mask == 0] == 0).all()), (method, key)
        assert bool((merged["fc0.weight"][masks["fc0.weight_mask"] == 1] != 0).any())


def test_fisher_with_a_dominating_floor_is_the_uniform_soup(ingredients, tmp_path):
    a, b = ingredients["a"], ingredients["b"]
    # A floor far above every Fisher entry makes all Fishers equal: the merge is the plain mean.
    train_in_process(["method=fisher", f"ingredients=[{a},{b}]", "fisher.floor=1e6", "fisher.samples=32"],
                     tmp_path / "fisher")
    train_in_process(["method=uniform_soup", f"ingredients=[{a},{b}]"], tmp_path / "uniform")
    fisher, uniform = _weights(tmp_path / "fisher"), _weights(tmp_path / "uniform")
    for key in uniform:
        torch.testing.assert_close(fisher[key], uniform[key], rtol=1e-6, atol=1e-7)


def test_wise_ft_reports_one_row_per_alpha_and_matches_its_endpoints(ingredients, tmp_path):
    summary = train_in_process(["method=wise_ft", f"ingredients={ingredients['b']}", f"base={ingredients['a']}",
                                "wise_ft.alphas=[0,0.5,1]", "wise_ft.save_alpha=0"], tmp_path / "wise")
    assert [row["alpha"] for row in summary["rows"]] == [0.0, 0.5, 1.0]
    base = json.loads((ingredients["a"] / "summary.json").read_text())
    assert summary["rows"][0]["test_accuracy"] == pytest.approx(base["test_accuracy"])
    saved, original = _weights(tmp_path / "wise"), _weights(ingredients["a"])
    assert all(torch.equal(saved[k], original[k]) for k in original)


def test_lmc_of_a_model_with_itself_has_no_barrier(ingredients, tmp_path):
    a = ingredients["a"]
    summary = train_in_process(["method=lmc", f"ingredients=[{a},{a}]", "lmc.points=3"], tmp_path / "lmc")
    assert summary["barrier_loss"] == pytest.approx(0.0, abs=1e-6)
    assert summary["aligned_barrier_loss"] == pytest.approx(0.0, abs=1e-6)
    assert len(summary["rows"]) == 6


@pytest.mark.parametrize("bad,expected", [
    ("wide", "has another architecture than"),
    ("missing", "does not exist"),
])
def test_mismatched_ingredients_fail_with_one_line_and_write_nothing(ingredients, tmp_path, capsys, bad, expected):
    other = ingredients["wide"] if bad == "wide" else tmp_path / "nowhere"
    out = tmp_path / "out"
    code = runner(["train", "method=uniform_soup", f"ingredients=[{ingredients['a']},{other}]", f"hydra.run.dir={out}"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not out.exists()


def test_different_masks_are_refused_for_a_sparse_merge(ingredients, tmp_path, capsys):
    out = tmp_path / "out"
    code = runner(["train", "method=uniform_soup",
                   f"ingredients=[{ingredients['masked_a']},{ingredients['masked_other']}]", f"hydra.run.dir={out}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "mask fc0.weight_mask" in err and len(err.splitlines()) == 1, err
    # The refusal names the routes that work: copies of one ticket -> soup -> kd, or an ensemble.
    for route in ("method=finetune from=<imp run>@level_<L>", "student.from=<imp run>@level_<L>",
                  "method=ensemble", "experiment=ticket_soup_distill"):
        assert route in err, route
    assert not out.exists()


def test_sms_soups_keep_exactly_each_phases_mask(tmp_path, tiny):
    summary = train_in_process(tiny + ["method=sms", "sparsity=0.75", "sms.phases=2", "sms.copies=2",
                                       "train.steps=10", "train.eval_every=10"], tmp_path / "sms")
    levels = summary["levels"]
    assert [level["level"] for level in levels] == [0, 1, 2]
    assert summary["sparsity"] == pytest.approx(0.75, abs=1e-3)
    assert levels[1]["remaining_fraction"] == pytest.approx(0.5, abs=1e-3)
    for phase in (1, 2):
        level = tmp_path / "sms" / f"level_{phase}"
        mask = load_state(level / "mask.safetensors")
        soup = load_state(level / "model.safetensors")
        for key, value in mask.items():
            assert torch.equal(soup[f"{key}_mask"], value)
            assert bool((soup[key][value == 0] == 0).all())
        # Copies of the phase trained under the same mask, and the soup is their mean.
        copies = [load_state(tmp_path / "sms" / "checkpoints" / f"phase_{phase}_copy_{c}.safetensors") for c in (0, 1)]
        assert not torch.equal(copies[0]["fc0.weight"], copies[1]["fc0.weight"])
        mean = ((copies[0]["fc0.weight"].double() + copies[1]["fc0.weight"].double()) / 2).float()
        assert torch.equal(soup["fc0.weight"], mean)
    # Later phases never revive a pruned weight.
    first = load_state(tmp_path / "sms" / "level_1" / "mask.safetensors")
    second = load_state(tmp_path / "sms" / "level_2" / "mask.safetensors")
    assert all(bool((second[k] <= first[k]).all()) for k in first)


def test_checkpoint_average_of_a_runs_last_snapshots(ingredients, tmp_path):
    import shutil

    from overparam.store.checkpoint import save_state

    run = tmp_path / "snapshots"
    shutil.copytree(ingredients["a"], run)
    base = _weights(ingredients["a"])
    for step, shift in ((10, 100.0), (20, 1.0), (30, 3.0)):
        save_state(run / "checkpoints" / f"step_{step}.safetensors",
                   {k: (v + shift if v.is_floating_point() else v) for k, v in base.items()})
    summary = train_in_process(["method=checkpoint_average", f"ingredients={run}", "checkpoint_average.last=2"],
                               tmp_path / "average")
    assert [row["name"].rsplit("@", 1)[1] for row in summary["rows"][1:]] == ["step_20", "step_30"]
    averaged = _weights(tmp_path / "average")
    torch.testing.assert_close(averaged["fc0.weight"], base["fc0.weight"] + 2.0)


def test_lmc_from_a_checkpoint_trains_two_copies_with_different_data_orders(ingredients, tmp_path):
    summary = train_in_process(["method=lmc", f"lmc.from={ingredients['a']}@model", "lmc.points=3",
                                "lmc.align=false", "train.epochs=null", "train.steps=5", "train.eval_every=5"],
                               tmp_path / "lmc")
    copies = [load_state(tmp_path / "lmc" / "checkpoints" / f"copy_{c}.safetensors") for c in (0, 1)]
    assert not torch.equal(copies[0]["fc0.weight"], copies[1]["fc0.weight"])
    assert [row["alpha"] for row in summary["rows"]] == [0.0, 0.5, 1.0]
    assert summary["barrier_loss"] >= 0.0
    # The run's model is the path's midpoint.
    midpoint = ((copies[0]["fc0.weight"].double() + copies[1]["fc0.weight"].double()) / 2).float()
    torch.testing.assert_close(_weights(tmp_path / "lmc")["fc0.weight"], midpoint)


def test_snapshot_every_feeds_checkpoint_average_last_k(tmp_path):
    """A run with train.snapshot_every keeps step snapshots; last=K averages exactly the last K of them."""
    from overparam.store.checkpoint import load_state

    trained = tmp_path / "trained"
    train_in_process(["model.widths=[16]", "train.epochs=null", "train.steps=12", "train.eval_every=12",
                      "train.batch_size=64", "train.snapshot_every=4"], trained)
    names = sorted(p.name for p in (trained / "checkpoints").glob("step_*.safetensors"))
    assert names == ["step_12.safetensors", "step_4.safetensors", "step_8.safetensors"]
    snaps = {step: load_state(trained / "checkpoints" / f"step_{step}.safetensors") for step in (4, 8, 12)}
    # The last snapshot is the final model; earlier ones differ (training moved the weights).
    torch.testing.assert_close(snaps[12]["fc0.weight"], _weights(trained)["fc0.weight"])
    assert not torch.equal(snaps[4]["fc0.weight"], snaps[8]["fc0.weight"])
    summary = train_in_process(["method=checkpoint_average", f"ingredients={trained}", "checkpoint_average.last=2"],
                               tmp_path / "average")
    assert [row["name"].rsplit("@", 1)[1] for row in summary["rows"][1:]] == ["step_8", "step_12"]
    averaged = _weights(tmp_path / "average")
    assert len(averaged) >= 4
    for key in averaged:
        torch.testing.assert_close(averaged[key], (snaps[8][key] + snaps[12][key]) / 2)
