"""Mask arithmetic: exact counts, global/layerwise thresholds, ERK, random masks, N:M, plans of levels."""

from __future__ import annotations

import math

import pytest
import torch

from overparam.recipes.shared import prunable as common
from overparam.recipes.shared.lottery import plan_levels
from overparam.recipes.shared.masks import erk_counts, random_masks, select_masks
from overparam.recipes.prune.nm import nm_mask
from overparam.recipes.shared.level_stats import flops_per_example


def test_plan_levels_prunes_twenty_percent_per_round_and_ends_exactly_at_the_target():
    plan = plan_levels(78336, 0.2, 0.9)
    assert plan.counts[:4] == [78336, 62669, 50135, 40108]
    assert plan.levels == 12
    assert plan.counts[-1] == 7834  # round(78336 * 0.1)
    assert plan.canonical == [True] * 11 + [False]
    for level in range(1, 11):
        assert plan.counts[level] == math.floor(78336 * 0.8 ** level + 0.5)


def test_plans_of_a_sparsity_sweep_share_every_canonical_level():
    short, long = plan_levels(78336, 0.2, 0.5), plan_levels(78336, 0.2, 0.9)
    assert short.counts[:4] == long.counts[:4]
    assert short.counts[4] == 39168 and not short.canonical[4]
    # A target that is itself canonical (0.8^2 = 0.64 remaining) is shared too.
    exact = plan_levels(78336, 0.2, 0.36)
    assert exact.counts == long.counts[:3] and all(exact.canonical)


def test_plan_of_a_tiny_layer_never_stalls_and_oneshot_has_two_levels():
    plan = plan_levels(5, 0.2, 0.8)
    assert plan.counts == [5, 4, 3, 2, 1]
    assert plan_levels(1000, 0.2, 0.9, oneshot=True).counts == [1000, 100]
    assert plan_levels(1000, 0.2, 0.0).counts == [1000]


def test_global_selection_keeps_exactly_the_largest_scores_and_never_revives():
    scores = {"a.weight": torch.tensor([[5.0, 1.0], [3.0, 0.5]]), "b.weight": torch.tensor([4.0, 2.0, 0.1])}
    masks = select_masks(scores, 3, scope="global")
    assert masks["a.weight"].tolist() == [[1.0, 0.0], [1.0, 0.0]]
    assert masks["b.weight"].tolist() == [1.0, 0.0, 0.0]
    alive = {"a.weight": torch.tensor([[0.0, 1.0], [1.0, 1.0]]), "b.weight": torch.ones(3)}
    masks = select_masks(scores, 3, scope="global", alive=alive)
    assert masks["a.weight"][0, 0] == 0.0  # pruned before: stays pruned although its score is the largest
    assert sum(int(m.sum()) for m in masks.values()) == 3


def test_layerwise_selection_gives_every_layer_the_same_density():
    torch.manual_seed(0)
    scores = {"a.weight": torch.rand(10, 10), "b.weight": torch.rand(50), "c.weight": torch.rand(5, 2)}
    masks = select_masks(scores, 80, scope="layerwise")
    assert [int(m.sum()) for m in masks.values()] == [50, 25, 5]


def test_output_rate_pins_the_output_layer_and_keeps_the_total_exact():
    torch.manual_seed(0)
    scores = {"fc0.weight": torch.rand(100, 40), "fc_out.weight": torch.rand(10, 100)}
    total = 5000
    keep = 1000
    masks = select_masks(scores, keep, scope="global", output_name="fc_out.weight", output_rate=0.5,
                         rate=0.2, alive=None)
    out = int(masks["fc_out.weight"].sum())
    # density (1 - 0.2*0.5)^L where the net has (1-0.2)^L = 0.2
    assert out == math.floor(1000 * 0.2 ** (math.log(0.9) / math.log(0.8)) + 0.5)
    assert sum(int(m.sum()) for m in masks.values()) == keep
    assert total == sum(s.numel() for s in scores.values())


