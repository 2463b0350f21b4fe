"""Sequence models for 1-D inputs (gru, transformer1d) and the MNIST-1D paper's baselines: exact shapes and
parameter counts, the GRU cell equal to nn.GRU, and every weight matrix reachable by masks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from overparam.errors import UserError
from overparam.models.masked import MaskedLinear, sparsify
from overparam.models.permutation import spec_for
from overparam.models.sequence import gru, transformer1d
from overparam.models.zoo import cnn1d_mnist1d, logreg, mlp, mlp_mnist1d


def test_gru_computes_what_torch_gru_computes_with_the_same_weights():
    torch.manual_seed(0)
    model = gru((40,), 10)
    reference = nn.GRU(1, 6, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for direction, suffix in ((model.forward_gru, ""), (model.backward_gru, "_reverse")):
            direction.ih.weight.copy_(getattr(reference, f"weight_ih_l0{suffix}"))
            direction.ih.bias.copy_(getattr(reference, f"bias_ih_l0{suffix}"))
            direction.hh.weight.copy_(getattr(reference, f"weight_hh_l0{suffix}"))
            direction.hh.bias.copy_(getattr(reference, f"bias_hh_l0{suffix}"))
    x = torch.randn(5, 40)
    expected, _ = reference(x.unsqueeze(-1))
    assert torch.allclose(model.sequence_features(x), expected, atol=1e-6)
    flat = expected.reshape(5, -1)
    assert torch.allclose(model(x), model.fc_out(flat), atol=1e-6)


@pytest.mark.parametrize("build, count", [
    (lambda: logreg((40,), 10), 410),                               # the paper's LinearBase
    (lambda: mlp_mnist1d((40,), 10), 15210),  # MLPBase
    (lambda: cnn1d_mnist1d((40,), 10), 5210),  # ConvBase
    (lambda: gru((40,), 10), 5134),                                 # GRUBase
])
def test_the_mnist1d_papers_models_have_its_parameter_counts(build, count):
    model = build()
    assert sum(p.numel() for p in model.parameters()) == count
    assert model(torch.randn(3, 40)).shape == (3, 10)


def test_residual_mlp_adds_the_second_layers_input():
    torch.manual_seed(0)
    model = mlp((40,), 10, widths=[100, 100], residual=True)
    x = torch.randn(4, 40)
    h = torch.relu(model.fc0(x))
    h = h + torch.relu(model.fc1(h))
    assert torch.allclose(model(x), model.fc_out(h))


@pytest.mark.parametrize("build", [lambda: gru((40,), 10), lambda: transformer1d((40,), 10, width=16, heads=2)])
def test_every_weight_matrix_is_masked_and_a_zero_mask_cuts_it(build):
    torch.manual_seed(0)
    model = sparsify(build())
    matrices = [n for n, p in model.named_parameters() if p.dim() == 2 and n != "position"]
    masked = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, MaskedLinear)}
    assert set(matrices) == masked
    x = torch.randn(4, 40)
    before = model(x)
    first = next(m for m in model.modules() if isinstance(m, MaskedLinear))
    with torch.no_grad():
        first.weight_mask.zero_()
    assert not torch.allclose(model(x), before)


def test_transformer_mask_token_replaces_hidden_positions_only():
    torch.manual_seed(0)
    model = transformer1d((40,), 10, width=16, heads=2, layers=1)
    with torch.no_grad():
        model.mask_token.normal_()
    x = torch.randn(2, 40)
    hidden = torch.zeros(2, 40, dtype=torch.bool)
    assert torch.allclose(model.sequence_features(x, hidden), model.sequence_features(x))
    hidden[0, 3] = True
    changed = model.sequence_features(x, hidden)
    assert torch.allclose(changed[1], model.sequence_features(x)[1])
    assert not torch.allclose(changed[0], model.sequence_features(x)[0])
    # what the model sees at a hidden position does not depend on its value
    y = x.clone()
    y[0, 3] = 100.0
    assert torch.allclose(model.sequence_features(y, hidden), changed, atol=1e-5)


@pytest.mark.parametrize("build", [lambda: gru((40,), 10), lambda: transformer1d((40,), 10)])
def test_permutation_spec_refuses_with_a_reason(build):
    with pytest.raises(UserError, match="no permutation spec"):
        spec_for(build(), (40,))
