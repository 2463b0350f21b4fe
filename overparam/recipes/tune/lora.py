"""`method=lora`: low-rank adapters (Hu et al. 2021) on chosen Linear/Conv layers, the base frozen, with
peft's variants as settings.

A layer W becomes W x + s B A dropout(x) with A (r x in) and B (out x r); rank r adds r * (in + out)
parameters per Linear (r * (in * k + out) per convolution with kernel volume k). `lora.merge=true` folds
s B A into W at the end, giving plain layers with the same outputs. Each setting equals peft 0.22's LoRA
with the same name on the same inputs (tests/lm/test_peft_equality.py):
- `lora.init=kaiming` (peft's default): A Kaiming-uniform, B zero, so the adapted model starts as an exact no-op.
- `lora.init=pissa` (Meng et al. 2024, PiSSA): A, B from the top-r singular triplets of W, W replaced by
  W - s B A, so the output at step 0 is unchanged up to rounding. `lora.init=olora` (Buyukakyuz 2024,
  OLoRA): the same with the first r columns of Q and rows of R of W = QR. Linear layers, r <= min(in, out).
- `lora.rslora=true` (Kalajdzievski 2023, rsLoRA): s = alpha / sqrt(r) instead of alpha / r.
- `lora.dora=true` (Liu et al. 2024, DoRA): W' = m (W + s B A) / ||W + s B A||, the norm taken per output row
  (per output channel of a convolution) and detached from the graph as peft does (paper, section 4.3); m
  starts at ||W|| and trains, adding `out` parameters per layer. With dropout, the direction term sees the
  dropped input as in peft. A row whose adapted weight is all zero (pruned away) stays zero (peft: 0 / 0).
- `lora.mask=true` on a pruned base (PERP, Zimmerman et al. 2023): the update is (s B A) * M with the layer's
  mask M, in training and at merge, so the merged model is exactly as sparse as the base (and has the base's
  masks). `lora.mask=false` gives the dense update and a dense merged layer. A dense base ignores it.

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
from overparam.recipes.shared.source import load_from_run, source_fields

ADAPTABLE = (nn.Linear, nn.Conv1d, nn.Conv2d)  # masked twins are subclasses, so they qualify too


class Adapter(nn.Module):
    """A frozen base layer (`self.base`) plus trained tensors: LoRA, VeRA, IA3 share this interface."""

    base: nn.Module

    def trainable(self) -> list[nn.Parameter]:
        """The tensors the optimizer moves."""
        raise NotImplementedError

    def state(self) -> dict[str, torch.Tensor]:
        """The adapter's own tensors by key, saved to checkpoints/<method>.safetensors under "<layer>.<key>"."""
        raise NotImplementedError

    def shared_state(self) -> dict[str, torch.Tensor]:
        """Tensors shared by every adapter of the model (saved once, unprefixed)."""
        return {}

    def merged(self) -> nn.Module:
        """The base layer with the adaptation folded into its weights (same outputs)."""
        raise NotImplementedError


def layer_mask(base: nn.Module, masked: bool) -> torch.Tensor | None:
    """The base layer's mask when the update is to be masked (a masked layer and `masked`), else None."""
    from overparam.models.masked import MASKED_TYPES

    return base.weight_mask if masked and isinstance(base, MASKED_TYPES) else None


def effective_weight(base: nn.Module) -> torch.Tensor:
    """The weight the base layer computes with: weight * mask for a masked layer."""
    mask = getattr(base, "weight_mask", None)
    return base.weight if mask is None else base.weight * mask


