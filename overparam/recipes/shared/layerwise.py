"""The layer-wise one-shot driver of Wanda, SparseGPT, GPTQ and magnitude pruning: calibration inputs go through
the model once, block by block, each layer's inputs are collected, a method computes the layer's new weight and
mask, and the already-pruned block's outputs feed the next block (locuslab/wanda `prune_wanda`,
IST-DASLab/sparsegpt `llama_sequential` without `--true-sequential`).

- A language model (`model.language_model`: gpt, or model=hf GPT-2/Llama/OPT/NeoX shapes) is split at its
  transformer blocks (`transformer_blocks`). The first block's inputs (hidden states plus whatever keyword
  arguments the model passes it: attention mask, position ids, rotary embeddings) are caught once; then per
  block: one pass with hooks collecting every target layer's inputs (all layers of the block see the dense
  block's inputs, as in their code), the layers are pruned, and a second pass of the pruned block gives the
  next block's inputs. Target layers must lie inside the blocks (the embeddings and head are not pruned).
- Any other model (mlp, cnn, resnet...) is pruned layer by layer in the order its layers run: the model is run
  up to the layer (stopped there), its inputs collected, the layer pruned, then the next layer.

A Linear's inputs are passed to the method as (batch, ..., in_features); a convolution's (groups=1) unfolded to
(batch, positions, in_channels * kernel), the columns in the order of `weight.flatten(1)`. A method is an object
with

    collector(name, module, columns) -> object with add_batch(inputs)   (inputs as above, float)
    prune(name, module, weight, collector) -> (new_weight | None, keep)  weight: (rows, columns) float copy;
                                                                          keep: bool (rows, columns), True = kept

The driver writes `new_weight` (when given) into the layer, then installs `keep` as its mask on a masked layer
(AND-ed with a mask it already had, so a sparse source stays at least as sparse); on a plain layer the pruned
weights are zeroed. It returns one `LayerRecord` per layer (seconds of the method's `prune`, kept fraction).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# Where the known causal-LM layouts keep their blocks (overparam's gpt, and transformers' GPT-2, Llama/Mistral/
# Qwen, OPT, GPT-NeoX under model=hf's wrapper `lm`).
BLOCK_PATHS = ("blocks", "lm.transformer.h", "lm.model.layers", "lm.model.decoder.layers", "lm.gpt_neox.layers")
PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)


@dataclass
class LayerRecord:
    """One pruned layer: its name, shape (rows x columns of the flattened weight), kept fraction and the
    seconds its method took (collection excluded)."""

    name: str
    rows: int
    columns: int
    kept: float
    seconds: float


class _Stop(Exception):
    """Raised by a hook to end a forward pass once what it needs is caught."""


def transformer_blocks(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """(path, blocks) of a language model's transformer blocks, or None when none of the known paths holds them."""
    for path in BLOCK_PATHS:
        try:
            blocks = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(blocks, nn.ModuleList) and len(blocks):
            return path, blocks
    return None


def prunable_layers(model: nn.Module, exclude: tuple[str, ...] = ()) -> list[str]:
    """Names of the Linear and groups=1 Conv layers (masked or not), in registration order, less `exclude`."""
    return [name for name, module in model.named_modules()
            if isinstance(module, PRUNABLE) and getattr(module, "groups", 1) == 1 and name not in exclude]


def default_targets(model: nn.Module) -> list[str]:
    """The layers one-shot methods prune: a language model's Linear layers inside its blocks (as Wanda and
    SparseGPT: embeddings and head stay dense); a classifier's layers except its output layer."""
    from overparam.models import output_layer_name

    if getattr(model, "language_model", False):
        found = transformer_blocks(model)
        if found is None:
            return []
        path = found[0]
        return [name for name in prunable_layers(model) if name.startswith(path + ".")]
    return prunable_layers(model, exclude=(output_layer_name(model),))


