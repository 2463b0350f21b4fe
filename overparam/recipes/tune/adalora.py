"""`method=adalora`: AdaLoRA (Zhang et al. 2023), LoRA whose rank budget moves to the layers that need it, as peft
0.22's AdaLoRA does it.

Each target Linear layer gets an SVD-shaped update W x + s / (r + 1e-5) * B (E * (A dropout(x))) with A
(r x in) and B (out x r) drawn N(0, 0.02) and the singular values E (r) starting at zero, r = `adalora.init_r`,
s = `adalora.alpha` (r when 0). After each optimizer step (0-based step t, as peft's `update_and_allocate(t)`)
the importance of every entry, |p * grad p|, is smoothed (EMA with beta1) and its uncertainty tracked (EMA of
the deviation with beta2); a triplet's score is its E entry's plus the mean scores of its row of A and column
of B. Between `tinit` and T - `tfinal` (T: the run's steps) the total budget falls on a cubic from
init_r * layers to target_r * layers, and every `deltaT` steps the lowest-scored triplets' E entries are
zeroed (they may grow back until the next masking); at step T - tfinal the pattern is fixed and re-applied
after every later step. The loss gains `orth_reg_weight` times the mean of ||A A^T - I||_F and ||B^T B - I||_F.
The scores and the fixed pattern are buffers of the layers, so a resumed run continues them. Where no
triplet is to be dropped yet (a budget still equal to the initial one), masking waits (peft's kthvalue
fails there). `adalora.mask=true` masks the update on a pruned base as for LoRA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from overparam.errors import UserError
from overparam.recipes.tune.lora import (Adapter, effective_weight, layer_mask, merged_layer, select, train_adapted,
                                        wrap)


class AdaLoRA(Adapter):
    """A frozen base Linear layer plus an SVD-shaped update B diag(E) A whose singular values are pruned."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0, mask: bool = False):
        super().__init__()
        self.base = base
        for parameter in base.parameters():
            parameter.requires_grad_(False)
        options = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.rank = rank
        self.scale = (alpha if alpha > 0 else float(rank)) / (float(rank) + 1e-5)
        self.lora_A = nn.Parameter(torch.randn(rank, base.in_features, **options) * 0.02)
        self.lora_E = nn.Parameter(torch.zeros(rank, 1, **options))
        self.lora_B = nn.Parameter(torch.randn(base.out_features, rank, **options) * 0.02)
        for key in ("A", "E", "B"):  # smoothed importance and uncertainty of every entry (resume with the model)
            shape = getattr(self, f"lora_{key}").shape
            self.register_buffer(f"ipt_{key}", torch.zeros(shape, **options))
            self.register_buffer(f"unc_{key}", torch.zeros(shape, **options))
        self.register_buffer("kept", torch.ones(rank, 1, **options))  # the final rank pattern (1: kept)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.masked = layer_mask(base, mask) is not None

    def delta_weight(self) -> torch.Tensor:
        delta = self.lora_B @ (self.lora_A * self.lora_E) * self.scale
        return delta * self.base.weight_mask if self.masked else delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dropped = self.dropout(x)
        if self.masked:
            return self.base(x) + F.linear(dropped, self.delta_weight())
        return self.base(x) + (dropped @ (self.lora_A * self.lora_E).T @ self.lora_B.T) * self.scale

    @torch.no_grad()
    def merged(self) -> nn.Module:
        return merged_layer(self.base, effective_weight(self.base) + self.delta_weight(), self.masked)

    def trainable(self) -> list[nn.Parameter]:
        return [self.lora_A, self.lora_E, self.lora_B]

    def state(self) -> dict[str, torch.Tensor]:
        return {"lora_A": self.lora_A.detach(), "lora_E": self.lora_E.detach(), "lora_B": self.lora_B.detach()}

    @torch.no_grad()
    def track(self, beta1: float, beta2: float) -> None:
        """peft's update_ipt: EMA of |p * grad| and of its deviation from that EMA, for A, E and B."""
        for key in ("A", "E", "B"):
            parameter = getattr(self, f"lora_{key}")
            if parameter.grad is None:
                continue
            ipt = (parameter * parameter.grad).abs()
            smooth = getattr(self, f"ipt_{key}")
            smooth.mul_(beta1).add_((1 - beta1) * ipt)
            getattr(self, f"unc_{key}").mul_(beta2).add_((1 - beta2) * (ipt - smooth).abs())

    def scores(self) -> torch.Tensor:
        """Each triplet's score, shape (r,): its E entry's plus the mean of its A row's and its B column's."""
        a = (self.ipt_A * self.unc_A).mean(dim=1)
        b = (self.ipt_B * self.unc_B).mean(dim=0)
        return (self.ipt_E * self.unc_E).view(-1) + (a + b)

    def orthogonality(self) -> torch.Tensor:
        """||A A^T - I||_F + ||B^T B - I||_F."""
        eye = torch.eye(self.rank, device=self.lora_A.device, dtype=self.lora_A.dtype)
        a, b = self.lora_A, self.lora_B
        return torch.linalg.norm(a @ a.T - eye) + torch.linalg.norm(b.T @ b - eye)