def apply_weight(base: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`base`'s operation (linear or convolution, its stride/padding) with `weight` and no bias."""
    if isinstance(base, nn.Linear):
        return F.linear(x, weight)
    if base.padding_mode != "zeros":
        raise UserError("LoRA supports zero-padded convolutions only")
    conv = F.conv1d if isinstance(base, nn.Conv1d) else F.conv2d
    return conv(x, weight, None, base.stride, base.padding, base.dilation)


def row_norm(weight: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each output row (output channel) of a weight, shape (out,)."""
    return torch.linalg.norm(weight.reshape(weight.shape[0], -1), dim=1)


def safe(norm: torch.Tensor) -> torch.Tensor:
    """DoRA's divisor: a norm of zero (a row pruned away entirely) counts as one, so that row stays zero
    instead of becoming 0 / 0 (peft divides by zero there; a dense row is never exactly zero in practice)."""
    return torch.where(norm == 0, torch.ones_like(norm), norm)


def merged_layer(base: nn.Module, weight: torch.Tensor, masked: bool) -> nn.Module:
    """`base` carrying `weight`: a masked base stays masked when `masked` (the weight is then zero off the
    mask already), else it becomes a plain dense layer."""
    from overparam.models.masked import MASKED_TYPES, densify

    if isinstance(base, MASKED_TYPES) and not masked:
        holder = nn.Sequential(base)
        densify(holder)
        base = holder[0]
    base.weight.copy_(weight)
    for parameter in base.parameters():
        parameter.requires_grad_(True)
    return base


class LoRA(Adapter):
    """A frozen base Linear/Conv layer plus a trainable low-rank update (optionally DoRA, masked)."""

    def __init__(self, base: nn.Module, rank: int, alpha: float, dropout: float = 0.0, *, rslora: bool = False,
                 dora: bool = False, init: str = "kaiming", mask: bool = False):
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
        self.scale = alpha / math.sqrt(rank) if rslora else alpha / rank
        self.masked = layer_mask(base, mask) is not None
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.Parameter(torch.empty(a_shape, device=base.weight.device, dtype=base.weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(b_shape, device=base.weight.device, dtype=base.weight.dtype))
        # Same initialization as nn.Linear's weight: A random, B zero (the update starts at exactly 0).
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        if init != "kaiming":
            self._principal_init(init)
        self.magnitude = None
        if dora:
            with torch.no_grad():
                norm = row_norm(effective_weight(base) + self.delta_weight())
            self.magnitude = nn.Parameter(norm)

    @torch.no_grad()
    def _principal_init(self, init: str) -> None:
        """PiSSA / OLoRA: A, B from W's top-r SVD / QR factors, and W -= s B A (masked like the update)."""
        if not isinstance(self.base, nn.Linear):
            raise UserError(f"lora.init={init} factorizes Linear weights only; restrict lora.targets to Linear layers")
        if layer_mask(self.base, True) is not None and not self.masked:
            raise UserError(f"lora.init={init} on a pruned base needs lora.mask=true (a dense residual W - s B A "
                            f"would be cut by the mask and change the model's outputs)")
        weight = effective_weight(self.base).float()
        if self.rank > min(weight.shape):
            raise UserError(f"lora.init={init} needs lora.rank <= min(in, out) of every adapted layer; a "
                            f"{weight.shape[1]} -> {weight.shape[0]} layer has {min(weight.shape)}")
        if init == "pissa":
            u, s, vh = torch.linalg.svd(weight, full_matrices=False)
            root = torch.sqrt(s[:self.rank] / self.scale)
            a, b = root[:, None] * vh[:self.rank], u[:, :self.rank] * root[None, :]
        else:
            q, r = torch.linalg.qr(weight)
            a, b = r[:self.rank], q[:, :self.rank]
        self.lora_A.copy_(a)
        self.lora_B.copy_(b)
        self.base.weight.sub_(self.delta_weight())

    def update(self, x: torch.Tensor) -> torch.Tensor:
        """s B A x (for a masked update, ((s B A) * M) x) on an already dropped-out x."""
        if self.masked:
            return apply_weight(self.base, x, self.delta_weight())
        hidden = apply_weight(self.base, x, self.lora_A)
        if isinstance(self.base, nn.Linear):
            return F.linear(hidden, self.lora_B) * self.scale
        conv = F.conv1d if isinstance(self.base, nn.Conv1d) else F.conv2d
        return conv(hidden, self.lora_B) * self.scale

    def direction_scale(self) -> torch.Tensor:
        """DoRA's m / ||W + s B A|| per output row (norm detached), shaped to broadcast over outputs."""
        norm = safe(row_norm(effective_weight(self.base) + self.delta_weight())).detach()
        factor = self.magnitude / norm
        return factor.reshape(-1, *([1] * (self.base.weight.dim() - 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dropped = self.dropout(x)
        if self.magnitude is None:
            return self.base(x) + self.update(dropped)
        factor = self.direction_scale()
        plain = apply_weight(self.base, dropped, effective_weight(self.base))
        return self.base(x) + (factor - 1) * plain + factor * self.update(dropped)

    def delta_weight(self) -> torch.Tensor:
        """s B A shaped like the base weight (times the base's mask for a masked update)."""
        out = self.lora_B.shape[0]
        product = self.lora_B.reshape(out, self.rank) @ self.lora_A.reshape(self.rank, -1)
        delta = (product * self.scale).reshape(self.base.weight.shape)
        return delta * self.base.weight_mask if self.masked else delta

    @torch.no_grad()
    def merged(self) -> nn.Module:
        """A plain layer with the adapted weight: same outputs, no adapter (masked again when the update is)."""
        weight = effective_weight(self.base) + self.delta_weight()
        if self.magnitude is not None:
            weight = weight * (self.magnitude / safe(row_norm(weight))).reshape(-1, *([1] * (weight.dim() - 1)))
        return merged_layer(self.base, weight, self.masked)

    def trainable(self) -> list[nn.Parameter]:
        return [self.lora_A, self.lora_B] + ([self.magnitude] if self.magnitude is not None else [])

    def state(self) -> dict[str, torch.Tensor]:
        found = {"lora_A": self.lora_A, "lora_B": self.lora_B, "lora_magnitude": self.magnitude}
        return {key: value.detach() for key, value in found.items() if value is not None}


def select(model: nn.Module, targets, types: tuple[type, ...], key: str) -> list[str]:
    """Names of the `types` layers whose name matches a pattern (fnmatch) in `targets`."""
    chosen = [name for name, _ in modules_of_type(model, types)
              if any(fnmatch.fnmatchcase(name, p) for p in targets)]
    if not chosen:
        kinds = "/".join(t.__name__ for t in types if t.__module__.startswith("torch"))
        raise UserError(f"{key}={list(targets)} match no {kinds} layer of the model")
    return chosen


def wrap(model: nn.Module, names: list[str], make, seed: int = 0) -> dict[str, nn.Module]:
    """Freeze the model, then replace each named layer by `make(layer)` (random draws seeded by `seed`)."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    adapters = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) + 7)
        for name in names:
            adapters[name] = make(model.get_submodule(name))
            replace_module(model, name, adapters[name])
    return adapters


def add_adapters(model: nn.Module, targets: list[str], rank: int, alpha: float, dropout: float = 0.0,
                 seed: int = 0, **variant) -> dict[str, LoRA]:
    """Wrap every Linear/Conv layer whose name matches a pattern in `targets`; freeze everything else.
    `variant`: rslora, dora, init, mask (see LoRA)."""
    names = select(model, targets, ADAPTABLE, "lora.targets")
    return wrap(model, names, lambda base: LoRA(base, rank, alpha, dropout, **variant), seed)


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold every adapter (anything with `merged()`: LoRA, VeRA, IA3) into its base layer (in place)."""
    for name, module in modules_of_type(model, Adapter):
        replace_module(model, name, module.merged())
    return model


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """{"<layer>.<key>": tensor} of every adapter's own tensors ("<layer>.lora_A", "<layer>.lora_B", ...)."""
    return {f"{name}.{key}": value for name, module in modules_of_type(model, Adapter)
            for key, value in module.state().items()}


def run(params, context) -> dict:
    """Adapt `from` (or a fresh model) with LoRA on the configured data; merge at the end if asked."""
    options = params["lora"]
    variant = {"rslora": bool(options.rslora), "dora": bool(options.dora), "init": str(options.init),
               "mask": bool(options.mask)}

    def attach(model):
        return add_adapters(model, list(options.targets), int(options.rank), float(options.alpha),
                            float(options.dropout), seed=context.settings.seed, **variant)
    return train_adapted(params, context, "lora", attach, train_head=options.train_head, merge=options.merge)


def train_adapted(params, context, tag: str, attach, *, train_head: bool, merge: bool, **fit_hooks) -> dict:
    """The adapter methods' run: load `from` (or a fresh model), `attach(model) -> {name: adapter}`, train the
    adapters (and the head if asked; `fit_hooks`: fit's loss_fn/step_hook), save them to
    checkpoints/<tag>.safetensors, merge at the end if asked."""
    from overparam.engine.evaluate import evaluate

    run = context.run
    setup = context.prepare()
    model = load_from_run(params["from"], setup) if params["from"] else setup.new_model()
    before = sum(p.numel() for p in model.parameters())
    adapters = attach(model)
    trainable = [p for adapter in adapters.values() for p in adapter.trainable()]
    if train_head:
        from overparam.models import output_layer_name

        head = model.get_submodule(output_layer_name(model))
        head = getattr(head, "base", head)
        for parameter in head.parameters():
            parameter.requires_grad_(True)
        trainable += list(head.parameters())
    counts = trainable_summary(model, trainable)
    counts["trainable_fraction"] = counts["trainable_parameters"] / max(counts["parameters_alive"], 1)
    result = fit(model, setup.data, run, tag=tag, label=tag, trainable=trainable, **setup.fit_kwargs(**fit_hooks))
    summary = {**result.flat(), "steps": result.steps, f"{tag}_parameters": sum(p.numel() for p in trainable),
               "base_parameters": before, "adapted_layers": len(adapters), **counts,
               **(source_fields(params["from"]) if params["from"] else {})}
    shared = {key: value for _, module in modules_of_type(model, Adapter)
              for key, value in module.shared_state().items()}
    run.save_checkpoint(tag, {**adapter_state(model), **shared})
    if merge:
        model.eval()
        unmerged = evaluate_logits(model, setup.data.test_x)
        merge_adapters(model)
        merged = evaluate_logits(model, setup.data.test_x)
        summary["merge_max_abs_diff"] = float((merged - unmerged).abs().max())
        summary.update(model_summary(model))
        summary.update(sparsity_of(model))
        final = evaluate(model, setup.data.test_x, setup.data.test_y)
        summary["test_accuracy_merged"] = final["accuracy"]
        run.save_checkpoint("model", model.state_dict())
    else:
        # Unmerged: model.safetensors holds the frozen base (after PiSSA/OLoRA the residual W - s B A, as in
        # peft: the model only together with the adapters); the adapters are in <tag>.safetensors.
        run.save_checkpoint("model", base_state(model))
    return summary


def base_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The frozen base's state_dict under the plain model's names (the adapters' own tensors left out)."""
    owners = [name for name, _ in modules_of_type(model, Adapter)]
    state = {}
    for key, value in model.state_dict().items():
        owner = next((name for name in owners if key.startswith(name + ".")), None)
        if owner is None:
            state[key] = value
        elif key.startswith(owner + ".base."):
            state[owner + key[len(owner) + 5:]] = value
    return state


def sparsity_of(model: nn.Module) -> dict:
    """{"sparsity": the masked share of the prunable weights} when the model has masked layers, else {}."""
    from overparam.models.masked import masked_modules

    layers = masked_modules(model)
    if not layers:
        return {}
    total = sum(m.weight_mask.numel() for m in layers.values())
    return {"sparsity": 1.0 - sum(float(m.weight_mask.sum()) for m in layers.values()) / total}


@torch.no_grad()
def evaluate_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's logits on `x` in eval mode."""
    model.eval()
    return torch.cat([model(x[i:i + 2048]) for i in range(0, len(x), 2048)])