def layer_inputs(module: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """A layer's input as the rows its weight multiplies: (batch, ..., in_features) for a Linear, the unfolded
    patches (batch, positions, in_channels * kernel) for a convolution."""
    if isinstance(module, nn.Linear):
        return inputs
    if module.padding_mode != "zeros":
        inputs = F.pad(inputs, module._reversed_padding_repeated_twice, mode=module.padding_mode)
        padding = (0,) * len(module.kernel_size)
    else:
        padding = module.padding
    if isinstance(padding, str):
        raise ValueError(f"padding={padding!r} convolutions are not unfolded; give explicit padding")
    if isinstance(module, nn.Conv1d):
        patches = F.unfold(inputs.unsqueeze(2), (1, module.kernel_size[0]), dilation=(1, module.dilation[0]),
                           padding=(0, padding[0]), stride=(1, module.stride[0]))
    else:
        patches = F.unfold(inputs, module.kernel_size, dilation=module.dilation, padding=padding,
                           stride=module.stride)
    return patches.transpose(1, 2)


def _apply(name: str, module: nn.Module, method, collector) -> LayerRecord:
    weight = module.weight.detach().flatten(1).float().clone()
    start = time.perf_counter()
    new_weight, keep = method.prune(name, module, weight, collector)
    seconds = time.perf_counter() - start
    keep = keep.reshape(module.weight.shape).to(module.weight.device)
    with torch.no_grad():
        if new_weight is not None:
            module.weight.copy_(new_weight.reshape(module.weight.shape))
        if hasattr(module, "set_mask"):
            module.set_mask(module.weight_mask.bool() & keep)
        else:
            module.weight.mul_(keep)
    kept_mask = module.weight_mask.bool() if hasattr(module, "set_mask") else keep
    return LayerRecord(name=name, rows=weight.shape[0], columns=weight.shape[1],
                       kept=float(kept_mask.float().mean()), seconds=seconds)


def _collecting(module: nn.Module, collector, stop: bool = False):
    def hook(_module, args, _output):
        collector.add_batch(layer_inputs(module, args[0].detach()).float())
        if stop:
            raise _Stop

    return module.register_forward_hook(hook)


@torch.no_grad()
def run_layerwise(model: nn.Module, inputs: torch.Tensor, method, targets: list[str] | None = None,
                  batch_size: int = 8, on_layer=None) -> list[LayerRecord]:
    """Prune `targets` (default `default_targets`) of `model` with `method` on the calibration `inputs` (token
    ids (samples, tokens) or examples), `batch_size` at a time; `on_layer(record)` after each layer."""
    targets = default_targets(model) if targets is None else list(targets)
    was_training = model.training
    model.eval()
    try:
        if getattr(model, "language_model", False):
            records = _by_blocks(model, inputs, method, targets, batch_size, on_layer)
        else:
            records = _by_layers(model, inputs, method, targets, batch_size, on_layer)
    finally:
        model.train(was_training)
    return records


def _collector(method, name: str, module: nn.Module):
    return method.collector(name, module, module.weight[0].numel())


def _feed(model, inputs, batch_size: int, handle) -> None:
    """Run `inputs` through `model` batch by batch while the hook behind `handle` collects (and may stop each
    batch with `_Stop` once it has what it needs); the hook is removed afterwards."""
    try:
        for start in range(0, len(inputs), batch_size):
            try:
                model(inputs[start:start + batch_size])
            except _Stop:
                pass
    finally:
        handle.remove()


def _by_layers(model, inputs, method, targets, batch_size, on_layer) -> list[LayerRecord]:
    records = []
    for name in _execution_order(model, inputs[:1], targets):
        module = model.get_submodule(name)
        collector = _collector(method, name, module)
        _feed(model, inputs, batch_size, _collecting(module, collector, stop=True))
        records.append(_apply(name, module, method, collector))
        if on_layer is not None:
            on_layer(records[-1])
    return records


def _execution_order(model, probe, targets) -> list[str]:
    """`targets` in the order their layers first run (a layer that never runs keeps its place at the end)."""
    order: list[str] = []
    handles = [model.get_submodule(name).register_forward_hook(
        lambda _m, _a, _o, name=name: order.append(name) if name not in order else None) for name in targets]
    try:
        model(probe)
    finally:
        for handle in handles:
            handle.remove()
    return order + [name for name in targets if name not in order]


def _block_output(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def _by_blocks(model, inputs, method, targets, batch_size, on_layer) -> list[LayerRecord]:
    found = transformer_blocks(model)
    if found is None:
        raise ValueError(f"{type(model).__name__}: no transformer blocks at any of {', '.join(BLOCK_PATHS)}")
    path, blocks = found
    outside = [name for name in targets if not name.startswith(path + ".")]
    if outside:
        raise ValueError(f"layers outside the transformer blocks cannot be pruned block by block: {outside[:3]}")

    # The first block's inputs, batch by batch, with every keyword argument the model passes it.
    caught: list[tuple[tuple, dict]] = []

    def catch(_module, args, kwargs):
        caught.append((args, kwargs))
        raise _Stop

    _feed(model, inputs, batch_size, blocks[0].register_forward_pre_hook(catch, with_kwargs=True))

    def call(block, args, kwargs, hidden):
        if args:
            return _block_output(block(hidden, *args[1:], **kwargs))
        return _block_output(block(**{**kwargs, "hidden_states": hidden}))

    hidden = [args[0] if args else kwargs["hidden_states"] for args, kwargs in caught]
    records = []
    for index, block in enumerate(blocks):
        prefix = f"{path}.{index}."
        names = [name for name in targets if name.startswith(prefix)]
        if names:
            modules = {name: model.get_submodule(name) for name in names}
            collectors = {name: _collector(method, name, module) for name, module in modules.items()}
            handles = [_collecting(modules[name], collectors[name]) for name in names]
            try:
                for (args, kwargs), h in zip(caught, hidden):
                    call(block, args, kwargs, h)
            finally:
                for handle in handles:
                    handle.remove()
            for name in names:
                records.append(_apply(name, modules[name], method, collectors[name]))
                if on_layer is not None:
                    on_layer(records[-1])
        hidden = [call(block, args, kwargs, h) for (args, kwargs), h in zip(caught, hidden)]
    return records
