"""The adapter variants on a pruned base: a masked update merges into a model exactly as sparse as the base;
PiSSA/OLoRA keep a sparse model's outputs only with the masked update; bad input is one line; the CLI runs them.

(Equality with peft, on dense models: tests/lm/test_peft_equality.py.)
"""

from __future__ import annotations

import pytest
import torch

from overparam.errors import UserError
from overparam.models.masked import MASKED_TYPES, apply_masks, masks_of, sparsify
from overparam.recipes.tune.ia3 import add_ia3
from overparam.recipes.tune.lora import add_adapters, merge_adapters
from overparam.recipes.tune.vera import add_vera


def pruned_mlp():
    """70% of the weights pruned at random, and one output row pruned entirely (as structured pruning does)."""
    from overparam.models.zoo import mlp

    torch.manual_seed(0)
    model = sparsify(mlp((40,), 10, widths=[32, 16]))
    masks = {k: (torch.rand_like(v) < 0.3).float() for k, v in masks_of(model).items()}
    masks["fc1.weight"][3] = 0.0
    apply_masks(model, masks)
    return model.eval()


def perturb(adapters):
    """Trained-looking adapters: every trainable tensor moved by noise."""
    with torch.no_grad():
        for adapter in adapters.values():
            for parameter in adapter.trainable():
                parameter.add_(0.5 * torch.randn_like(parameter))


ATTACH = {
    "lora": lambda m: add_adapters(m, ["*"], 2, 4.0, mask=True),
    "dora": lambda m: add_adapters(m, ["*"], 2, 4.0, mask=True, dora=True),
    "pissa": lambda m: add_adapters(m, ["*"], 2, 4.0, mask=True, init="pissa"),
    "olora+dora": lambda m: add_adapters(m, ["*"], 2, 4.0, mask=True, init="olora", dora=True),
    "vera": lambda m: add_vera(m, ["*"], 8, mask=True),
    "ia3": lambda m: add_ia3(m, None, ["fc1"]),
}


@pytest.mark.parametrize("variant", list(ATTACH))
def test_a_masked_update_merges_into_a_model_exactly_as_sparse(variant):
    model = pruned_mlp()
    masks = masks_of(model)
    x = torch.randn(8, 40)
    start = model(x)
    adapters = ATTACH[variant](model)
    with torch.no_grad():
        assert torch.allclose(model(x), start, atol=1e-5)  # no-op at the start (PiSSA/OLoRA: up to rounding)
    perturb(adapters)
    with torch.no_grad():
        unmerged = model(x)
    assert (unmerged - start).abs().max() > 1e-2
    merge_adapters(model)
    layers = {name: m for name, m in model.named_modules() if isinstance(m, MASKED_TYPES)}
    assert sorted(layers) == ["fc0", "fc1", "fc_out"]  # still masked layers, with the base's masks
    for key, mask in masks_of(model).items():
        assert torch.equal(mask, masks[key])
        assert torch.count_nonzero(model.get_submodule(key[:-7]).weight * (1 - mask)) == 0
    with torch.no_grad():
        assert torch.allclose(model(x), unmerged, atol=1e-5)


def test_an_unmasked_update_on_a_pruned_base_merges_dense():
    model = pruned_mlp()
    perturb(add_adapters(model, ["*"], 2, 4.0, mask=False))
    x = torch.randn(8, 40)
    with torch.no_grad():
        unmerged = model(x)
    merge_adapters(model)
    assert not any(isinstance(m, MASKED_TYPES) for m in model.modules())
    assert float((model.fc0.weight == 0).float().mean()) < 0.01
    with torch.no_grad():
        assert torch.allclose(model(x), unmerged, atol=1e-5)


def test_masked_training_moves_only_live_weights():
    """A gradient step on the masked update changes the merged weight only where the mask is one."""
    model = pruned_mlp()
    adapters = add_adapters(model, ["fc0"], 2, 4.0, mask=True, dora=True)
    trainable = [p for a in adapters.values() for p in a.trainable()]
    for _ in range(3):  # plain SGD steps (torch.optim's first step imports far more than this test needs)
        model(torch.randn(16, 40)).square().mean().backward()
        with torch.no_grad():
            for parameter in trainable:
                parameter -= 0.1 * parameter.grad
                parameter.grad = None
    assert model.fc0.lora_B.abs().max() > 0
    mask = model.fc0.base.weight_mask.clone()
    merge_adapters(model)
    assert torch.count_nonzero(model.fc0.weight * (1 - mask)) == 0


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_principal_inits_on_a_pruned_base_need_the_masked_update(init):
    with pytest.raises(UserError, match="needs lora.mask=true"):
        add_adapters(pruned_mlp(), ["*"], 2, 4.0, init=init, mask=False)


@pytest.mark.parametrize("bad, match", [
    (lambda m: add_adapters(m, ["*"], 12, 4.0, init="pissa", mask=True),
     r"needs lora.rank <= min\(in, out\).*16 -> 10"),
    (lambda m: add_vera(m, ["nothing*"], 4), r"vera.targets=\['nothing\*'\] match no Linear layer"),
    (lambda m: add_ia3(m, ["fc0"], ["fc_out"]), r"ia3.feedforward=\['fc_out'\] match none of the target layers"),
])
def test_bad_adapter_input_is_one_line(bad, match):
    with pytest.raises(UserError, match=match):
        bad(pruned_mlp())


