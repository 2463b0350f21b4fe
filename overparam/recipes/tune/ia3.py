"""`method=ia3`: (IA)^3 (Liu et al. 2022), learned rescaling of activations, as peft 0.22's IA3 does it.

Each target Linear layer gets one trained vector l, starting at ones (an exact no-op): a feedforward
target rescales its input, W (l * x) + bias (l has `in` entries), any other rescales its output,
l * (W x + bias) (`out` entries, the bias scaled too, as peft does). Merging multiplies W's columns, or
W's rows and the bias, by l; both keep a pruned layer's zeros, so a merged sparse model stays as sparse.
Targets by default are peft's for the model type (GPT-2: c_attn and mlp.c_proj, the latter feedforward;
Llama: k_proj, v_proj, down_proj; the runner's gpt: k, v, mlp_out), every Linear layer with none
feedforward for the other models of the zoo (the classifiers). Default names match a layer's name or its
last components, as peft's target names do; patterns given in ia3.targets / ia3.feedforward are fnmatch
patterns on the full name, as lora.targets.
"""

from __future__ import annotations

import fnmatch

import torch
from torch import nn

from overparam.errors import UserError
from overparam.recipes.tune.lora import Adapter, merged_layer, select, train_adapted, wrap

# peft 0.22's TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING / ..._FEEDFORWARD_MODULES_MAPPING (a subset).
DEFAULTS = {
    "gpt2": (["c_attn", "mlp.c_proj"], ["mlp.c_proj"]),
    "llama": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "mistral": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "qwen2": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "gpt_neox": (["query_key_value", "dense_4h_to_h"], ["dense_4h_to_h"]),
    "opt": (["q_proj", "v_proj", "fc2"], ["fc2"]),
    "gpt": (["k", "v", "mlp_out"], ["mlp_out"]),  # overparam.models.gpt
}


class IA3(Adapter):
    """A frozen base Linear layer whose input (feedforward) or output is rescaled by a trained vector."""

    def __init__(self, base: nn.Linear, feedforward: bool):
        super().__init__()
        self.base = base
        for parameter in base.parameters():
            parameter.requires_grad_(False)
        self.feedforward = feedforward
        size = base.in_features if feedforward else base.out_features
        self.ia3_l = nn.Parameter(torch.ones(size, device=base.weight.device, dtype=base.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.feedforward:
            return self.base(x * self.ia3_l)
        return self.base(x) * self.ia3_l

    @torch.no_grad()
    def merged(self) -> nn.Module:
        base = self.base
        if self.feedforward:
            weight = base.weight * self.ia3_l[None, :]
        else:
            weight = base.weight * self.ia3_l[:, None]
            if base.bias is not None:
                base.bias.mul_(self.ia3_l)
        return merged_layer(base, weight, masked=True)  # scaling keeps every zero: a masked layer stays masked

    def trainable(self) -> list[nn.Parameter]:
        return [self.ia3_l]

    def state(self) -> dict[str, torch.Tensor]:
        return {"ia3_l": self.ia3_l.detach()}


def model_type(model: nn.Module) -> str | None:
    """The key of DEFAULTS for `model`: a Hugging Face model's config.model_type, "gpt" for the runner's gpt."""
    from overparam.models.gpt import GPT

    if isinstance(model, GPT):
        return "gpt"
    config = getattr(getattr(model, "lm", None), "config", None)
    return getattr(config, "model_type", None)


def _suffix(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def choose(model: nn.Module, targets, feedforward) -> tuple[list[str], set[str]]:
    """(target layer names, the feedforward ones among them) from the patterns, or the defaults when null."""
    linear = [name for name, _ in model.named_modules() if isinstance(_, nn.Linear)]
    kind = model_type(model)
    if targets is None and kind in DEFAULTS:
        names = [n for n in linear if any(_suffix(n, t) for t in DEFAULTS[kind][0])]
    else:
        names = select(model, targets if targets is not None else ["*"], (nn.Linear,), "ia3.targets")
    if feedforward is None:
        chosen = DEFAULTS[kind][1] if kind in DEFAULTS and targets is None else []
        fed = {n for n in names if any(_suffix(n, t) for t in chosen)}
    else:
        fed = {n for n in names if any(fnmatch.fnmatchcase(n, p) for p in feedforward)}
        if feedforward and not fed:
            raise UserError(f"ia3.feedforward={list(feedforward)} match none of the target layers")
    if not names:
        raise UserError(f"ia3: no Linear layer named like peft's defaults for {kind}; set ia3.targets")
    return names, fed


def add_ia3(model: nn.Module, targets=None, feedforward=None) -> dict[str, IA3]:
    """Wrap the chosen Linear layers with IA3 (see `choose`)."""
    names, fed = choose(model, targets, feedforward)
    feeds = {id(model.get_submodule(name)): name in fed for name in names}
    return wrap(model, names, lambda base: IA3(base, feeds[id(base)]))


def run(params, context) -> dict:
    """Adapt `from` (or a fresh model) with IA3; merge at the end if asked."""
    options = params["ia3"]
    targets = list(options.targets) if options.targets is not None else None
    feedforward = list(options.feedforward) if options.feedforward is not None else None
    return train_adapted(params, context, "ia3", lambda model: add_ia3(model, targets, feedforward),
                         train_head=options.train_head, merge=options.merge)
