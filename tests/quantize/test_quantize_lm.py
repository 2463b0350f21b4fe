"""method=quantize on language models (model=gpt; model=hf GPT-2 and Llama, slow), and the command line's answer
to bad input (one line, exit 2, nothing written)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))
from lm_helpers import HF_RUN, TINY_LM, runner, tree_digest  # noqa: E402

from overparam.cli.train import train_in_process  # noqa: E402
from overparam.models.quantized import packed_weights  # noqa: E402
from overparam.store.checkpoint import load_state  # noqa: E402
from overparam.store.load import load_run_model  # noqa: E402

GPT = [o for o in TINY_LM if not o.startswith("train.steps")] + ["train.steps=30", "model.width=32"]


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "gpt"
    train_in_process(GPT, out)
    return out


def test_gptq_beats_round_to_nearest_on_a_gpt_and_keeps_embeddings_and_head(tmp_path, gpt_run):
    common = [*GPT, "method=quantize", f"from={gpt_run}", "calib.samples=16", "quant.bits=3", "quant.group_size=16"]
    rtn = train_in_process(common, tmp_path / "rtn")
    gptq = train_in_process([*common, "quant.method=gptq", "quant.act_order=true"], tmp_path / "gptq")
    assert gptq["output_kl"] < rtn["output_kl"]
    assert abs(gptq["test_perplexity"] - gptq["float_test_perplexity"]) < 0.05 * gptq["float_test_perplexity"]
    stored = load_state(tmp_path / "gptq" / "checkpoints" / "model.safetensors")
    names = packed_weights(stored)
    assert names and all(name.startswith("blocks.") for name in names)  # embeddings and head stay float
    assert stored["head.weight"].dtype == torch.float32
    model, _ = load_run_model(tmp_path / "gptq")
    assert model.get_submodule(names[0].removesuffix(".weight")).weight.unique().numel() <= 8 * 32 * 2


def test_gptq_refuses_the_head_of_a_language_model_and_writes_nothing(tmp_path, gpt_run):
    from overparam.errors import UserError

    with pytest.raises(UserError, match="head lies outside its transformer blocks"):
        train_in_process([*GPT, "method=quantize", f"from={gpt_run}", "quant.method=gptq", "quant.output=true"],
                         tmp_path / "head")
    assert not (tmp_path / "head").exists()


@pytest.mark.slow
def test_bad_bits_on_the_command_line_is_one_line_exit_2_and_nothing_written(tmp_path, gpt_run):
    before = tree_digest(tmp_path)
    result = runner(["train", *GPT, "method=quantize", f"from={gpt_run}", "quant.bits=5", "hydra.run.dir=outputs/run"],
                    tmp_path)
    assert result.returncode == 2, result.stderr[-1500:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "quant.bits=5 is not supported" in lines[0], result.stderr[-1500:]
    assert tree_digest(tmp_path) == before


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_hf_models_quantize_with_gptq_and_adaquant(tmp_path, kind):
    from hf_models import save_tiny

    folder = save_tiny(tmp_path / kind, kind, tokenizer=False, vocab=256)
    source = tmp_path / "source"
    base = [*HF_RUN, f"model.path={folder}"]
    train_in_process([*base, "train.steps=20"], source)
    common = [*base, "method=quantize", f"from={source}", "calib.samples=16", "quant.bits=3"]
    rtn = train_in_process(common, tmp_path / "rtn")
    gptq = train_in_process([*common, "quant.method=gptq"], tmp_path / "gptq")
    ada = train_in_process([*common, "quant.method=adaquant", "quant.steps=20"], tmp_path / "ada")
    assert gptq["output_kl"] < rtn["output_kl"]
    assert ada["layers_quantized"] == rtn["layers_quantized"] > 0
    # each layer fits its float output at least as well as round-to-nearest (on the model's output the two
    # are within noise of each other at this size: a 30-step model, KL ~1e-5)
    assert all(f["adaquant_mse"] <= f["rtn_mse"] or f["kept"] == "rtn" for f in ada["layer_fit"].values())