class Allocator:
    """peft's RankAllocator with its model-level schedule (`update_and_allocate`)."""

    def __init__(self, adapters: dict[str, AdaLoRA], *, target_r: int, tinit: int, tfinal: int, delta_t: int,
                 beta1: float, beta2: float, total_step: int):
        if tinit >= total_step - tfinal:
            raise UserError(f"adalora.tinit={tinit} and adalora.tfinal={tfinal} leave no budgeting phase in "
                            f"{total_step} steps: tinit must be < steps - tfinal")
        self.layers = [adapters[name] for name in sorted(adapters)]
        self.init_bgt = sum(layer.rank for layer in self.layers)
        self.target_bgt = target_r * len(self.layers)
        self.tinit, self.tfinal, self.delta_t, self.total = tinit, tfinal, delta_t, total_step
        self.beta1, self.beta2 = beta1, beta2

    def budget(self, step: int) -> tuple[int, bool]:
        """(budget, whether to mask at this step): peft's cubic schedule."""
        if step <= self.tinit:
            return self.init_bgt, False
        if step > self.total - self.tfinal:
            return self.target_bgt, True
        remaining = 1 - (step - self.tinit) / (self.total - self.tfinal - self.tinit)
        return int((self.init_bgt - self.target_bgt) * remaining ** 3 + self.target_bgt), step % self.delta_t == 0

    @torch.no_grad()
    def mask_to_budget(self, budget: int) -> None:
        scores = [layer.scores() for layer in self.layers]
        dropped = self.init_bgt - budget
        if dropped <= 0:
            return
        threshold = torch.kthvalue(torch.cat(scores), k=dropped)[0].item()
        for layer, score in zip(self.layers, scores):
            keep = (score > threshold).to(layer.kept.dtype).view(-1, 1)
            layer.lora_E.mul_(keep)
            layer.kept.copy_(keep)

    @torch.no_grad()
    def __call__(self, step: int) -> None:
        """After the optimizer step with 0-based index `step`."""
        final = self.total - self.tfinal
        if step < final:
            for layer in self.layers:
                layer.track(self.beta1, self.beta2)
            budget, now = self.budget(step)
            if now:
                self.mask_to_budget(budget)
        elif step == final:
            self.mask_to_budget(self.budget(step)[0])
        else:
            for layer in self.layers:
                layer.lora_E.mul_(layer.kept)


def add_adalora(model: nn.Module, targets: list[str], rank: int, alpha: float, dropout: float = 0.0, seed: int = 0,
                mask: bool = False) -> dict[str, AdaLoRA]:
    """Wrap every Linear layer matching `targets` with AdaLoRA (random draws seeded by `seed`)."""
    names = select(model, targets, (nn.Linear,), "adalora.targets")
    return wrap(model, names, lambda base: AdaLoRA(base, rank, alpha, dropout, mask), seed)


def run(params, context) -> dict:
    """Adapt `from` (or a fresh model) with AdaLoRA, reallocating ranks after every step; merge if asked."""
    from overparam.engine.fit import default_loss
    from overparam.engine.optim import total_steps

    options = params["adalora"]
    setup = context.prepare()
    total, _ = total_steps(context.settings.train, len(setup.data.train_x))
    state = {}

    def attach(model):
        adapters = add_adalora(model, list(options.targets), int(options.init_r), float(options.alpha),
                               float(options.dropout), seed=context.settings.seed, mask=bool(options.mask))
        state["allocate"] = Allocator(adapters, target_r=int(options.target_r), tinit=int(options.tinit),
                                      tfinal=int(options.tfinal), delta_t=int(options.delta_t),
                                      beta1=float(options.beta1), beta2=float(options.beta2), total_step=total)
        state["layers"] = list(adapters.values())
        return adapters

    weight = float(options.orth_reg_weight)

    def loss_fn(model, x, y, step, index):
        loss = default_loss(model, x, y, step, index)
        if weight > 0 and model.training:
            layers = state["layers"]
            loss = loss + weight * sum(layer.orthogonality() for layer in layers) / (2 * len(layers))
        return loss

    summary = train_adapted(params, context, "adalora", attach, train_head=options.train_head, merge=options.merge,
                            loss_fn=loss_fn, step_hook=lambda step, model, optimizer: state["allocate"](step - 1))
    ranks = [int(torch.count_nonzero(layer.kept)) for layer in state["layers"]]
    return {**summary, "adalora_rank_total": sum(ranks), "adalora_rank_min": min(ranks), "adalora_rank_max": max(ranks)}
