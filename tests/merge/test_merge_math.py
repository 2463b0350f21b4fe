"""The merge arithmetic on small hand-computed examples."""

from __future__ import annotations

import pytest
import torch

from omegaconf import OmegaConf

from overparam.recipes.merge import fisher
from overparam.recipes.shared.states import weighted_average
from overparam.recipes.merge.lmc import barrier
from overparam.recipes.merge.sparsify import breadcrumbs as drop_outliers
from overparam.recipes.merge.sparsify import magnitude, random_drop
from overparam.recipes.merge.task_vectors import merge, settings


def _ties(density: float, scale: float, scope: str = "global"):
    return settings("ties", OmegaConf.create({"density": density, "lambda": scale, "scope": scope}))


def _states(*rows):
    return [{"w": torch.tensor(row, dtype=torch.float32)} for row in rows]


def test_magnitude_keeps_exactly_the_largest_entries():
    delta = torch.tensor([0.1, -3.0, 2.0, -0.5, 0.0])
    assert magnitude(delta, 0.4).tolist() == [0.0, -3.0, 2.0, 0.0, 0.0]
    # Ties at the threshold: exactly round(density * n) survive, the earlier one first.
    assert magnitude(torch.tensor([1.0, -1.0, 1.0, 0.5]), 0.5).tolist() == [1.0, -1.0, 0.0, 0.0]


def test_breadcrumbs_drop_the_largest_and_the_smallest():
    delta = torch.tensor([5.0, -4.0, 3.0, -2.0, 1.0, 0.5, -0.25, 0.1, 0.05, 0.01])
    # gamma=0.1 drops |5|; smallest=0.3 drops the three smallest |0.1|, |0.05|, |0.01|.
    assert drop_outliers(delta, 0.1, 0.3).tolist() == [0.0, -4.0, 3.0, -2.0, 1.0, 0.5, -0.25, 0.0, 0.0, 0.0]


def test_random_drop_rescales_survivors():
    delta = torch.ones(1000)
    dropped = random_drop(delta, 0.25, torch.Generator().manual_seed(0))
    survivors = dropped[dropped != 0]
    assert torch.allclose(survivors, torch.full_like(survivors, 4.0))
    assert 200 < len(survivors) < 300


def test_ties_by_hand():
    base = {"w": torch.zeros(4)}
    ingredients = _states([1.0, -2.0, 0.5, 3.0], [2.0, 1.0, -0.5, -1.0], [-0.2, -1.0, 0.1, 2.0])
    # density 0.5 keeps 2 of 4 per task vector: [0,-2,0,3], [2,1,0,0] (tie |1|,|-1|: first), [0,-1,0,2]
    # summed [2,-2,0,5] -> signs [+,-,0,+]; agreeing entries: col0 {2}, col1 {-2,-1}, col2 none, col3 {3,2}
    merged = merge(base, lambda: iter(ingredients), _ties(density=0.5, scale=1.0))
    assert merged["w"].tolist() == pytest.approx([2.0, -1.5, 0.0, 2.5])
    scaled = merge({"w": torch.ones(4)}, lambda: iter([{"w": s["w"] + 1} for s in ingredients]),
                   _ties(density=0.5, scale=0.5))
    assert scaled["w"].tolist() == pytest.approx([2.0, 0.25, 1.0, 2.25])


def test_dare_with_no_drop_is_task_arithmetic_and_drops_are_rescaled():
    base = {"w": torch.tensor([1.0, 1.0, 1.0, 1.0])}
    ingredients = _states([2.0, 0.0, 1.0, 3.0], [1.0, 3.0, 0.0, 1.0])
    plain = merge(base, lambda: iter(ingredients), settings("dare", {"drop": 0.0, "lambda": 0.5}, seed=0))
    # base + 0.5 * ([1,-1,0,2] + [0,2,-1,0])
    assert plain["w"].tolist() == pytest.approx([1.5, 1.5, 0.5, 2.0])
    dropped = merge(base, lambda: iter(ingredients), settings("dare", {"drop": 0.5, "lambda": 1.0}, seed=3))
    # every surviving entry of a task vector is doubled: each result is 1 + 2*(subset sum of the deltas)
    deltas = [[1.0, -1.0, 0.0, 2.0], [0.0, 2.0, -1.0, 0.0]]
    for col, value in enumerate(dropped["w"].tolist()):
        options = {1 + 2 * (a * deltas[0][col] + b * deltas[1][col]) for a in (0, 1) for b in (0, 1)}
        assert min(abs(value - o) for o in options) < 1e-6
    again = merge(base, lambda: iter(ingredients), settings("dare", {"drop": 0.5, "lambda": 1.0}, seed=3))
    assert torch.equal(again["w"], dropped["w"])


