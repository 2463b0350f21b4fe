"""SNIP and SynFlow scores on a fixed tiny model, pinned to values computed by hand.

Weight counts alone would pass with a wrong score; these pin each score entry (GraSP's are in
test_grasp.py).
"""

from __future__ import annotations

import torch
from torch import nn

from overparam.recipes.shared import prunable as common
from overparam.recipes.prune.snip import snip_scores
from overparam.recipes.prune.synflow import synflow_masks, synflow_probe, synflow_scores

W = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
X = torch.tensor([[1.0, 2.0], [-1.0, 0.5]], dtype=torch.float64)
Y = torch.tensor([0, 1])

# Two bias-free layers, 2 -> 3 -> 2, for SynFlow's product of absolute weights.
W1 = torch.tensor([[1.0, -2.0], [0.5, 0.0], [-3.0, 1.0]], dtype=torch.float64)
W2 = torch.tensor([[2.0, -1.0, 0.5], [-1.0, 4.0, 1.0]], dtype=torch.float64)


def _one_layer() -> nn.Module:
    model = common.make_prunable(nn.Sequential(nn.Linear(2, 2, bias=False)).double(), exclude_output=False)
    with torch.no_grad():
        model[0].weight.copy_(W)
    return model


def _two_layers() -> nn.Module:
    model = nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False)).double()
    model = common.make_prunable(model, exclude_output=False)
    with torch.no_grad():
        model[0].weight.copy_(W1)
        model[2].weight.copy_(W2)
    return model


def test_snip_is_weight_times_mean_cross_entropy_gradient():
    scores = snip_scores(_one_layer(), X, Y)["0.weight"]
    # By hand: z_n = W x_n, p_n = softmax(z_n), dL/dW = mean_n (p_n - onehot(y_n)) x_n^T, score = |W * dL/dW|.
    onehot = torch.eye(2, dtype=torch.float64)[Y]
    p = torch.softmax(X @ W.T, dim=1)
    grad = sum(torch.outer(p[n] - onehot[n], X[n]) for n in range(2)) / 2
    torch.testing.assert_close(scores, (W * grad).abs(), atol=1e-12, rtol=0)
    # Written out (logits z_1 = [-3, 6.5], z_2 = [-2, 1], computed apart in plain floats).
    pinned = torch.tensor([[0.5236755135, 1.9761373710], [0.2618377567, 2.9642060564]], dtype=torch.float64)
    torch.testing.assert_close(scores, pinned, atol=1e-9, rtol=0)


def test_synflow_scores_are_path_products_of_absolute_weights():
    scores = synflow_scores(synflow_probe(_two_layers()), (2,))
    # R = 1^T |W2| |W1| 1: dR/d|W1|_ij = sum_k |W2|_ki, dR/d|W2|_ki = sum_j |W1|_ij.
    into = W2.abs().sum(dim=0)           # [3, 5, 1.5]
    out_of = W1.abs().sum(dim=1)         # [3, 0.5, 4]
    torch.testing.assert_close(scores["0.weight"], W1.abs() * into[:, None], atol=1e-12, rtol=0)
    torch.testing.assert_close(scores["2.weight"], W2.abs() * out_of[None, :], atol=1e-12, rtol=0)
    torch.testing.assert_close(scores["0.weight"], torch.tensor([[3.0, 6.0], [2.5, 0.0], [4.5, 1.5]],
                                                                dtype=torch.float64))
    torch.testing.assert_close(scores["2.weight"], torch.tensor([[6.0, 0.5, 2.0], [3.0, 2.0, 4.0]],
                                                                dtype=torch.float64))


def test_synflow_rescoring_between_rounds_changes_the_choice():
    """Keeping 4 of 12 weights: one round keeps the 4 highest first scores; two rounds first prune to 7
    (12 * (1/3)^(1/2) = 6.93 -> 7), rescore with the pruned paths gone, then keep 4."""
    w1 = torch.tensor([[2.0, -1.0], [1.0, 3.0], [-2.0, 0.5]], dtype=torch.float64)
    w2 = torch.tensor([[3.0, 0.5, 3.0], [0.5, -4.0, 2.0]], dtype=torch.float64)
    model = _two_layers()
    with torch.no_grad():
        model[0].weight.copy_(w1)
        model[2].weight.copy_(w2)
    one = synflow_masks(model, (2,), keep=4, sparsity=2 / 3, output_rate=1.0, scope="global", rounds=1)
    two = synflow_masks(model, (2,), keep=4, sparsity=2 / 3, output_rate=1.0, scope="global", rounds=2)
    # into = column sums of |W2| = [3.5, 4.5, 5], out_of = row sums of |W1| = [3, 4, 2.5]:
    # W1 scores [[7, 3.5], [4.5, 13.5], [10, 2.5]], W2 scores [[9, 2, 7.5], [1.5, 16, 5]].
    # One round keeps 16, 13.5, 10, 9.
    assert one["0.weight"].tolist() == [[0, 0], [0, 1], [1, 0]]
    assert one["2.weight"].tolist() == [[1, 0, 0], [0, 1, 0]]
    # Two rounds. Round 1 keeps 7: 16, 13.5, 10, 9, 7.5, 7, 5. Rescored on the pruned probe, |W1| rows
    # [2, 0], [0, 3], [2, 0] and |W2| rows [3, 0, 3], [0, 4, 2]: into = [3, 4, 5], out_of = [2, 3, 2], so
    # W1 scores [[6, 0], [0, 12], [10, 0]] and W2 scores [[6, 0, 6], [0, 12, 4]]. Keeping 4: 12, 12, 10
    # and the first of the three 6s in order (W1 before W2): W1[0, 0] instead of W2[0, 0].
    assert two["0.weight"].tolist() == [[1, 0], [0, 1], [1, 0]]
    assert two["2.weight"].tolist() == [[0, 0, 0], [0, 1, 0]]