def test_erk_densities_meet_the_target_exactly_and_favour_small_layers():
    shapes = {"fc0.weight": (256, 40), "fc1.weight": (256, 256), "fc_out.weight": (10, 256)}
    total = sum(math.prod(s) for s in shapes.values())
    keep = common.target_count(total, 0.9)
    counts = erk_counts(shapes, keep)
    assert sum(counts.values()) == keep
    density = {k: counts[k] / math.prod(shapes[k]) for k in shapes}
    assert density["fc1.weight"] < density["fc0.weight"] and density["fc1.weight"] < density["fc_out.weight"]
    assert all(d <= 1.0 for d in density.values())
    # A budget that saturates a layer: that layer is dense and the rest still sum exactly.
    counts = erk_counts(shapes, keep * 5)
    assert sum(counts.values()) == keep * 5 and counts["fc_out.weight"] == 2560


def test_random_masks_keep_exact_counts_and_depend_on_the_seed():
    shapes = {"a.weight": (8, 8), "b.weight": (4, 3)}
    first = random_masks({"a.weight": 10, "b.weight": 3}, shapes, torch.Generator().manual_seed(1))
    again = random_masks({"a.weight": 10, "b.weight": 3}, shapes, torch.Generator().manual_seed(1))
    other = random_masks({"a.weight": 10, "b.weight": 3}, shapes, torch.Generator().manual_seed(2))
    assert int(first["a.weight"].sum()) == 10 and int(first["b.weight"].sum()) == 3
    assert torch.equal(first["a.weight"], again["a.weight"])
    assert not torch.equal(first["a.weight"], other["a.weight"])


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (4, 8)])
def test_nm_masks_keep_exactly_n_of_every_m_consecutive_weights_by_magnitude(n, m):
    torch.manual_seed(0)
    weight = torch.randn(6, 16)
    mask = nm_mask(weight, n, m)
    groups = mask.reshape(6, -1, m)
    assert (groups.sum(-1) == n).all()
    kept_min = (weight.abs() * mask + (1 - mask) * 1e9).reshape(6, -1, m).min(-1).values
    dropped_max = (weight.abs() * (1 - mask)).reshape(6, -1, m).max(-1).values
    assert (kept_min >= dropped_max).all()


def test_nm_masks_of_conv_weights_group_along_the_flattened_row():
    weight = torch.randn(3, 4, 2)  # rows of 8
    mask = nm_mask(weight, 2, 4)
    assert mask.shape == weight.shape
    assert (mask.reshape(3, -1, 4).sum(-1) == 2).all()


def test_flops_count_live_weights_only():
    from overparam.models.zoo import mlp

    model = common.make_prunable(mlp((40,), 10, widths=[16]), exclude_output=False)
    flops, dense = flops_per_example(model, (40,))
    assert dense == 2 * (40 * 16 + 16 * 10) == flops
    common.apply_masks_by_name(model, {"fc0.weight": torch.zeros(16, 40)})
    flops, dense = flops_per_example(model, (40,))
    assert flops == 2 * 16 * 10


def test_flops_of_a_conv_net_count_every_output_position_by_hand():
    # Conv1d 1->4, k=5, stride 1, no padding on 40 positions: 36 outputs x 4*1*5 weights; a Linear 4*36 -> 10.
    model = torch.nn.Sequential(torch.nn.Conv1d(1, 4, 5), torch.nn.Flatten(), torch.nn.Linear(144, 10))
    model = common.make_prunable(model, exclude_output=False)
    assert flops_per_example(model, (1, 40)) == (2 * (20 * 36 + 1440), 2 * (20 * 36 + 1440))
    common.apply_masks_by_name(model, {"0.weight": torch.cat([torch.ones(2, 1, 5), torch.zeros(2, 1, 5)]),
                                       "2.weight": torch.ones(10, 144)})
    assert flops_per_example(model, (1, 40)) == (2 * (10 * 36 + 1440), 2 * (20 * 36 + 1440))
    # The model itself may be the layer; a layer the forward never reaches is not counted.
    assert flops_per_example(torch.nn.Linear(40, 10), (40,)) == (800, 800)

    class Unused(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.spare = torch.nn.Linear(40, 10), torch.nn.Linear(40, 10)

        def forward(self, x):
            return self.used(x)

    assert flops_per_example(Unused(), (40,)) == (800, 800)
