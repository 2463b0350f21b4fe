"""`method=nm`: N:M semi-structured sparsity (default 2:4) by magnitude, one-shot or gradual.

In every group of M consecutive weights along a row of the weight matrix (the reduction dimension:
a Linear's inputs, a convolution's in_channels x kernel flattened), exactly N are kept. That is the
layout the 2:4 kernel path accepts (`overparam.kernels.sparse.is_two_four`). Layers whose row length
is not divisible by M stay dense.

- `oneshot`: train dense (level 0), prune to N:M by magnitude, retrain the pruned weights (level 1).
- `gradual`: one training run; N goes from M-1 down to the target N at evenly spaced steps over the
  first `nm.gradual_fraction` of training, each time by magnitude among the weights still alive.
"""

from __future__ import annotations

import torch

from overparam.errors import UserError
from overparam.recipes.shared import prunable as common
from overparam.recipes.shared.level_stats import mask_statistics


def nm_mask(weight: torch.Tensor, n: int, m: int, alive: torch.Tensor | None = None) -> torch.Tensor:
    """0/1 mask with exactly `n` of every `m` consecutive row entries kept (largest |w|; ties: first).

    `alive` keeps pruned weights pruned (a gradual schedule only ever removes weights).
    """
    rows = weight.shape[0]
    scores = weight.detach().abs().double().reshape(rows, -1, m).cpu()
    if alive is not None:
        scores = scores.masked_fill(alive.reshape(rows, -1, m).cpu() == 0, -1.0)
    order = torch.argsort(scores, dim=-1, descending=True, stable=True)
    mask = torch.zeros_like(scores, dtype=torch.float32)
    mask.scatter_(-1, order[..., :n], 1.0)
    return mask.reshape(weight.shape)


def eligible(model, m: int) -> dict[str, torch.Tensor]:
    """Prunable weights whose row length is divisible by `m`."""
    return {name: w for name, w in common.weights_of(model).items() if (w[0].numel() % m) == 0}


def apply_nm(model, n: int, m: int, keep_pruned: bool) -> None:
    """Install N:M masks on every eligible layer (by current magnitude)."""
    from overparam.models.masked import masks_of

    current = masks_of(model)
    masks = {name: nm_mask(w, n, m, current[name] if keep_pruned else None) for name, w in eligible(model, m).items()}
    common.apply_masks_by_name(model, masks)


def run(params, context) -> dict:
    """N:M pruning by magnitude (one-shot after dense training, or gradually during training)."""
    from overparam.engine import fit

    settings, run = context.settings, context.run
    setup = context.prepare()
    n, m = params["nm.n"], params["nm.m"]
    model = common.make_prunable(setup.new_model(), exclude_output=False)
    if not eligible(model, m):
        raise UserError(f"no layer of model {settings.model.name} has a row length divisible by nm.m={m}")
    gradual = params["nm.schedule"] == "gradual"
    if gradual:
        from overparam.engine.optim import total_steps

        total, _ = total_steps(settings.train, len(setup.data.train_x))
        stages = list(range(m - 1, n - 1, -1))  # M-1, ..., N
        span = params["nm.gradual_fraction"] * total
        points = {max(1, round((index + 1) * span / len(stages))): stage for index, stage in enumerate(stages)}

        def hook(step, current, optimizer):
            if step in points:
                apply_nm(current, points[step], m, keep_pruned=True)
                common.mask_optimizer_state(optimizer, current)

        result = fit(model, setup.data, run, tag="gradual", level=None, label=f"nm {n}:{m} gradual", step_hook=hook,
                     **setup.fit_kwargs())
        # A schedule shorter than its stages (tiny runs) still ends at exactly N:M.
        apply_nm(model, n, m, keep_pruned=True)
    else:
        dense = fit(model, setup.data, run, tag="dense", level=0, label="nm dense", **setup.fit_kwargs())
        # On a resumed run the pruned phase then loads its resume point (weights and masks) over these.
        apply_nm(model, n, m, keep_pruned=False)
        result = fit(model, setup.data, run, tag="pruned", level=1, label=f"nm {n}:{m} retrain", **setup.fit_kwargs())
    run.save_checkpoint("model", model.state_dict())
    stats = mask_statistics(model, setup.data.input_shape, setup.device)
    summary = {**result.flat(), **stats, "steps": result.steps, "nm": f"{n}:{m}",
               "nm_layers": len(eligible(model, m))}
    if not gradual:
        summary["dense_test_accuracy"] = dense.final["test"]["accuracy"]
    return summary
