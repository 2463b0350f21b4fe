"""`method=ensemble`: averaged predictions, checked against a hand computation from the ingredients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from overparam.cli.main import main as runner
from overparam.cli.train import train_in_process
from overparam.data import load_dataset
from overparam.recipes.analysis.ensemble import combine
from overparam.store.load import load_run_model, saved_config


def test_combine_is_the_log_of_the_mean_probability_or_of_the_mean_logits():
    a = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[0.0, 3.0], [1.0, 1.0]])
    probs = combine([a, b], "probs").exp()
    expected = (torch.softmax(a.double(), 1) + torch.softmax(b.double(), 1)) / 2
    assert torch.allclose(probs, expected, atol=1e-12)
    # Row 0 by hand: p_a = (e^2, 1)/(e^2+1), p_b = (1, e^3)/(1+e^3).
    pa0, pb0 = math.e ** 2 / (math.e ** 2 + 1), 1 / (1 + math.e ** 3)
    assert probs[0, 0].item() == pytest.approx((pa0 + pb0) / 2, abs=1e-12)
    logits = combine([a, b], "logits").exp()
    assert logits[0, 0].item() == pytest.approx(1 / (1 + math.e ** 0.5), abs=1e-12)  # softmax of (1, 1.5)


def test_ensemble_matches_a_hand_computation_and_reports_each_ingredient(sweep, tmp_path):
    members = [sweep / "2", sweep / "3"]  # the two width-16 runs
    summary = train_in_process(["method=ensemble", f"ingredients=[{members[0]},{members[1]}]"], tmp_path / "ens")
    cfg = saved_config(members[0])
    data = load_dataset(cfg.dataset, cfg.paths.data_dir, seed=int(cfg.seed))
    models = [load_run_model(m, data=data)[0].eval() for m in members]
    with torch.no_grad():
        probs = sum(torch.softmax(m(data.test_x).double(), 1) for m in models) / 2
        singles = [F.cross_entropy(m(data.test_x), data.test_y).item() for m in models]
    assert summary["test_accuracy"] == pytest.approx((probs.argmax(1) == data.test_y).double().mean().item())
    assert summary["test_loss"] == pytest.approx(F.nll_loss(probs.log(), data.test_y).item(), rel=1e-6)
    assert summary["ensemble_size"] == 2 and summary["average"] == "probs"
    rows = summary["rows"]
    assert [r["role"] for r in rows] == ["merged", "ingredient", "ingredient"]
    assert [r["test_loss"] for r in rows[1:]] == pytest.approx(singles, rel=1e-5)
    # The log-likelihood of a mixture is at least the mean of its members' (Jensen), so its loss is at most theirs.
    assert summary["test_loss"] <= sum(singles) / 2 + 1e-9
    assert "val_accuracy" in summary and summary["val_split_shared"] == 1


def test_ensemble_of_one_model_is_that_model_and_logits_average_differs(sweep, tmp_path):
    one = sweep / "2"
    summary = train_in_process(["method=ensemble", f"ingredients=[{one},{one}]"], tmp_path / "same")
    assert summary["test_accuracy"] == summary["rows"][1]["test_accuracy"]
    assert summary["test_loss"] == pytest.approx(summary["rows"][1]["test_loss"], rel=1e-9)
    pair = f"ingredients=[{sweep / '2'},{sweep / '3'}]"
    probs = train_in_process(["method=ensemble", pair], tmp_path / "probs")
    logits = train_in_process(["method=ensemble", pair, "ensemble.average=logits"], tmp_path / "logits")
    assert logits["average"] == "logits" and logits["test_loss"] != probs["test_loss"]


@pytest.mark.parametrize("bad, expected", [
    ("ensemble.average=median", "ensemble.average"),
    ("ingredients=ALL", "does not exist"),
])
def test_bad_ensemble_input_ends_with_one_line(sweep, tmp_path, capsys, bad, expected):
    overrides = [f"ingredients={sweep}", bad] if bad.startswith("ensemble") else [bad.replace("ALL", str(tmp_path / "x"))]
    code = runner(["train", "method=ensemble", *overrides, f"hydra.run.dir={tmp_path / 'bad'}"])
    assert code == 2 and expected in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
