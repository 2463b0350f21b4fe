"""The transformer blocks of a language model, and taking whole blocks or single sublayers out of it.

One view of `model=gpt` (its `blocks`) and `model=hf` (the wrapped transformers model's decoder layer
list: `model.layers` of Llama, `transformer.h` of GPT-2, found as the module list as long as the config's
`num_hidden_layers`). A removed block is gone from the list; a removed sublayer (a block's attention or
MLP with the normalization in front of it) is gone from the block, so the model holds fewer parameters
and runs fewer operations, and the residual stream passes that sublayer unchanged.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from overparam.errors import UserError

SUBLAYERS = ("attn", "mlp")
# The attribute names of each sublayer in transformers' decoder layers: (normalization, module).
HF_SUBLAYERS = {"attn": (("input_layernorm", "self_attn"), ("ln_1", "attn")),
                "mlp": (("post_attention_layernorm", "mlp"), ("ln_2", "mlp"))}


class RemovedAttention(nn.Module):
    """Stands where a transformers decoder layer's attention was: adds nothing to the residual stream."""

    def forward(self, hidden_states=None, *args, **kwargs):
        return torch.zeros_like(hidden_states), None


class RemovedMLP(nn.Module):
    """Stands where a transformers decoder layer's MLP was: adds nothing to the residual stream."""

    def forward(self, hidden_states, *args, **kwargs):
        return torch.zeros_like(hidden_states)


def is_language_model(model: nn.Module) -> bool:
    return bool(getattr(model, "language_model", False))


def _hf_layer_list(lm: nn.Module) -> nn.ModuleList:
    count = getattr(lm.config, "num_hidden_layers", None)
    for _, module in lm.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise UserError(f"{type(lm).__name__}: no list of {count} decoder layers found; layer removal needs one")


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's transformer blocks, in order (model=gpt or model=hf)."""
    if hasattr(model, "blocks") and isinstance(model.blocks, nn.ModuleList):
        return model.blocks
    if hasattr(model, "lm"):
        return _hf_layer_list(model.lm)
    raise UserError(f"{type(model).__name__} is not a transformer language model (model=gpt or model=hf)")


def _list_path(lm: nn.Module, blocks: nn.ModuleList) -> str:
    return next(name for name, module in lm.named_modules() if module is blocks)


def _hf_names(block: nn.Module, kind: str) -> tuple[str, str]:
    for norm, module in HF_SUBLAYERS[kind]:
        if hasattr(block, module) and hasattr(block, norm):
            return norm, module
    raise UserError(f"{type(block).__name__}: no {kind} sublayer known to layer removal")


def has_sublayer(block: nn.Module, kind: str) -> bool:
    """True while `block` still holds its `kind` sublayer."""
    from overparam.models.gpt import GPTBlock, SUBLAYER_MODULES

    if isinstance(block, GPTBlock):
        return getattr(block, SUBLAYER_MODULES[kind][-1]) is not None
    module = getattr(block, _hf_names(block, kind)[1])
    return not isinstance(module, (RemovedAttention, RemovedMLP))


def _swap(block: nn.Module, kind: str) -> dict[str, nn.Module | None]:
    """Take the `kind` sublayer out of `block`; returns what was there (to put back)."""
    from overparam.models.gpt import GPTBlock, SUBLAYER_MODULES

    if isinstance(block, GPTBlock):
        names = SUBLAYER_MODULES[kind]
        old = {name: getattr(block, name) for name in names}
        for name in names:
            setattr(block, name, None)
        return old
    norm, module = _hf_names(block, kind)
    old = {norm: getattr(block, norm), module: getattr(block, module)}
    setattr(block, norm, nn.Identity())
    setattr(block, module, RemovedAttention() if kind == "attn" else RemovedMLP())
    return old


def remove_sublayer(model: nn.Module, block_index: int, kind: str) -> None:
    """Take block `block_index`'s `kind` sublayer (attention or MLP, with its normalization) out of the model."""
    blocks = decoder_blocks(model)
    block = blocks[block_index]
    if not has_sublayer(block, kind):
        raise UserError(f"block {block_index} has no {kind} sublayer left to remove")
    old = _swap(block, kind)
    if hasattr(model, "lm"):
        gone = [f"{_list_path(model.lm, blocks)}.{block_index}.{name}" for name in old]
        model.conv1d_names = [n for n in model.conv1d_names if not any(n == g or n.startswith(g + ".") for g in gone)]


@contextmanager
def without_sublayer(model: nn.Module, block_index: int, kind: str):
    """The model with one sublayer taken out for the duration of the block (put back after)."""
    block = decoder_blocks(model)[block_index]
    old = _swap(block, kind)
    try:
        yield model
    finally:
        for name, module in old.items():
            setattr(block, name, module)


def keep_blocks(model: nn.Module, keep: list[int]) -> nn.Module:
    """Keep only the blocks `keep` (indices, in order) of the model; transformers' config and layer indices follow."""
    blocks = decoder_blocks(model)
    if not keep:
        raise UserError("a language model needs at least one block")
    if len(set(keep)) != len(keep) or any(not 0 <= i < len(blocks) for i in keep):
        raise UserError(f"blocks to keep {list(keep)} must be distinct indices below {len(blocks)}")
    kept = [blocks[i] for i in keep]
    if hasattr(model, "lm"):
        # GPT-2's projections to turn back into Conv1D on export, renumbered with their layers.
        prefix = _list_path(model.lm, blocks) + "."
        renumbered = {str(old): str(new) for new, old in enumerate(keep)}
        names = []
        for name in model.conv1d_names:
            index, _, rest = name[len(prefix):].partition(".") if name.startswith(prefix) else ("", "", "")
            if not name.startswith(prefix):
                names.append(name)
            elif index in renumbered:
                names.append(f"{prefix}{renumbered[index]}.{rest}")
        model.conv1d_names = names
    del blocks[:]
    blocks.extend(kept)
    if hasattr(model, "lm"):
        config = model.lm.config
        config.num_hidden_layers = len(keep)
        if isinstance(getattr(config, "layer_types", None), list):
            config.layer_types = [config.layer_types[i] for i in keep]
        for index, block in enumerate(kept):
            # transformers' caches are indexed by each attention's layer_idx.
            for module in block.modules():
                if hasattr(module, "layer_idx"):
                    module.layer_idx = index
    return model


def removed_sublayers(model: nn.Module) -> list[str]:
    """`["1.attn", ...]`: the sublayers taken out of the model's blocks."""
    return [f"{i}.{kind}" for i, block in enumerate(decoder_blocks(model)) for kind in SUBLAYERS
            if not has_sublayer(block, kind)]


def apply_shape(model: nn.Module, layers=None, removed=None) -> nn.Module:
    """A model=hf model cut to the saved shape: only the folder's layers `layers`, without the sublayers `removed`."""
    from overparam.models.gpt import parse_removed

    if layers is not None:
        layers = list(layers) if not isinstance(layers, (str, bytes)) and hasattr(layers, "__len__") else layers
        if not isinstance(layers, list) or not all(isinstance(i, int) and not isinstance(i, bool)
                                                            for i in layers):
            raise UserError(f"model.layers must be a list of layer indices, got {layers!r}")
        keep_blocks(model, list(layers))
    for block_index, kinds in parse_removed(removed, len(decoder_blocks(model))).items():
        for kind in kinds:
            remove_sublayer(model, block_index, kind)
    return model