def test_breadcrumbs_by_hand():
    base = {"w": torch.zeros(5)}
    ingredients = _states([10.0, 1.0, 2.0, 0.1, 3.0], [0.2, -4.0, 1.0, 0.5, 30.0])
    # beta=0.2 (1 of 5 largest) and gamma=0.2 (1 of 5 smallest) per task vector:
    # [0, 1, 2, 0, 3] and [0, -4, 1, 0.5, 0]
    merged = merge(base, lambda: iter(ingredients), settings("breadcrumbs", {"beta": 0.2, "gamma": 0.2, "lambda": 1.0}))
    assert merged["w"].tolist() == pytest.approx([0.0, -3.0, 3.0, 0.5, 3.0])


def test_task_arithmetic_keeps_masks_and_zeroes_masked_entries():
    base = {"w": torch.tensor([1.0, 1.0, 1.0])}
    mask = torch.tensor([1.0, 0.0, 1.0])
    ingredients = [{"w": torch.tensor([2.0, 0.0, 4.0]), "w_mask": mask}, {"w": torch.tensor([3.0, 0.0, 1.0]), "w_mask": mask}]
    merged = merge(base, lambda: iter(ingredients), settings("task_arithmetic", {"lambda": 1.0}))
    assert merged["w"].tolist() == [4.0, 0.0, 4.0]  # 1 + ([1, -1, 3] + [2, -1, 0]), masked
    assert torch.equal(merged["w_mask"], mask)


def test_weighted_average_of_identical_states_is_the_state():
    state = {"w": torch.randn(7, generator=torch.Generator().manual_seed(0)), "n": torch.tensor(5)}
    average = weighted_average(iter([state, state, state]))
    assert torch.equal(average["w"], state["w"]) and torch.equal(average["n"], state["n"])


def test_fisher_with_equal_fishers_is_the_uniform_average():
    states = _states([1.0, 2.0, -3.0], [3.0, 0.0, 1.0], [2.0, 4.0, 5.0])
    same = {"w": torch.tensor([0.3, 2.0, 7.0])}
    merged = fisher.merge_states(((s, same) for s in states), floor=0.0)
    assert merged["w"].tolist() == pytest.approx([2.0, 2.0, 1.0])
    # Unequal Fishers pull each entry toward the model that cares most about it.
    fishers = [{"w": torch.tensor([1.0, 1.0, 1.0])}, {"w": torch.tensor([3.0, 1.0, 1.0])}]
    merged = fisher.merge_states(zip(states[:2], fishers), weights=[1.0, 1.0], floor=0.0)
    assert merged["w"].tolist() == pytest.approx([(1 + 9) / 4, 1.0, -1.0])


def test_exact_and_empirical_fisher_of_a_linear_model():
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -1.0, 0.2], [0.1, 0.3, -0.4]]))
        model.bias.zero_()
    x = torch.tensor([[1.0, 2.0, 0.5], [-1.0, 0.0, 1.0]])
    y = torch.tensor([0, 1])
    exact = fisher.diagonal_fisher(model, x, y, kind="exact")
    empirical = fisher.diagonal_fisher(model, x, y, kind="empirical")
    expected_exact = torch.zeros(2, 3, dtype=torch.float64)
    expected_empirical = torch.zeros(2, 3, dtype=torch.float64)
    for xi, yi in zip(x.double(), y):
        p = torch.softmax(model.weight.double() @ xi, 0)
        for label in range(2):
            g = torch.outer(torch.eye(2, dtype=torch.float64)[label] - p, xi)  # d log p_label / dW
            expected_exact += p[label] * g ** 2
            if label == yi:
                expected_empirical += g ** 2
    torch.testing.assert_close(exact["weight"], expected_exact / 2)
    torch.testing.assert_close(empirical["weight"], expected_empirical / 2)


def test_barrier_is_the_largest_rise_above_the_chord():
    assert barrier([1.0, 2.0, 3.0]) == 0.0
    assert barrier([1.0, 3.5, 2.0, 3.0]) == pytest.approx(3.5 - (1.0 + (3.0 - 1.0) / 3))
    # The endpoints lie on the chord, so a path below it has barrier 0.
    assert barrier([2.0, 1.0, 2.0]) == 0.0
