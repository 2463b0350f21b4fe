"""SLERP, NuSLERP, Karcher, Model Stock, SCE and DELLA: by hand, per-layer settings, and from the CLI on MLP runs."""

from __future__ import annotations

import math

import pytest
import torch

from overparam.errors import UserError
from overparam.recipes.merge import gradients, spherical
from overparam.recipes.merge.sparsify import della


def test_slerp_of_orthogonal_rows_stays_on_the_circle_and_colinear_rows_are_linear():
    v0 = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    v1 = torch.tensor([[0.0, 1.0], [2.0, 2.0]], dtype=torch.float64)
    out = spherical.slerp(0.5, v0, v1)
    # Row 0: a quarter circle, halfway is (cos 45, sin 45); row 1 is colinear: the plain mean.
    assert torch.allclose(out[0], torch.tensor([math.sqrt(0.5)] * 2, dtype=torch.float64), atol=1e-15)
    assert torch.equal(out[1], torch.tensor([1.5, 1.5], dtype=torch.float64))


def test_model_stock_ratio_by_hand():
    base = torch.zeros(2, dtype=torch.float64)
    # Two offsets at 60 degrees: cos = 0.5, k = 2, t = 2 * 0.5 / (1 + 0.5) = 2/3 of the way to their mean.
    a, b = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.5, math.sqrt(0.75)], dtype=torch.float64)
    out = spherical.model_stock(base, [a, b])
    assert torch.allclose(out, (2 / 3) * (a + b) / 2, atol=1e-15)


def test_karcher_of_two_unit_vectors_is_the_bisector_scaled_by_the_mean_norm():
    a, b = torch.tensor([2.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 4.0], dtype=torch.float64)
    out = spherical.karcher([a, b], [0.5, 0.5], max_iter=50, tol=1e-12)
    assert torch.allclose(out, 3.0 * torch.tensor([math.sqrt(0.5)] * 2, dtype=torch.float64), atol=1e-12)


def test_della_keep_probability_rises_with_magnitude_rank():
    delta = torch.arange(1, 11, dtype=torch.float64).repeat(4000, 1)  # ranks 1..10 in every row
    kept = della(delta, 0.5, 0.2, torch.Generator().manual_seed(0), rescale="none") != 0
    rates = kept.double().mean(dim=0)
    expected = 0.3 + 0.4 * torch.arange(10, dtype=torch.float64) / 9  # density - eps .. density + eps
    assert torch.allclose(rates, expected, atol=0.03)  # binomial sd <= 0.008 over 4000 rows
    rescaled = della(delta, 0.5, 0.2, torch.Generator().manual_seed(0), rescale="inverse")
    assert torch.equal(rescaled != 0, kept) and torch.allclose(rescaled[0][kept[0]], (delta[0] / expected)[kept[0]])


def test_gradient_lists_and_filters_as_mergekit_evaluates_them():
    names = ["token.weight", "blocks.0.attn.q.weight", "blocks.1.attn.q.weight", "blocks.2.mlp_in.weight", "head.weight"]
    where = gradients.positions(names)
    assert [where[n] for n in names] == [0.0, 0.0, 0.5, 1.0, 0.0]
    # [0, 1, 0.2] at t=0.5 is the middle value; at t=0.75 halfway between 1 and 0.2.
    assert gradients.value_at([0, 1, 0.2], "x", 0.5) == 1.0
    assert gradients.value_at([0, 1, 0.2], "x", 0.75) == pytest.approx(0.6)
    setting = [{"filter": "attn", "value": [0.0, 1.0]}, {"value": 0.3}]
    assert gradients.value_at(setting, "blocks.1.attn.q.weight", 0.5) == 0.5
    assert gradients.value_at(setting, "blocks.1.mlp_in.weight", 0.5) == 0.3
    assert gradients.value_at([{"filter": "attn", "value": 1}], "head.weight", 0) is None
    with pytest.raises(UserError, match="must lie in"):
        gradients.check_setting("slerp.t", [0.0, 1.5], 0.0, 1.0)
    with pytest.raises(UserError, match="must be a number"):
        gradients.check_setting("slerp.t", [{"filter": "attn"}], 0.0, 1.0)


def _weights(path):
    from overparam.store.checkpoint import load_state

    return load_state(path / "checkpoints" / "model.safetensors")


