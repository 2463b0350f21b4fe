"""gru and transformer1d through the methods end to end (a few steps each): IMP, LoRA, KD, uniform soup, and
self-pretraining's per-position masked reconstruction."""

from __future__ import annotations

import json

import pytest
import torch

from overparam.cli.train import train_in_process

from saved_model import saved_accuracy
from tiny_runs import tiny

TINY = tiny(6, "optim.name=adam", "optim.lr=0.003", "optim.weight_decay=0.0", batch_size=32, width=None)
MODELS = {"gru": ["model=gru", "model.hidden_size=3"],
          "transformer1d": ["model=transformer1d", "model.width=8", "model.heads=2", "model.layers=1",
                            "model.ffn=16"]}


@pytest.fixture(scope="module", params=sorted(MODELS))
def dense(request, tmp_path_factory):
    """(model name, two dense runs of seeds 0 and 1)."""
    root = tmp_path_factory.mktemp(f"seq_{request.param}")
    runs = []
    for seed in (0, 1):
        out = root / f"dense{seed}"
        train_in_process([*TINY, *MODELS[request.param], f"seed={seed}"], out)
        runs.append(out)
    return request.param, runs


def _weights(run_dir, name="model"):
    from safetensors.torch import load_file

    return load_file(str(next((run_dir / "checkpoints").glob(f"{name}*.safetensors"))))


def test_imp_prunes_the_recurrent_and_attention_weights(dense, tmp_path):
    name, _ = dense
    # layerwise: under global magnitude pruning the GRU's few large recurrent weights would all survive
    summary = train_in_process([*TINY, *MODELS[name], "method=imp", "sparsity=0.5", "prune.rate=0.5",
                                "prune.scope=layerwise"], tmp_path / "imp")
    assert abs(summary["sparsity"] - 0.5) < 0.02
    weights = _weights(tmp_path / "imp")
    inner = "forward_gru.hh.weight" if name == "gru" else "blocks.0.q.weight"
    density = float(weights[f"{inner}_mask"].float().mean())
    assert abs(density - 0.5) < 0.1
    assert torch.all(weights[inner][weights[f"{inner}_mask"] == 0] == 0)


def test_lora_adapts_the_sequence_model(dense, tmp_path):
    name, runs = dense
    summary = train_in_process([*TINY, *MODELS[name], "method=lora", f"from={runs[0]}", "lora.rank=2"],
                               tmp_path / "lora")
    assert 0 < summary["trainable_parameters"] < summary["parameters"]
    assert summary["test_accuracy"] == pytest.approx(saved_accuracy(tmp_path / "lora"))


def test_kd_distills_into_the_sequence_model(dense, tmp_path):
    name, runs = dense
    summary = train_in_process([*TINY, *MODELS[name], "method=kd", f"teacher.from={runs[0]}"], tmp_path / "kd")
    assert summary["test_accuracy"] == pytest.approx(saved_accuracy(tmp_path / "kd"))


def test_uniform_soup_is_the_mean_of_the_ingredients(dense, tmp_path):
    name, runs = dense
    train_in_process(["method=uniform_soup", f"ingredients=[{runs[0]},{runs[1]}]"], tmp_path / "soup")
    soup, a, b = _weights(tmp_path / "soup"), _weights(runs[0]), _weights(runs[1])
    for key in a:
        if a[key].is_floating_point():
            assert torch.allclose(soup[key], (a[key] + b[key]) / 2, atol=1e-6), key


def test_self_pretrain_reconstructs_per_position_then_fine_tunes(dense, tmp_path):
    name, _ = dense
    summary = train_in_process([*TINY, *MODELS[name], "method=self_pretrain", "train.steps=8",
                                "self_pretrain.mask_fraction=0.5"], tmp_path / "sp")
    assert summary["pretrain_steps"] == 4 and summary["finetune_steps"] == 4
    assert summary["pretrain_reconstruction_loss"] > 0
    run = json.loads((tmp_path / "sp" / "summary.json").read_text())
    assert run["test_accuracy"] == summary["test_accuracy"]


@pytest.mark.slow  # about 10-20 s (unloaded): a small Transformer through the preset's recipe, both arms
def test_self_pretrain_preset_recipe_learns_to_reconstruct(tmp_path):
    """The preset's recipe (half the positions hidden, AdamW, cosine, warmup, clipping) on a small Transformer:
    the held-out masked reconstruction beats predicting the mean, and both arms report train accuracy."""
    summary = train_in_process(["experiment=self_pretrain", "hydra.mode=RUN", *MODELS["transformer1d"],
                                "train.steps=240", "train.eval_every=240", "optim.warmup_steps=20"], tmp_path / "sp")
    assert summary["pretrain_steps"] == summary["finetune_steps"] == 120
    # Beats predicting the held-out mean (an untrained decoder scores about 1 or above); measured 0.97 here.
    assert summary["pretrain_reconstruction_error"] < 1.0
    assert 0 < summary["train_accuracy"] <= 1 and 0 < summary["scratch_train_accuracy"] <= 1
