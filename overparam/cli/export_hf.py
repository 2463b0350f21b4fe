"""`runner export <run> --to DIR --format hf`: a language-model run as a Hugging Face folder.

DIR holds config.json, model.safetensors (masks folded in: pruned weights are exact zeros) and the
tokenizer when the run used one, so `AutoModelForCausalLM.from_pretrained(DIR)` gives the run's own
logits. `model=gpt` becomes a `GPT2LMHeadModel` (same arithmetic, untied head); `model=hf` is saved as
the architecture it was loaded as (GPT-2's projections turned back into Conv1D). Everything is written
into a fresh folder beside DIR, checked by loading it back and comparing logits on test blocks, then
renamed into place; `--force` replaces only a folder an earlier export wrote (it holds overparam_export.json).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from overparam.errors import UserError

MARKER = "overparam_export.json"


def gpt_to_transformers(model, context: int):
    """A transformers GPT2LMHeadModel holding the weights of an overparam `gpt` (densified)."""
    import torch
    import transformers

    blocks = list(model.blocks)
    width = model.token.weight.shape[1]
    config = transformers.GPT2Config(
        vocab_size=model.token.weight.shape[0], n_positions=context, n_embd=width, n_layer=len(blocks),
        n_head=model.heads, n_inner=model.mlp, activation_function="gelu_new", tie_word_embeddings=False,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
        architectures=["GPT2LMHeadModel"])
    state = {"transformer.wte.weight": model.token.weight, "transformer.wpe.weight": model.position.weight,
             "transformer.ln_f.weight": model.ln_f.weight, "transformer.ln_f.bias": model.ln_f.bias,
             "lm_head.weight": model.head.weight}
    twin = transformers.GPT2LMHeadModel(config)
    for i, block in enumerate(blocks):
        p, attn = f"transformer.h.{i}.", block.attn
        if attn is not None:
            state[p + "attn.c_attn.weight"] = torch.cat([attn.q.weight, attn.k.weight, attn.v.weight]).T
            state[p + "attn.c_attn.bias"] = torch.cat([attn.q.bias, attn.k.bias, attn.v.bias])
        pairs = (("attn.c_proj", attn.out if attn is not None else None), ("mlp.c_fc", block.mlp_in),
                 ("mlp.c_proj", block.mlp_out), ("ln_1", block.ln1), ("ln_2", block.ln2))
        for theirs, ours in pairs:
            if ours is not None:
                w = ours.weight.T if theirs.startswith(("attn", "mlp")) else ours.weight
                state[p + theirs + ".weight"], state[p + theirs + ".bias"] = w, ours.bias
        # A sublayer removed from a block (FinerCut) has no place in GPT-2's config: it is exported whole
        # with every weight zero, so it adds exactly nothing to the residual stream, as in the run.
        for key, value in twin.state_dict().items():
            if key.startswith(p) and key not in state and key.endswith((".weight", ".bias")):
                state[key] = torch.zeros_like(value)
    twin.load_state_dict({k: v.detach().contiguous().clone() for k, v in state.items()}, strict=False)
    return twin


def _restore_removed_sublayers(model) -> None:
    """A decoder layer that lost a sublayer (FinerCut) is exported whole: the sublayer with every weight zero
    adds exactly nothing, as in the run (transformers' configs have no per-layer sublayer list)."""
    import torch

    from overparam.models.blocks import SUBLAYERS, decoder_blocks, has_sublayer

    blocks = decoder_blocks(model)
    for index, block in enumerate(blocks):
        if all(has_sublayer(block, kind) for kind in SUBLAYERS):
            continue
        whole = type(block)(model.lm.config, layer_idx=index).to(next(model.parameters()).dtype)
        with torch.no_grad():
            for parameter in whole.parameters():
                parameter.zero_()
        own = {}
        for name, module in block.named_modules():
            if isinstance(module, torch.nn.Linear) and isinstance(whole.get_submodule(name), torch.nn.Module) \
                    and type(whole.get_submodule(name)).__name__ == "Conv1D":
                own[name + ".weight"], own[name + ".bias"] = module.weight.T, module.bias
        own = {**{k: v for k, v in block.state_dict().items() if k not in own}, **own}
        whole.load_state_dict(own, strict=False)
        blocks[index] = whole
    model.conv1d_names = [n for n in model.conv1d_names if isinstance(model.lm.get_submodule(n), torch.nn.Linear)]


def hf_to_transformers(model):
    """The wrapped transformers model of a `model=hf` run (densified), its Conv1D layers restored."""
    import torch
    from transformers.pytorch_utils import Conv1D

    from overparam.models.paths import replace_module

    lm = model.lm
    _restore_removed_sublayers(model)
    for name in model.conv1d_names:
        linear = lm.get_submodule(name)
        conv = Conv1D(linear.out_features, linear.in_features)
        with torch.no_grad():
            conv.weight.copy_(linear.weight.T)
            conv.bias.copy_(linear.bias)
        replace_module(lm, name, conv)
    return lm


def _target(to: Path, force: bool) -> None:
    if to.is_symlink() or (to.exists() and not to.is_dir()):
        raise UserError(f"--to {to}: exists and is not a folder an export wrote")
    if to.exists():
        if not force:
            raise UserError(f"--to {to} exists; give --force to replace an earlier export")
        if not (to / MARKER).is_file():
            raise UserError(f"--to {to}: not a folder an earlier export wrote (no {MARKER}); refusing to replace it")


def export_folder(run: str, to: str | Path, *, force: bool = False) -> dict:
    """Write the HF folder for a finished language-model run; returns what overparam_export.json says."""
    import torch
    from omegaconf import OmegaConf

    from overparam.data import load_dataset
    from overparam.models.hf import quiet
    from overparam.models.masked import densify
    from overparam.store.load import RunRef, check_finished, load_run_model, saved_config

    to = Path(to)
    _target(to, force)
    quiet()
    ref = RunRef.parse(run)
    info = check_finished(ref.root)
    saved = saved_config(ref.root)
    name = str(saved.model.get("name"))
    if name not in ("gpt", "hf"):
        raise UserError(f"--format hf exports language models (model=gpt or model=hf); {ref.root} is model={name}")
    data = load_dataset(saved.dataset.to_dict(), saved.paths.data_dir, seed=int(saved.seed), device="cpu")
    model, cfg = load_run_model(ref, data=data)
    model.eval()
    with torch.no_grad():
        expected = model(data.test_x[:8])
    model = densify(model)
    lm = gpt_to_transformers(model, model.context) if name == "gpt" else hf_to_transformers(model)
    tokenizer_dir = cfg.select("dataset.tokenizer")
    staging = to.parent / f".{to.name}.export-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        lm.save_pretrained(str(staging), safe_serialization=True)
        from overparam.models.hf import has_tokenizer, load_tokenizer

        if tokenizer_dir and has_tokenizer(tokenizer_dir):
            load_tokenizer(tokenizer_dir).save_pretrained(str(staging))
        from transformers import AutoModelForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(str(staging), use_safetensors=True, local_files_only=True).eval()
        with torch.no_grad():
            got = loaded(input_ids=data.test_x[:8]).logits
        if not torch.allclose(expected, got, rtol=1e-4, atol=1e-4):
            raise UserError("the exported folder does not reproduce the run's logits (please report this)")
        summary = json.loads((ref.root / "summary.json").read_text()) if (ref.root / "summary.json").is_file() else {}
        meta = {"source": str(ref.root), "level": ref.tag, "method": info.get("method"),
                "config_hash": info.get("config_hash"), "model": name,
                "tokenizer": "the model's own" if tokenizer_dir and has_tokenizer(tokenizer_dir) else
                "UTF-8 bytes (token id = byte value)",
                "metrics": {k: v for k, v in summary.items() if k.startswith(("test_", "val_"))
                            and isinstance(v, (int, float))}}
        (staging / MARKER).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if to.exists():
            shutil.rmtree(to)
        staging.rename(to)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return meta