def test_principal_init_refuses_convolutions():
    from overparam.models.zoo import cnn1d

    with pytest.raises(UserError, match="factorizes Linear weights only"):
        add_adapters(cnn1d((40,), 10, channels=8), ["*"], 2, 4.0, init="olora")


@pytest.fixture(scope="module")
def ticket(tmp_path_factory):
    """An 80%-sparse one-shot ticket of the tiny MLP (40 -> 16 -> 10)."""
    from tiny_runs import TINY

    from overparam.cli.train import train_in_process

    out = tmp_path_factory.mktemp("adapter_ticket") / "ticket"
    train_in_process([*TINY, "method=oneshot", "sparsity=0.8"], out)
    return out


@pytest.mark.parametrize("overrides, key, count", [
    (["method=lora", "lora.rank=2", "lora.dora=true"], "lora_parameters", 2 * (40 + 16) + 2 * (16 + 10) + 16 + 10),
    (["method=lora", "lora.rank=2", "lora.init=olora", "lora.rslora=true"], "lora_parameters", 2 * (56 + 26)),
    (["method=vera", "vera.rank=8"], "vera_parameters", (16 + 8) + (10 + 8)),
    (["method=ia3"], "ia3_parameters", 16 + 10),
    (["method=adalora", "adalora.init_r=3", "adalora.target_r=1", "adalora.tfinal=5"], "adalora_parameters",
     3 * (40 + 16 + 1) + 3 * (16 + 10 + 1)),
])
def test_each_adapter_runs_from_the_cli_and_its_merged_model_keeps_the_tickets_sparsity(tmp_path, ticket, overrides,
                                                                                         key, count):
    from tiny_runs import TINY

    from overparam.cli.train import train_in_process
    from overparam.models.masked import masked_modules
    from overparam.store.load import load_run_model

    summary = train_in_process([*TINY, *overrides, f"from={ticket}"], tmp_path / "run")
    assert summary[key] == summary["trainable_parameters"] == count
    assert summary["merge_max_abs_diff"] < 1e-5 and summary["sparsity"] == pytest.approx(0.8)
    if "adalora_rank_total" in summary:  # the budget fell to target_r per layer on average
        assert summary["adalora_rank_total"] == 2 and summary["adalora_rank_max"] <= 3
    model, _ = load_run_model(tmp_path / "run")
    assert sum(int(m.weight_mask.sum()) for m in masked_modules(model).values()) == 160
    assert sum(int(torch.count_nonzero(m.weight)) for m in masked_modules(model).values()) <= 160


def test_unmerged_vera_saves_the_shared_matrices_once_beside_the_vectors(tmp_path, ticket):
    from tiny_runs import TINY

    from overparam.cli.train import train_in_process
    from overparam.store.checkpoint import load_state

    train_in_process([*TINY, "method=vera", "vera.rank=8", "vera.merge=false", f"from={ticket}"], tmp_path / "v")
    adapters = load_state(tmp_path / "v" / "checkpoints" / "vera.safetensors")
    assert sorted(adapters) == ["fc0.vera_lambda_b", "fc0.vera_lambda_d", "fc_out.vera_lambda_b",
                                "fc_out.vera_lambda_d", "vera_A", "vera_B"]
    assert tuple(adapters["vera_A"].shape) == (8, 40) and tuple(adapters["vera_B"].shape) == (16, 8)
    base = load_state(tmp_path / "v" / "checkpoints" / "model.safetensors")
    assert "fc0.weight" in base and "fc0.weight_mask" in base and not any("vera" in k for k in base)


def test_adalora_resumes_its_scores_and_rank_pattern_exactly(tmp_path):
    """A run cut at step 6 of 12 and resumed ends with the adapters of an uncut one: the importance scores
    and the rank pattern travel in the resume checkpoint with the model."""
    from overparam.data.bundle import DataBundle
    from overparam.engine import fit
    from overparam.models.zoo import mlp
    from overparam.recipes.tune.adalora import Allocator, add_adalora
    from overparam.store import Run

    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 40, generator=generator), torch.randint(0, 10, (32,), generator=generator)
    data = DataBundle("toy", x, y, x, y, num_classes=10)

    def train(root, steps):
        torch.manual_seed(0)
        model = mlp((40,), 10, widths=[16])
        adapters = add_adalora(model, ["*"], 3, 8.0)
        allocate = Allocator(adapters, target_r=1, tinit=2, tfinal=3, delta_t=1, beta1=0.85, beta2=0.85,
                             total_step=12)
        trainable = [p for a in adapters.values() for p in a.trainable()]
        fit(model, data, Run(root, {"x": 1}).start(), trainable=trainable, seed=0, hardware={"device": "cpu",
            "precision": "fp32"}, train={"steps": steps, "epochs": None, "batch_size": 8, "eval_every": 3},
            optim={"name": "adam", "lr": 0.05, "momentum": 0.0, "weight_decay": 0.0, "schedule": "constant"},
            step_hook=lambda step, m, o: allocate(step - 1))
        return {k: v.clone() for k, v in model.state_dict().items()}, [int(a.kept.sum()) for a in adapters.values()]

    whole, ranks = train(tmp_path / "whole", 12)
    train(tmp_path / "cut", 6)
    resumed, resumed_ranks = train(tmp_path / "cut", 12)
    assert sum(ranks) == 2 and resumed_ranks == ranks
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
