"""Helpers shared by the image models: input-shape checks and weight initialization schemes."""

from __future__ import annotations

import torch
from torch import nn

from overparam.errors import UserError

INIT_SCHEMES = ("torch", "kaiming_normal", "xavier_normal")


def image_shape(input_shape, model_name: str) -> tuple[int, int, int]:
    """(channels, height, width) of an image input; (H, W) counts as one channel."""
    shape = tuple(int(d) for d in input_shape)
    if len(shape) == 2:
        return (1, *shape)
    if len(shape) == 3:
        return shape  # type: ignore[return-value]
    raise UserError(f"model {model_name} needs image inputs (C, H, W); the dataset gives shape {shape}")


def as_image_batch(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> (N, 1, H, W); (N, C, H, W) unchanged."""
    return x.unsqueeze(1) if x.dim() == 3 else x


def initialize(model: nn.Module, scheme: str = "torch") -> nn.Module:
    """Re-initialize Conv/Linear weights with `scheme` (biases to zero); `torch` keeps PyTorch's defaults.

    `kaiming_normal` is open_lth's default; `xavier_normal` (Glorot) is the lottery-ticket paper's.
    BatchNorm layers keep weight 1 and bias 0 in every scheme.
    """
    if scheme not in INIT_SCHEMES:
        raise UserError(f"model init={scheme!r} is not allowed; choose one of: {', '.join(INIT_SCHEMES)}")
    if scheme == "torch":
        return model
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            if scheme == "kaiming_normal":
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            else:
                nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def flat_features(body: nn.Module, input_shape: tuple[int, int, int], model_name: str) -> int:
    """Number of features `body` produces for one input of `input_shape` (a dry run on zeros).

    Runs in eval mode so BatchNorm statistics stay untouched and a 1x1 map is allowed.
    """
    was_training = body.training
    body.eval()
    try:
        with torch.no_grad():
            out = body(torch.zeros(1, *input_shape))
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"model {model_name} cannot take inputs of shape {tuple(input_shape)}: "
                        f"{str(exc).splitlines()[0]}") from None
    finally:
        body.train(was_training)
    if out.numel() == 0:
        raise UserError(f"model {model_name}: inputs of shape {tuple(input_shape)} are too small")
    return int(out[0].numel())
