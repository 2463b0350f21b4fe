"""GraSP scores: both passes on tempered logits, as the authors' code; values pinned by hand."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from overparam.recipes.shared import prunable as common
from overparam.recipes.prune.grasp import grasp_scores

W = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
X = torch.tensor([[1.0, 2.0], [-1.0, 0.5]], dtype=torch.float64)
Y = torch.tensor([0, 1])


def _one_layer():
    model = common.make_prunable(nn.Sequential(nn.Linear(2, 2, bias=False)).double(), exclude_output=False)
    with torch.no_grad():
        model[0].weight.copy_(W)
    return model


def _closed_form(temperature: float) -> torch.Tensor:
    """w * H g of mean cross-entropy on z = W x / T, by hand: g = mean (p - y) x^T / T,
    H[V] = mean (diag p - p p^T)(V x) x^T / T^2."""
    onehot = torch.eye(2, dtype=torch.float64)[Y]
    p = torch.softmax(X @ W.T / temperature, dim=1)
    g = sum(torch.outer(p[n] - onehot[n], X[n]) for n in range(2)) / (2 * temperature)
    hg = sum(torch.outer((torch.diag(p[n]) - torch.outer(p[n], p[n])) @ (g @ X[n]), X[n])
             for n in range(2)) / (2 * temperature ** 2)
    return W * hg


def test_scores_match_the_hand_computation_at_temperature_2():
    scores = grasp_scores(_one_layer(), X, Y, temperature=2.0)["0.weight"]
    pinned = torch.tensor([[-0.0047603125, 0.0084130781], [0.0023801562, 0.0126196172]], dtype=torch.float64)
    torch.testing.assert_close(scores, pinned, atol=1e-10, rtol=0)
    torch.testing.assert_close(scores, _closed_form(2.0), atol=1e-12, rtol=0)
    # An untempered Hessian pass (g at T=2, H at T=1) ranks the weights differently: entry (0, 1)
    # would score -0.0022 there instead of +0.0084.
    assert scores[0, 1] > 0


def test_temperature_1_is_plain_hessian_gradient():
    scores = grasp_scores(_one_layer(), X, Y, temperature=1.0)["0.weight"]
    pinned = torch.tensor([[-0.0015261766, -0.0005907388], [0.0007630883, -0.0008861083]], dtype=torch.float64)
    torch.testing.assert_close(scores, pinned, atol=1e-10, rtol=0)


def _reference_procedure(model, x, y, temperature):
    """The authors' loop: g summed over two halves, then z = sum_halves g . grad_f(half), backward."""
    weights = list(common.weights_of(model).values())
    half = len(x) // 2
    parts = [(x[:half], y[:half]), (x[half:], y[half:])]
    g = None
    for xs, ys in parts:
        grad = torch.autograd.grad(F.cross_entropy(model(xs) / temperature, ys), weights)
        g = list(grad) if g is None else [a + b for a, b in zip(g, grad)]
    model.zero_grad(set_to_none=True)
    for xs, ys in parts:
        grad_f = torch.autograd.grad(F.cross_entropy(model(xs) / temperature, ys), weights, create_graph=True)
        sum((a.detach() * b).sum() for a, b in zip(g, grad_f)).backward()
    return [w.detach() * w.grad for w in weights]


def test_same_scores_as_the_reference_procedure_up_to_its_factor_4():
    from overparam.models.zoo import mlp

    model = common.make_prunable(mlp((6,), 3, widths=[5]).double(), exclude_output=False)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 6, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 3, (8,), generator=generator)
    ours = grasp_scores(model, x, y, temperature=5.0)
    reference = _reference_procedure(model, x, y, temperature=5.0)
    for score, ref in zip(ours.values(), reference):
        torch.testing.assert_close(4 * score, ref, atol=1e-12, rtol=1e-9)
