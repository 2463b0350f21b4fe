"""Sequence models for 1-D inputs (a signal of length L, one value per step): a GRU and a Transformer encoder.

Both are built from `nn.Linear` layers only (no fused `nn.GRU` / `nn.MultiheadAttention` parameters), so
`sparsify` can mask every weight matrix, LoRA can adapt it, and merging sees plain named tensors.

- `gru`: the MNIST-1D paper's GRUBase (Greydanus 2020, `notebooks/models.py` of its code): a bidirectional
  GRU with 6 hidden units reading one value per step, its outputs at all L steps flattened into a linear
  classifier (5,134 parameters at L=40, as the paper's). The cell is nn.GRU's (gates r, z, n; PyTorch's
  equations and initialization), written as an input Linear `ih` (applied to all steps at once) and a
  hidden Linear `hh` per direction.
- `transformer1d`: a small pre-norm Transformer encoder: each value is a token (a Linear embedding plus a
  learned position embedding), `layers` blocks of multi-head self-attention (q, k, v, out Linears) and a
  ReLU feed-forward net, a final LayerNorm, mean pooling, a linear classifier `fc_out`.

`sequence_features(x, hidden=None)` returns per-position features (N, L, F) for self-pretraining: the
Transformer replaces the tokens at `hidden` positions with a learned mask embedding; the GRU reads them
as zeros (it has no token embedding to replace). `permutation_spec()` refuses: the GRU's gates interleave
hidden units in strides and attention heads tie units across q/k/v, which the spec format does not express.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from overparam.errors import UserError


def _sequence(x: torch.Tensor) -> torch.Tensor:
    """(N, L) or (N, 1, L) -> (N, L, 1)."""
    if x.dim() == 3:
        x = x.transpose(1, 2)
    elif x.dim() == 2:
        x = x.unsqueeze(-1)
    return x


class GRUDirection(nn.Module):
    """One direction of a GRU layer: nn.GRU's cell, with `ih` and `hh` as Linear layers."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.ih = nn.Linear(input_size, 3 * hidden_size)
        self.hh = nn.Linear(hidden_size, 3 * hidden_size)
        bound = 1.0 / math.sqrt(hidden_size)  # nn.GRU's initialization: U(-1/sqrt(H), 1/sqrt(H)) everywhere
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def forward(self, x: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """x (N, L, in) -> outputs (N, L, H), h0 = 0."""
        gates_x = self.ih(x)  # all steps at once
        h = x.new_zeros(x.shape[0], self.hidden_size)
        steps = range(x.shape[1] - 1, -1, -1) if reverse else range(x.shape[1])
        outputs: list[torch.Tensor] = [None] * x.shape[1]  # type: ignore[list-item]
        for t in steps:
            r_x, z_x, n_x = gates_x[:, t].chunk(3, dim=-1)
            r_h, z_h, n_h = self.hh(h).chunk(3, dim=-1)
            r = torch.sigmoid(r_x + r_h)
            z = torch.sigmoid(z_x + z_h)
            n = torch.tanh(n_x + r * n_h)
            h = (1 - z) * n + z * h
            outputs[t] = h
        return torch.stack(outputs, dim=1)


class GRUClassifier(nn.Module):
    """MNIST-1D's GRUBase: (bi)directional GRU, outputs of every step flattened into `fc_out`."""

    output_layer = "fc_out"

    def __init__(self, length: int, in_channels: int, hidden_size: int, num_classes: int, bidirectional: bool):
        super().__init__()
        self.forward_gru = GRUDirection(in_channels, hidden_size)
        self.backward_gru = GRUDirection(in_channels, hidden_size) if bidirectional else None
        directions = 2 if bidirectional else 1
        self.fc_out = nn.Linear(directions * hidden_size * length, num_classes)

    def sequence_features(self, x: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        x = _sequence(x)
        if hidden is not None:
            x = x.masked_fill(hidden.view(x.shape[0], x.shape[1], 1), 0.0)
        out = self.forward_gru(x)
        if self.backward_gru is not None:
            out = torch.cat([out, self.backward_gru(x, reverse=True)], dim=-1)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.sequence_features(x).flatten(1))

    def permutation_spec(self):
        raise UserError("gru has no permutation spec: its gates interleave hidden units (rows i, H+i, 2H+i), "
                        "which a spec of contiguous blocks cannot express; merge runs of one init instead")


def gru(input_shape, num_classes: int, hidden_size: int = 6, bidirectional: bool = True) -> nn.Module:
    """MNIST-1D's GRU (hidden 6, bidirectional, all steps into the classifier); input (N, L) or (N, C, L)."""
    length = int(input_shape[-1])
    in_channels = 1 if len(input_shape) == 1 else int(input_shape[0])
    return GRUClassifier(length, in_channels, int(hidden_size), num_classes, bool(bidirectional))


class Block(nn.Module):
    """Pre-norm encoder block: x + attn(ln(x)), then x + ffn(ln(x))."""

    def __init__(self, width: int, heads: int, ffn: int):
        super().__init__()
        if width % heads:
            raise UserError(f"transformer1d: width {width} is not a multiple of heads {heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(width)
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(width, width)
        self.v = nn.Linear(width, width)
        self.out = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.ffn_in = nn.Linear(width, ffn)
        self.ffn_out = nn.Linear(ffn, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape
        h = self.norm1(x)

        def split(t):
            return t.view(n, length, self.heads, width // self.heads).transpose(1, 2)

        attended = F.scaled_dot_product_attention(split(self.q(h)), split(self.k(h)), split(self.v(h)))
        x = x + self.out(attended.transpose(1, 2).reshape(n, length, width))
        return x + self.ffn_out(torch.relu(self.ffn_in(self.norm2(x))))


class Transformer1d(nn.Module):
    """Tokens = values of the signal; Linear embedding + learned positions, encoder blocks, mean pool, `fc_out`."""

    output_layer = "fc_out"

    def __init__(self, length: int, in_channels: int, width: int, heads: int, layers: int, ffn: int,
                 num_classes: int):
        super().__init__()
        self.embed = nn.Linear(in_channels, width)
        self.position = nn.Parameter(torch.randn(length, width) * 0.02)
        self.mask_token = nn.Parameter(torch.zeros(width))
        self.blocks = nn.ModuleList(Block(width, heads, ffn) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.fc_out = nn.Linear(width, num_classes)

    def sequence_features(self, x: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.embed(_sequence(x))
        if hidden is not None:
            keep = (~hidden).view(tokens.shape[0], tokens.shape[1], 1).to(tokens.dtype)
            tokens = tokens * keep + self.mask_token * (1 - keep)
        h = tokens + self.position
        for block in self.blocks:
            h = block(h)
        return self.norm(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.sequence_features(x).mean(dim=1))

    def permutation_spec(self):
        raise UserError("transformer1d has no permutation spec: attention heads tie units across q, k and v; "
                        "merge runs of one init instead")


def transformer1d(input_shape, num_classes: int, width: int = 32, heads: int = 4, layers: int = 2,
                  ffn: int = 64) -> nn.Module:
    """Small Transformer encoder over the steps of a 1-D signal; input (N, L) or (N, C, L)."""
    length = int(input_shape[-1])
    in_channels = 1 if len(input_shape) == 1 else int(input_shape[0])
    return Transformer1d(length, in_channels, int(width), int(heads), int(layers), int(ffn), num_classes)
