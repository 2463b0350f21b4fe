"""How much each transformer block (or sublayer) changes what flows through a language model, on calibration data.

- Block influence (ShortGPT, Men et al. 2024; icip-cas/ShortGPT `block_influence`): BI_l = 1 - cos(x_l, x_l+1)
  averaged over every calibration token, x_l the residual stream entering block l and x_l+1 the one leaving it.
  The blocks of least influence are removed. (Their code reads transformers' `hidden_states`, whose last entry
  is after the final norm; here every state is a block's own input or output, hooked.)
- Angular distance (Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper Layers"):
  d(l, n) = arccos(cos(x_l, x_l+n)) / pi on the final token of each calibration sequence, averaged over the
  sequences; the n consecutive blocks l..l+n-1 of the smallest distance are removed.
- FinerCut (Zhang et al. 2024): attention and MLP sublayers are candidates one by one; greedily, the one whose
  removal changes the model's output least is removed, then the search repeats on the smaller model. The
  change is the Jensen-Shannon divergence between the original and the candidate's next-token distributions,
  averaged over the calibration tokens (their code, YaNgZhAnG-V5/llm_dissect, also offers a logit-norm distance).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from overparam.models.blocks import SUBLAYERS, decoder_blocks, has_sublayer, remove_sublayer, without_sublayer


def _hidden(value) -> torch.Tensor:
    return value[0] if isinstance(value, (tuple, list)) else value


@torch.no_grad()
def block_states(model: nn.Module, inputs: torch.Tensor) -> list[torch.Tensor]:
    """[x_0, ..., x_L]: the residual stream entering block 0 and leaving each of the L blocks, for `inputs`."""
    blocks = decoder_blocks(model)
    states: list[torch.Tensor | None] = [None] * (len(blocks) + 1)

    def entering(module, args, kwargs):
        states[0] = _hidden(args[0] if args else kwargs["hidden_states"]).detach()

    def leaving(index):
        def hook(module, args, output):
            states[index + 1] = _hidden(output).detach()
        return hook

    handles = [blocks[0].register_forward_pre_hook(entering, with_kwargs=True)]
    handles += [block.register_forward_hook(leaving(i)) for i, block in enumerate(blocks)]
    try:
        model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return states


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.double(), b.double()
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(1e-300)


def _batches(inputs: torch.Tensor, batch_size: int):
    for start in range(0, len(inputs), batch_size):
        yield inputs[start:start + batch_size]


def block_influence(model: nn.Module, inputs: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """(L,) float64: BI_l = mean over every calibration token of 1 - cos(x_l, x_l+1)."""
    total, tokens = None, 0
    for batch in _batches(inputs, batch_size):
        states = block_states(model, batch)
        sums = torch.stack([(1 - _cosine(states[i], states[i + 1])).sum() for i in range(len(states) - 1)])
        total = sums if total is None else total + sums
        tokens += states[0].shape[0] * states[0].shape[1]
    return total.cpu() / tokens


def angular_distances(model: nn.Module, inputs: torch.Tensor, n: int, batch_size: int = 16) -> torch.Tensor:
    """(L - n + 1,) float64: d(l, n) = mean over sequences of arccos(cos(x_l, x_l+n)) / pi at the final token."""
    total = None
    for batch in _batches(inputs, batch_size):
        states = [s[:, -1] for s in block_states(model, batch)]
        sums = torch.stack([torch.arccos(_cosine(states[l], states[l + n]).clamp(-1, 1)).sum() / math.pi
                            for l in range(len(states) - n)])
        total = sums if total is None else total + sums
    return total.cpu() / len(inputs)


def consecutive_choice(distances: torch.Tensor, n: int) -> list[int]:
    """The n consecutive blocks starting where the angular distance is smallest (the first such on a tie)."""
    start = int(torch.argmin(distances))
    return list(range(start, start + n))


@torch.no_grad()
def log_probs(model: nn.Module, inputs: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Next-token log-probabilities (float64) of the model on `inputs`."""
    return torch.cat([F.log_softmax(model(batch).double(), dim=-1) for batch in _batches(inputs, batch_size)])


def js_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> float:
    """Jensen-Shannon divergence (nats) between two next-token distributions, averaged over the tokens."""
    log_m = torch.logsumexp(torch.stack([log_p, log_q]), dim=0) - math.log(2)
    kl_p = (log_p.exp() * (log_p - log_m)).sum(-1)
    kl_q = (log_q.exp() * (log_q - log_m)).sum(-1)
    return float((0.5 * (kl_p + kl_q)).mean())


def finercut(model: nn.Module, inputs: torch.Tensor, count: int, batch_size: int = 16) -> list[dict]:
    """Remove `count` sublayers greedily (FinerCut), in place; returns each step's choice and its divergence.

    The model keeps its blocks (a block that loses both sublayers stays, empty); the caller drops empty blocks.
    Candidates are numbered by the blocks as they were when the search began.
    """
    reference = log_probs(model, inputs, batch_size)
    steps = []
    for _ in range(count):
        best = None
        for index, block in enumerate(decoder_blocks(model)):
            for kind in SUBLAYERS:
                if not has_sublayer(block, kind):
                    continue
                with without_sublayer(model, index, kind):
                    change = js_divergence(reference, log_probs(model, inputs, batch_size))
                if best is None or change < best[0]:
                    best = (change, index, kind)
        change, index, kind = best
        remove_sublayer(model, index, kind)
        steps.append({"block": index, "sublayer": kind, "js_divergence": change})
    return steps
