"""Evaluation: mean loss and accuracy of a model on tensors, in large no-grad batches.

Logits are (N, C) for a classifier or (N, T, V) for a language model (one prediction per position,
targets (N, T)); the loss and accuracy of a language model are per token. A text bundle (one with
`bytes_per_token`) also gets perplexity (exp of the loss) and bits per byte.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of (N, C) logits, or of (N, T, V) logits per token."""
    if logits.dim() == 3:
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction=reduction)
    return F.cross_entropy(logits, y, reduction=reduction)


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048,
             autocast_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Cross-entropy loss and accuracy over (x, y); the model is left in the mode it was in."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    if x.dim() == 2 and y.dim() == 2:
        batch_size = max(1, batch_size * 16 // x.shape[1])  # about 32k tokens at a time: logits stay small
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        if autocast_dtype is not None:
            with torch.autocast(device_type=x.device.type, dtype=autocast_dtype):
                logits = model(xb)
        else:
            logits = model(xb)
        logits = logits.float()
        loss_sum += cross_entropy(logits, yb, reduction="sum").double()
        correct += (logits.argmax(dim=-1) == yb).sum()
    model.train(was_training)
    n = max(y.numel(), 1)
    return {"loss": float(loss_sum) / n, "accuracy": float(correct) / n}


def language_metrics(metrics: dict[str, float], bytes_per_token: float) -> dict[str, float]:
    """`metrics` with perplexity and bits per byte added (from its loss in nats per token)."""
    loss = metrics["loss"]
    return {**metrics, "perplexity": math.exp(min(loss, 700.0)), "bits_per_byte": loss / math.log(2) / bytes_per_token}


def evaluate_splits(model, data, autocast_dtype=None) -> dict[str, dict[str, float]]:
    """`evaluate` on every evaluation split of a DataBundle (val when present, test)."""
    out = {split: evaluate(model, x, y, autocast_dtype=autocast_dtype) for split, (x, y) in data.splits().items()}
    if getattr(data, "bytes_per_token", None):
        out = {split: language_metrics(metrics, data.bytes_per_token) for split, metrics in out.items()}
    return out
