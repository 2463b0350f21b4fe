"""`method=lora`: low-rank adapters (Hu et al. 2021) on chosen Linear/Conv layers, the base frozen.

A layer W becomes W x + (alpha / r) * B A dropout(x) with A (r x in) random and B (out x r) zero, so
the adapted model starts as an exact no-op and rank r adds r * (in + out) parameters per Linear
(r * (in * k + out) per convolution with kernel volume k). `lora.merge=true` folds B A into W at the
end, giving plain layers with the same outputs.

Written here rather than with `peft`: peft's tuners import transformers and accelerate, wrap the
model (renaming every state_dict key), and know nothing of the masked layers, whose mask must be
respected by the base path of an adapted sparse model.
"""

from __future__ import annotations

import fnmatch
import math

import torch
import torch.nn.functional as F
from torch import nn

from overparam.engine import fit
from overparam.errors import UserError
from overparam.models.counting import trainable_summary
from overparam.models.paths import modules_of_type, replace_module
from overparam.recipes.common import model_summary
from overparam.recipes.shared.source import load_from_run

ADAPTABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)  # masked twins are subclasses, so they qualify too


class LoRA(nn.Module):
    """A frozen base Linear/Conv layer plus a trainable low-rank update."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if isinstance(base, nn.Linear):
            in_size, out_size = base.in_features, base.out_features
            a_shape, b_shape = (rank, in_size), (out_size, rank)
        else:
            if base.groups != 1:
                raise UserError("LoRA on grouped convolutions is not supported")
            a_shape = (rank, base.in_channels, *base.kernel_size)
            b_shape = (base.out_channels, rank, *([1] * len(base.kernel_size)))
        self.base = base
        for parameter in base.parameters():
            parameter.requires_grad_(False)
        self.rank = rank
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Parameter(torch.empty(a_shape, device=base.weight.device, dtype=base.weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(b_shape, device=base.weight.device, dtype=base.weight.dtype))
        # Same initialization as nn.Linear's weight: A random, B zero (the update starts at exactly 0).
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def update(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(x)
        base = self.base
        if isinstance(base, nn.Linear):
            return F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale
        conv = F.conv1d if isinstance(base, nn.Conv1d) else F.conv2d
        if base.padding_mode != "zeros":
            raise UserError("LoRA supports zero-padded convolutions only")
        hidden = conv(x, self.lora_A, None, base.stride, base.padding, base.dilation)
        return conv(hidden, self.lora_B) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.update(x)

    def delta_weight(self) -> torch.Tensor:
        """scale * B A, shaped like the base weight."""
        out = self.lora_B.shape[0]
        product = self.lora_B.reshape(out, self.rank) @ self.lora_A.reshape(self.rank, -1)
        return (product * self.scale).reshape(self.base.weight.shape)

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """A plain layer with weight (masked base weight) + scale * B A: same outputs, no adapter."""
        from overparam.models.masked import MASKED_TYPES, densify

        base = self.base
        if isinstance(base, MASKED_TYPES):
            holder = nn.Sequential(base)
            densify(holder)  # the update is dense: the merged layer is dense too
            base = holder[0]
        base.weight.add_(self.delta_weight())
        for parameter in base.parameters():
            parameter.requires_grad_(True)
        return base


def add_adapters(model: nn.Module, targets: list[str], rank: int, alpha: float, dropout: float = 0.0,
                 seed: int = 0) -> dict[str, LoRA]:
    """Wrap every Linear/Conv layer whose name matches a pattern in `targets`; freeze everything else."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    chosen = [name for name, _ in modules_of_type(model, ADAPTABLE)
              if any(fnmatch.fnmatchcase(name, p) for p in targets)]
    if not chosen:
        raise UserError(f"lora.targets={list(targets)} match no Linear/Conv layer of the model")
    adapters = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) + 7)
        for name in chosen:
            adapters[name] = LoRA(model.get_submodule(name), rank, alpha, dropout)
            replace_module(model, name, adapters[name])
    return adapters


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base layer (in place)."""
    for name, module in modules_of_type(model, LoRA):
        replace_module(model, name, module.merged())
    return model


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """{"<layer>.lora_A": A, "<layer>.lora_B": B} of every adapter."""
    return {f"{name}.{key}": getattr(module, key).detach()
            for name, module in model.named_modules() if isinstance(module, LoRA) for key in ("lora_A", "lora_B")}


def run(params, context) -> dict:
    """Adapt `from` (or a fresh model) with LoRA on the configured data; merge at the end if asked."""
    from overparam.engine.evaluate import evaluate

    settings, run = context.settings, context.run
    setup = context.prepare()
    options = params["lora"]
    model = load_from_run(params["from"], setup) if params["from"] else setup.new_model()
    before = sum(p.numel() for p in model.parameters())
    adapters = add_adapters(model, list(options.targets), int(options.rank), float(options.alpha),
                            float(options.dropout), seed=context.seed)
    trainable = [p for adapter in adapters.values() for p in (adapter.lora_A, adapter.lora_B)]
    if options.train_head:
        from overparam.models import output_layer_name

        head = model.get_submodule(output_layer_name(model))
        head = head.base if isinstance(head, LoRA) else head
        for parameter in head.parameters():
            parameter.requires_grad_(True)
        trainable += list(head.parameters())
    counts = trainable_summary(model, trainable)
    result = fit(model, setup.data, run, tag="lora", label="lora", trainable=trainable, **setup.fit_kwargs())
    summary = {**result.flat(), "steps": result.steps, "lora_parameters": sum(p.numel() for p in trainable),
               "base_parameters": before, "adapted_layers": len(adapters), **counts}
    run.save_checkpoint("lora", adapter_state(model))
    if options.merge:
        model.eval()
        unmerged = evaluate_logits(model, setup.data.test_x)
        merge_adapters(model)
        merged = evaluate_logits(model, setup.data.test_x)
        summary["merge_max_abs_diff"] = float((merged - unmerged).abs().max())
        summary.update(model_summary(model))
        final = evaluate(model, setup.data.test_x, setup.data.test_y)
        summary["test_accuracy_merged"] = final["accuracy"]
        run.save_checkpoint("model", model.state_dict())
    else:
        # Unmerged: model.safetensors holds the frozen base as loaded; the adapters are in lora.safetensors.
        base_state = {k.replace(".base.", "."): v for k, v in model.state_dict().items() if ".lora_" not in k}
        run.save_checkpoint("model", base_state)
    return summary


@torch.no_grad()
def evaluate_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's logits on `x` in eval mode."""
    model.eval()
    return torch.cat([model(x[i:i + 2048]) for i in range(0, len(x), 2048)])
