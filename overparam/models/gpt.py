"""`gpt`: a decoder-only Transformer language model (GPT-2's layout, small by default).

Token and position embeddings, `layers` pre-LayerNorm blocks (causal multi-head self-attention, then a
GELU MLP, each added to the residual stream), a final LayerNorm and an untied output projection `head`.
Every projection is its own `nn.Linear` (q, k, v, attention output, MLP in and out, head), so masks,
kernels, LoRA and merges reach each of them by name. The arithmetic is GPT-2's (tanh GELU, LayerNorm eps
1e-5, attention scaled by 1/sqrt(head width)): copying the weights into transformers' `GPT2LMHeadModel`
with untied embeddings gives the same logits (tests/models/test_gpt.py).

Input (N, T) token ids with T <= `context`; output (N, T, vocabulary) logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from overparam.errors import UserError


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(width, width)
        self.k = nn.Linear(width, width)
        self.v = nn.Linear(width, width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape

        def split(t):
            return t.view(n, length, self.heads, width // self.heads).transpose(1, 2)

        attended = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)), is_causal=True,
                                                  dropout_p=self.dropout if self.training else 0.0)
        return self.out(attended.transpose(1, 2).reshape(n, length, width))


# The modules of each sublayer a block may lose (FinerCut's removal of single attention or MLP sublayers).
SUBLAYER_MODULES = {"attn": ("ln1", "attn"), "mlp": ("ln2", "mlp_in", "mlp_out")}


class GPTBlock(nn.Module):
    """x + attn(ln1(x)), then x + mlp(ln2(x)); a removed sublayer (its modules None) adds nothing."""

    def __init__(self, width: int, heads: int, mlp: int, dropout: float, without: tuple[str, ...] = ()):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads, dropout)
        self.ln2 = nn.LayerNorm(width)
        self.mlp_in = nn.Linear(width, mlp)
        self.mlp_out = nn.Linear(mlp, width)
        self.drop = nn.Dropout(dropout)
        for kind in without:
            for name in SUBLAYER_MODULES[kind]:
                setattr(self, name, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attn is not None:
            x = x + self.drop(self.attn(self.ln1(x)))
        if self.mlp_in is not None:
            x = x + self.drop(self.mlp_out(F.gelu(self.mlp_in(self.ln2(x)), approximate="tanh")))
        return x


class GPT(nn.Module):
    language_model = True
    output_layer = "head"

    def __init__(self, vocab: int, context: int, width: int, heads: int, layers: int, mlp: int, dropout: float,
                 removed: dict[int, tuple[str, ...]] | None = None):
        super().__init__()
        self.context, self.heads, self.mlp = context, heads, mlp
        removed = removed or {}
        self.token = nn.Embedding(vocab, width)
        self.position = nn.Embedding(context, width)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(GPTBlock(width, heads, mlp, dropout, removed.get(i, ()))
                                    for i in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        # GPT-2's initialization: N(0, 0.02), residual projections scaled down by the depth, zero biases.
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                residual = name.endswith(("attn.out", "mlp_out"))
                nn.init.normal_(module.weight, 0.0, 0.02 / (2 * layers) ** 0.5 if residual else 0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():  # a shape probe (FLOP counting, dry runs) passes zeros as floats
            x = x.long()
        length = x.shape[1]
        if length > self.context:
            raise UserError(f"model gpt: a block of {length} tokens is longer than its context of {self.context}")
        positions = torch.arange(length, device=x.device)
        h = self.drop(self.token(x) + self.position(positions))
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h))

    def permutation_spec(self):
        raise UserError("gpt has no permutation spec: attention heads tie units across q, k and v; "
                        "merge runs of one init instead")


def parse_removed(removed, layers: int, what: str = "model.removed") -> dict[int, tuple[str, ...]]:
    """`["0.attn", "2.mlp"]` (sublayers removed, by block) as {0: ("attn",), 2: ("mlp",)}, checked against `layers`."""
    out: dict[int, tuple[str, ...]] = {}
    for entry in removed or ():
        block, _, kind = str(entry).partition(".")
        if not block.isdigit() or kind not in SUBLAYER_MODULES or int(block) >= layers:
            raise UserError(f"{what}: {entry!r} is not <block>.attn or <block>.mlp with a block below {layers}")
        if kind in out.get(int(block), ()):
            raise UserError(f"{what}: {entry!r} is listed twice")
        out[int(block)] = (*out.get(int(block), ()), kind)
    return out


def gpt(input_shape, num_classes: int, width: int = 64, heads: int = 4, layers: int = 2, mlp: int | None = None,
        context: int | None = None, dropout: float = 0.0, removed=None) -> nn.Module:
    """A GPT over blocks of `input_shape[0]` tokens with a vocabulary of `num_classes`; context defaults to the block.

    `removed` lists sublayers taken out of single blocks (`["1.attn"]`: block 1 has no attention), as
    `method=layer_drop drop.criterion=finercut` writes them."""
    if len(tuple(input_shape)) != 1:
        raise UserError(f"model gpt needs blocks of token ids (dataset=text); the dataset gives inputs of shape "
                        f"{tuple(input_shape)}")
    block = int(input_shape[0])
    context = block if context is None else int(context)
    if block > context:
        raise UserError(f"dataset.block_size={block} is larger than model.context={context}")
    if int(width) % int(heads):
        raise UserError(f"model gpt: width {width} is not a multiple of heads {heads}")
    return GPT(int(num_classes), context, int(width), int(heads), int(layers), int(mlp or 4 * int(width)),
               float(dropout), parse_removed(removed, int(layers)))


gpt.language_model = True  # takes (N, T) token ids and gives (N, T, vocabulary) logits