def test_per_tensor_merges_run_from_the_cli_and_slerp_ends_at_its_ingredients(ingredients, tmp_path):
    from overparam.cli.train import train_in_process

    a, b, c = (ingredients[k] for k in "abc")
    two = f"ingredients=[{b},{c}]"
    ends = [train_in_process(["method=slerp", two, f"slerp.t={t}"], tmp_path / f"slerp{t}") for t in (0, 1)]
    assert ends[0]["t"] == 0 and ends[1]["t"] == 1
    for t, source in ((0, b), (1, c)):
        merged, original = _weights(tmp_path / f"slerp{t}"), _weights(source)
        assert all(torch.allclose(merged[k], original[k], atol=1e-6) for k in original)
    gradient = train_in_process(["method=slerp", two, "slerp.t=[{filter:fc_out,value:0.8},{value:0.2}]"],
                                tmp_path / "filtered")
    assert gradient["t"] == [{"filter": "fc_out", "value": 0.8}, {"value": 0.2}]
    runs = {"karcher": [f"ingredients=[{a},{b},{c}]"], "nuslerp": [two, f"base={a}", "nuslerp.weights=[1,3]"],
            "model_stock": [two, f"base={a}"], "sce": [two, f"base={a}", "sce.select_topk=0.5"],
            "della": [two, f"base={a}"], "della_linear": [two, f"base={a}", "della_linear.epsilon=0.1"]}
    for method, overrides in runs.items():
        summary = train_in_process([f"method={method}", *overrides], tmp_path / method)
        assert 0.15 < summary["test_accuracy"] <= 1.0, method  # ten classes: chance is 0.1; the ingredients ~0.26
        assert math.isfinite(summary["test_loss"])


@pytest.mark.parametrize("overrides, words", [
    (["method=slerp", "ingredients=[{a},{b},{c}]"], "ingredients takes at most 2 run(s), got 3"),
    (["method=slerp", "ingredients=[{a},{b}]", "slerp.t=1.5"], "slerp.t=1.5 must lie in [0.0, 1.0]"),
    (["method=slerp", "ingredients=[{a},{wide}]"], "ingredients"),
    (["method=model_stock", "ingredients=[{b},{c}]"], "base is required"),
    (["method=della", "ingredients=[{b},{c}]", "base={a}", "della.density=0.9", "della.epsilon=0.2"],
     "della.density +- della.epsilon must lie inside (0, 1)"),
    (["method=nuslerp", "ingredients=[{a},{b}]", "nuslerp.weights=[1,2,3]"], "nuslerp.weights must be two numbers"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(ingredients, tmp_path, capsys, overrides, words):
    from overparam.cli.main import main as runner

    out = tmp_path / "out"
    args = [o.format(**{k: str(v) for k, v in ingredients.items()}) for o in overrides]
    assert runner(["train", *args, f"hydra.run.dir={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err, err
    assert not out.exists()


def test_task_vector_weights_per_tensor_name_and_block_by_hand():
    from overparam.recipes.merge.task_vectors import TaskVectorMerge, merge

    base = {"blocks.0.attn": torch.zeros(2), "blocks.1.attn": torch.zeros(2), "head": torch.zeros(2)}
    first = {k: torch.ones(2) for k in base}
    second = {k: 3 * torch.ones(2) for k in base}
    # Ingredient 0: 2 on attention tensors, else 0; ingredient 1: a gradient 0 -> 1 over the two blocks (the head,
    # outside the blocks, takes the first value). Sum without normalizing: 2*1 + t*3.
    how = TaskVectorMerge(weights=([{"filter": "attn", "value": 2.0}, {"value": 0.0}], [0.0, 1.0]))
    merged = merge(base, lambda: iter([first, second]), how)
    assert merged["blocks.0.attn"].tolist() == [2.0, 2.0]
    assert merged["blocks.1.attn"].tolist() == [5.0, 5.0]
    assert merged["head"].tolist() == [0.0, 0.0]
    normalized = merge(base, lambda: iter([first, second]), TaskVectorMerge(weights=how.weights, normalize=True))
    assert normalized["blocks.1.attn"].tolist() == pytest.approx([5.0 / 3.0] * 2)  # divided by 2 + 1 (float32)
