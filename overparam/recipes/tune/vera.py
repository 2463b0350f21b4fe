"""`method=vera`: VeRA (Kopiczko et al. 2024), vector-based random matrix adaptation, as peft 0.22 does it.

Two frozen random matrices are shared by every adapted Linear layer: A (r x in_max) and B (out_max x r),
the largest input and output sizes among the targets, Kaiming-uniform (gain sqrt 2) from a generator seeded
with the run's seed (peft's `projection_prng_key`; equal keys give peft's matrices bit for bit). Each layer
slices A[:, :in] and B[:out] and trains two vectors: W x + b * (B (d * (A dropout(x)))), b (out) zero and
d (r) `vera.d_initial` at the start, so the model starts as an exact no-op and a layer adds out + r
parameters. `vera.merge=true` folds diag(b) B diag(d) A into W; `vera.mask=true` masks that update on a
pruned base (the merged model as sparse), as for LoRA. The shared matrices are saved once in
checkpoints/vera.safetensors beside the vectors (peft's `save_projection=true`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from overparam.recipes.tune.lora import (Adapter, effective_weight, layer_mask, merged_layer, select, train_adapted,
                                        wrap)


def kaiming(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """peft's `_kaiming_init`: uniform(-b, b), b = sqrt(3) * sqrt(2) / sqrt(fan_in), drawn from `generator`."""
    bound = math.sqrt(3.0) * math.sqrt(2) / math.sqrt(shape[1])
    return torch.empty(shape).uniform_(-bound, bound, generator=generator)


def projections(layers: list[nn.Linear], rank: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The shared (A, B): A (rank x largest in), B (largest out x rank), A drawn first (peft's order)."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    largest_in = max(layer.in_features for layer in layers)
    largest_out = max(layer.out_features for layer in layers)
    return kaiming((rank, largest_in), generator), kaiming((largest_out, rank), generator)


class VeRA(Adapter):
    """A frozen base Linear layer plus b * (B (d * (A x))) with shared frozen A, B and trained b, d."""

    def __init__(self, base: nn.Linear, vera_A: torch.Tensor, vera_B: torch.Tensor, d_initial: float,
                 dropout: float = 0.0, mask: bool = False):
        super().__init__()
        self.base = base
        for parameter in base.parameters():
            parameter.requires_grad_(False)
        device, dtype = base.weight.device, base.weight.dtype
        # The shared matrices, registered as non-persistent buffers so they move with the model.
        self.register_buffer("vera_A", vera_A.to(device=device, dtype=dtype), persistent=False)
        self.register_buffer("vera_B", vera_B.to(device=device, dtype=dtype), persistent=False)
        self.vera_lambda_b = nn.Parameter(torch.zeros(base.out_features, device=device, dtype=dtype))
        self.vera_lambda_d = nn.Parameter(torch.full((vera_A.shape[0],), float(d_initial), device=device,
                                                     dtype=dtype))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.masked = layer_mask(base, mask) is not None

    def sliced(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vera_A[:, :self.base.in_features], self.vera_B[:self.base.out_features]

    def delta_weight(self) -> torch.Tensor:
        """diag(b) B diag(d) A, shaped like the base weight (times its mask for a masked update)."""
        a, b = self.sliced()
        delta = (self.vera_lambda_b[:, None] * b) @ (self.vera_lambda_d[:, None] * a)
        return delta * self.base.weight_mask if self.masked else delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dropped = self.dropout(x)
        if self.masked:
            return self.base(x) + F.linear(dropped, self.delta_weight())
        a, b = self.sliced()
        return self.base(x) + self.vera_lambda_b * F.linear(self.vera_lambda_d * F.linear(dropped, a), b)

    @torch.no_grad()
    def merged(self) -> nn.Module:
        return merged_layer(self.base, effective_weight(self.base) + self.delta_weight(), self.masked)

    def trainable(self) -> list[nn.Parameter]:
        return [self.vera_lambda_b, self.vera_lambda_d]

    def state(self) -> dict[str, torch.Tensor]:
        return {"vera_lambda_b": self.vera_lambda_b.detach(), "vera_lambda_d": self.vera_lambda_d.detach()}

    def shared_state(self) -> dict[str, torch.Tensor]:
        return {"vera_A": self.vera_A, "vera_B": self.vera_B}


def add_vera(model: nn.Module, targets: list[str], rank: int, d_initial: float = 0.1, dropout: float = 0.0,
             seed: int = 0, mask: bool = False) -> dict[str, VeRA]:
    """Wrap every Linear layer matching `targets` with VeRA; the projections are seeded by `seed`."""
    names = select(model, targets, (nn.Linear,), "vera.targets")
    vera_A, vera_B = projections([model.get_submodule(n) for n in names], rank, seed)
    return wrap(model, names, lambda base: VeRA(base, vera_A, vera_B, d_initial, dropout, mask))


def run(params, context) -> dict:
    """Adapt `from` (or a fresh model) with VeRA; merge at the end if asked."""
    options = params["vera"]

    def attach(model):
        return add_vera(model, list(options.targets), int(options.rank), float(options.d_initial),
                        float(options.dropout), seed=context.settings.seed, mask=bool(options.mask))
    return train_adapted(params, context, "vera", attach, train_head=options.train_head, merge=options.merge)
