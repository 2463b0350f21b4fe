"""Evaluation: mean loss and accuracy of a model on tensors, in large no-grad batches."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048,
             autocast_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Cross-entropy loss and accuracy over (x, y); the model is left in the mode it was in."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        if autocast_dtype is not None:
            with torch.autocast(device_type=x.device.type, dtype=autocast_dtype):
                logits = model(xb)
        else:
            logits = model(xb)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
        correct += (logits.argmax(dim=1) == yb).sum()
    model.train(was_training)
    n = max(len(x), 1)
    return {"loss": float(loss_sum) / n, "accuracy": float(correct) / n}


def evaluate_splits(model, data, autocast_dtype=None) -> dict[str, dict[str, float]]:
    """`evaluate` on every evaluation split of a DataBundle (val when present, test)."""
    return {split: evaluate(model, x, y, autocast_dtype=autocast_dtype) for split, (x, y) in data.splits().items()}
