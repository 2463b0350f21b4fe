"""LoRA adapters: exact parameter count, exact no-op at the start, merging keeps the outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from overparam.recipes.tune.lora import LoRA, add_adapters, merge_adapters


def zoo(name):
    from overparam.models.zoo import cnn1d, mlp

    torch.manual_seed(0)
    return mlp((40,), 10, widths=[32, 16]) if name == "mlp" else cnn1d((40,), 10, channels=8)


def expected_lora_parameters(model, rank):
    total = 0
    for module in model.modules():
        if isinstance(module, nn.Linear):
            total += rank * (module.in_features + module.out_features)
        elif isinstance(module, nn.Conv1d):
            total += rank * (module.in_channels * module.kernel_size[0] + module.out_channels)
    return total


@pytest.mark.parametrize("name", ["mlp", "cnn1d"])
@pytest.mark.parametrize("rank", [1, 3])
def test_rank_r_adds_exactly_the_expected_parameters_and_starts_as_a_no_op(name, rank):
    model = zoo(name)
    x = torch.randn(5, 40)
    reference = model(x)
    before = sum(p.numel() for p in model.parameters())
    expected = expected_lora_parameters(model, rank)
    adapters = add_adapters(model, ["*"], rank=rank, alpha=2.0 * rank)
    assert sum(p.numel() for p in model.parameters()) - before == expected
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected
    assert torch.equal(model(x), reference)  # B = 0: bit-for-bit the base model
    assert len(adapters) == (3 if name == "mlp" else 4)


@pytest.mark.parametrize("name", ["mlp", "cnn1d"])
def test_merging_gives_the_outputs_of_the_adapter_model(name):
    model = zoo(name)
    add_adapters(model, ["*"], rank=2, alpha=4.0)
    with torch.no_grad():  # a trained-looking update
        for module in model.modules():
            if isinstance(module, LoRA):
                module.lora_B.normal_(0.0, 0.5)
    x = torch.randn(7, 40)
    unmerged = model(x)
    merge_adapters(model)
    assert not any(isinstance(m, LoRA) for m in model.modules())
    assert torch.allclose(model(x), unmerged, atol=1e-5)
    assert set(model.state_dict()) == set(zoo(name).state_dict())  # plain names again


def test_targets_choose_layers_and_merging_a_masked_layer_keeps_its_outputs():
    from overparam.models.masked import apply_masks, masks_of, sparsify

    model = zoo("mlp")
    sparsify(model)
    apply_masks(model, {k: (torch.rand_like(v) < 0.5).float() for k, v in masks_of(model).items()})
    add_adapters(model, ["fc1"], rank=2, alpha=2.0)
    assert isinstance(model.fc1, LoRA) and not isinstance(model.fc0, LoRA)
    with torch.no_grad():
        model.fc1.lora_B.normal_()
    x = torch.randn(3, 40)
    unmerged = model(x)
    merge_adapters(model)
    assert torch.allclose(model(x), unmerged, atol=1e-5)


def test_lora_run_end_to_end_merges_and_saves_a_loadable_model(tmp_path, dense_run):
    from tiny_runs import TINY

    from overparam.cli.train import train_in_process
    from overparam.store.load import load_run_model

    dense_dir, _ = dense_run
    out = tmp_path / "lora"
    summary = train_in_process([*TINY, "method=lora", f"from={dense_dir}", "lora.rank=2", "lora.targets=[fc0,fc1]"], out)
    # The tiny MLP (widths [16]) has fc0 (40 -> 16) and fc_out; the pattern fc1 matches nothing.
    assert summary["lora_parameters"] == 2 * (40 + 16)
    assert summary["merge_max_abs_diff"] < 1e-4
    assert summary["test_accuracy_merged"] == pytest.approx(summary["test_accuracy"], abs=2e-3)
    model, _ = load_run_model(out)
    assert sum(p.numel() for p in model.parameters()) == summary["base_parameters"]


def test_lora_follows_its_params_not_the_config(tmp_path):
    """Called without Hydra, lora reads lora.rank/targets/merge from its typed params, not from the config."""
    from tiny_runs import TINY

    from overparam.cli.train import compose_checked
    from overparam.recipes.context import Context
    from overparam.recipes.tune import lora
    from overparam.specs import all_specs
    from overparam.store import Run

    config = compose_checked([*TINY, "method=lora", "lora.rank=2", "lora.targets=[fc0]", "lora.merge=true"])
    config.pop("hydra", None)
    params = all_specs()["lora"].parse({**config, "lora": {**config["lora"], "rank": 3, "targets": ["fc_out"],
                                                          "merge": False}})
    run = Run(tmp_path / "plain", config, device="cpu", precision="fp32").start()
    summary = lora.run(params, Context.from_dict(config, run))
    # fc_out is 16 -> 10: rank 3 adds 3 * (16 + 10) = 78 parameters (the config's fc0 at rank 2: 2 * (40 + 16) = 112)
    assert summary["adapted_layers"] == 1 and summary["lora_parameters"] == 78
    assert "test_accuracy_merged" not in summary  # params say merge=false; the config says true
    assert sorted(load_keys(tmp_path / "plain" / "checkpoints" / "lora.safetensors")) == \
        ["fc_out.lora_A", "fc_out.lora_B"]


def load_keys(path):
    from overparam.store.checkpoint import load_state

    return list(load_state(path))
