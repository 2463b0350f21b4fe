"""model=hf on tiny random GPT-2 and Llama folders with their own trained tokenizer: prune, LoRA, export back."""

from __future__ import annotations

import json

import pytest
import torch

from hf_models import save_tiny
from lm_helpers import HF_RUN, ok, runner

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    return root, {kind: save_tiny(root / kind, kind) for kind in ("gpt2", "llama")}


@pytest.mark.parametrize("kind,layer", [("gpt2", "lm.transformer.h.0.attn.c_attn"),
                                        ("llama", "lm.model.layers.1.self_attn.q_proj")])
def test_prune_a_local_model_and_export_it_back(folders, kind, layer):
    from transformers import AutoModelForCausalLM

    from overparam.data.text import load

    root, paths = folders
    run = f"outputs/{kind}"
    ok(runner(["train", *HF_RUN, f"model.path={paths[kind]}", "method=oneshot", "sparsity=0.5",
                f"hydra.run.dir={run}"], root))
    summary = json.loads((root / run / "summary.json").read_text())
    assert summary[f"layer_sparsity/{layer}"] > 0.2  # GPT-2's Conv1D and Llama's Linear are both masked
    ok(runner(["export", run, "--to", f"exported_{kind}", "--format", "hf"], root))
    folder = root / f"exported_{kind}"
    assert (folder / "tokenizer.json").is_file() and (folder / "model.safetensors").is_file()
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    data = load("unused", tokenizer=str(paths[kind]), block_size=16, max_chars=20000, val_fraction=0.05)
    # The model's own tokenizer, not bytes: fewer tokens than bytes, a vocabulary of its own.
    assert data.num_classes == 300 and data.bytes_per_token > 1.2
    with torch.no_grad():
        logits = model(input_ids=data.test_x).logits
    loss = float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), data.test_y.flatten()))
    assert loss == pytest.approx(summary["test_loss"], abs=1e-4)
    zeros = sum(int((p == 0).sum()) for n, p in model.named_parameters() if n.endswith("weight") and p.dim() == 2)
    assert zeros >= 0.45 * summary["prunable_weights"]


def test_lora_on_a_gpt2_folder_trains_only_the_adapters(folders):
    root, paths = folders
    ok(runner(["train", *HF_RUN, f"model.path={paths['gpt2']}", "hydra.run.dir=outputs/base"], root))
    ok(runner(["train", *HF_RUN, f"model.path={paths['gpt2']}", "method=lora", "from=outputs/base",
                "hydra.run.dir=outputs/lora"], root))
    base = json.loads((root / "outputs/base/summary.json").read_text())
    lora = json.loads((root / "outputs/lora/summary.json").read_text())
    assert 0 < lora["trainable_parameters"] < base["parameters"] / 5
    assert lora["test_loss"] < base["test_loss"]
