"""finetune, sparse_finetune and self_pretrain end to end on a tiny MLP."""

from __future__ import annotations

import pytest
import torch
from saved_model import saved_accuracy
from tiny_runs import TINY

from overparam.cli.train import train_in_process
from overparam.errors import UserError
from overparam.store.checkpoint import load_state


def weights(run_dir):
    return load_state(run_dir / "checkpoints" / "model.safetensors")


def changed(before, after):
    return {k for k in before if not torch.equal(before[k], after[k])}


def test_finetune_head_changes_only_the_head(tmp_path, dense_run):
    dense_dir, dense_summary = dense_run
    out = tmp_path / "head"
    summary = train_in_process([*TINY, "method=finetune", f"from={dense_dir}", "finetune.train=head"], out)
    assert changed(weights(dense_dir), weights(out)) == {"fc_out.weight", "fc_out.bias"}
    assert summary["trainable_parameters"] == 16 * 10 + 10
    assert summary["source_test_accuracy"] == pytest.approx(dense_summary["test_accuracy"])
    # What it started from, so that repairs of different sources can be told apart in a table or a claim.
    assert (summary["source_method"], summary["source_sparsity"], summary["source_pattern"]) == ("dense", 0.0, None)


def test_finetune_norm_bias_changes_only_biases(tmp_path, dense_run):
    dense_dir, _ = dense_run
    out = tmp_path / "bias"
    train_in_process([*TINY, "method=finetune", f"from={dense_dir}", "finetune.train=norm_bias"], out)
    assert changed(weights(dense_dir), weights(out)) == {"fc0.bias", "fc_out.bias"}


def test_finetune_needs_a_source(tmp_path):
    with pytest.raises(UserError, match="from=<run dir>"):
        train_in_process([*TINY, "method=finetune"], tmp_path / "none")


def test_sparse_finetune_moves_only_the_chosen_weights(tmp_path, dense_run):
    dense_dir, _ = dense_run
    out = tmp_path / "sparse"
    summary = train_in_process([*TINY, "method=sparse_finetune", f"from={dense_dir}",
                                "sparse_finetune.fraction=0.1"], out)
    before, after = weights(dense_dir), weights(out)
    assert changed(before, after) <= {"fc0.weight", "fc_out.weight"}  # biases are frozen
    moved = sum(int((before[k] != after[k]).sum()) for k in ("fc0.weight", "fc_out.weight"))
    assert summary["trainable_weights"] == round(0.1 * 640) + round(0.1 * 160)
    assert 0 < moved <= summary["trainable_weights"]
    # The moved weights are among the smallest 10% of each layer.
    for key in ("fc0.weight", "fc_out.weight"):
        threshold = before[key].abs().flatten().kthvalue(round(0.1 * before[key].numel())).values
        assert bool((before[key].abs()[before[key] != after[key]] <= threshold).all())


def test_sparse_finetune_with_a_given_mask(tmp_path, dense_run):
    from overparam.store.checkpoint import save_state

    dense_dir, _ = dense_run
    mask = torch.zeros(16, 40)
    mask[:, :5] = 1.0
    save_state(tmp_path / "subset.safetensors", {"fc0.weight": mask})
    out = tmp_path / "given"
    summary = train_in_process([*TINY, "method=sparse_finetune", f"from={dense_dir}",
                                f"sparse_finetune.mask={tmp_path / 'subset.safetensors'}"], out)
    before, after = weights(dense_dir), weights(out)
    assert changed(before, after) == {"fc0.weight"}
    assert summary["trainable_weights"] == 80
    assert torch.equal(before["fc0.weight"][:, 5:], after["fc0.weight"][:, 5:])


def test_self_pretrain_splits_the_steps_and_compares_with_scratch(tmp_path, dense_run):
    summary = train_in_process([*TINY, "method=self_pretrain", "self_pretrain.baseline=true"], tmp_path / "sp")
    assert summary["pretrain_steps"] + summary["finetune_steps"] == summary["steps"] == 20
    # The baseline is the same model trained from scratch for the full length: the dense run itself.
    _, dense_summary = dense_run
    assert summary["scratch_test_accuracy"] == dense_summary["test_accuracy"]
    assert summary["pretrain_reconstruction_loss"] > 0
    assert summary["test_accuracy"] == pytest.approx(saved_accuracy(tmp_path / "sp"))
    # Train accuracy beside test for both arms, and the paired gain of this seed.
    assert 0 <= summary["train_accuracy"] <= 1 and 0 <= summary["scratch_train_accuracy"] <= 1
    assert summary["self_pretrain_gain"] == pytest.approx(summary["test_accuracy"] - summary["scratch_test_accuracy"])


def test_self_pretrain_phases_get_their_own_optimizer_settings(tmp_path, monkeypatch):
    """Reconstruction runs with self_pretrain.optim.* and grad_clip; fine-tuning with the run's own, afresh."""
    from overparam.recipes.tune import self_pretrain

    calls = []

    def recording_fit(model, data, run=None, **kwargs):
        calls.append((kwargs["tag"], kwargs["train"], kwargs["optim"]))
        return real_fit(model, data, run, **kwargs)

    real_fit = self_pretrain.fit
    monkeypatch.setattr(self_pretrain, "fit", recording_fit)
    summary = train_in_process([*TINY, "method=self_pretrain", "optim.name=adam", "optim.lr=0.01",
                                "self_pretrain.optim.name=adamw", "self_pretrain.optim.lr=0.003",
                                "self_pretrain.optim.warmup_steps=3", "self_pretrain.optim.schedule=linear"],
                               tmp_path / "sp")
    (tag, train, optim), (tag2, train2, optim2) = calls
    keys = ("name", "lr", "warmup_steps", "schedule")
    assert tag == "pretrain" and tuple(optim[k] for k in keys) == ("adamw", 0.003, 3, "linear")
    assert train["grad_clip"] == 1.0 and train["steps"] == summary["pretrain_steps"] == 10  # the paper's clipping
    assert tag2 == "finetune" and tuple(optim2[k] for k in keys[:3]) == ("adam", 0.01, 0)
    assert train2["grad_clip"] is None and train2["steps"] == 10
    # The reconstruction error is the held-out masked MSE as a fraction of the held-out inputs' variance.
    assert 0 < summary["pretrain_reconstruction_error"] < 2
    assert summary["pretrain_reconstruction_error"] != summary["pretrain_reconstruction_loss"]


def test_self_pretrain_rejects_a_bad_pretrain_schedule(tmp_path):
    with pytest.raises(UserError, match="self_pretrain.optim.schedule"):
        train_in_process([*TINY, "method=self_pretrain", "self_pretrain.optim.schedule=exp"], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_a_source_with_other_classes_gets_a_fresh_head(dense_run):
    from types import SimpleNamespace

    from overparam.data.bundle import DataBundle
    from overparam.recipes.shared.source import load_from_run
    from overparam.settings import Settings

    dense_dir, _ = dense_run
    x = torch.randn(12, 40)
    y = torch.randint(0, 3, (12,))
    data = DataBundle("toy3", x, y, x, y, num_classes=3)
    settings = Settings({"dataset": {"name": "toy3"}, "seed": 0})
    model = load_from_run(str(dense_dir), SimpleNamespace(settings=settings, data=data, device="cpu"))
    source = weights(dense_dir)
    assert model.fc_out.out_features == 3
    assert torch.equal(model.fc0.weight, source["fc0.weight"])  # the body is the source's
    assert model(x).shape == (12, 3)
