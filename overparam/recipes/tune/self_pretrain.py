"""`method=self_pretrain`: "Never Train from Scratch" (Amos et al. 2024) on the task's own inputs.

Phase 1 (no labels): the model, with its classifier swapped for a linear decoder to the input size,
learns to reconstruct inputs from a corrupted copy (a random `mask_fraction` of positions zeroed,
plus optional Gaussian `noise`); the loss is the MSE on the masked positions (on all positions when
nothing is masked). Phase 2: a fresh classifier, trained on the labels with everything else. The
two phases share the run's training length (`pretrain_fraction` of it goes to phase 1), so
`self_pretrain.baseline=true` (the same model trained from scratch for the full length) is an
equal-steps comparison.

Sequence models (those with `sequence_features`, e.g. `transformer1d`, `gru`) are pretrained as in the
paper, per position: the positions hidden by `mask_fraction` are replaced (the Transformer's tokens by a
learned mask embedding; the GRU, which has no token embedding, reads zeros there), and a linear decoder on
every position's features predicts the original values; the loss is the MSE on the hidden positions.
Their classifier is not replaced: fine-tuning starts from the pretrained encoder and the untrained head.

Each phase gets a fresh optimizer (the reconstruction one from `self_pretrain.optim.*` and
`self_pretrain.grad_clip`, fine-tuning the run's `optim.*`), and every weight trains in both. The summary
reports, besides test accuracy, the train accuracy of each arm and the held-out reconstruction error as a
fraction of the held-out inputs' variance (`pretrain_reconstruction_error`: 1.0 is no better than
predicting the mean), so a reader sees whether pretraining learned anything and whether an arm overfits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from overparam.engine import fit
from overparam.engine.evaluate import evaluate
from overparam.engine.optim import total_steps
from overparam.errors import UserError
from overparam.recipes.common import model_summary
from overparam.recipes.shared.source import cached_phase, merged, replace_head


def reconstruction_loss(mask_fraction: float, noise: float):
    """A `fit` loss_fn that ignores labels: reconstruct x from its corrupted copy."""
    def loss_fn(model, x, y, step, index):
        hidden = torch.rand_like(x) < mask_fraction if mask_fraction > 0 else None
        corrupted = x.masked_fill(hidden, 0.0) if hidden is not None else x
        if noise > 0:
            corrupted = corrupted + noise * torch.randn_like(x)
        reconstruction = model(corrupted).view_as(x)
        if hidden is not None:
            # A product, not boolean indexing: indexing's backward is slow under deterministic mode.
            weight = hidden.to(x.dtype)
            return ((reconstruction - x).pow(2) * weight).sum() / weight.sum().clamp_min(1.0)
        return F.mse_loss(reconstruction, x)
    return loss_fn


class PositionDecoder(nn.Module):
    """A sequence model with a linear decoder from each position's features back to its input values."""

    def __init__(self, model: nn.Module, features: int, channels: int):
        super().__init__()
        self.model = model
        self.decoder = nn.Linear(features, channels)

    def forward(self, x: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruction of x, shaped like x ((N, L) or (N, C, L)), with `hidden` (N, L) positions masked."""
        out = self.decoder(self.model.sequence_features(x, hidden))  # (N, L, C)
        return out.squeeze(-1) if x.dim() == 2 else out.transpose(1, 2)


def sequence_reconstruction_loss(mask_fraction: float, noise: float):
    """A `fit` loss_fn for a `PositionDecoder`: hide positions, reconstruct their values (MSE on them)."""
    def loss_fn(model, x, y, step, index):
        positions = x.shape[:1] + x.shape[-1:]
        hidden = torch.rand(positions, device=x.device) < mask_fraction if mask_fraction > 0 else None
        corrupted = x + noise * torch.randn_like(x) if noise > 0 else x
        reconstruction = model(corrupted, hidden)
        if hidden is None:
            return F.mse_loss(reconstruction, x)
        weight = (hidden.unsqueeze(1) if x.dim() == 3 else hidden).to(x.dtype).expand_as(x)
        return ((reconstruction - x).pow(2) * weight).sum() / weight.sum().clamp_min(1.0)
    return loss_fn


def run(params, context) -> dict:
    """Self-pretrain, then fine-tune, within the run's training length; optionally train from scratch too."""
    settings, run = context.settings, context.run
    setup = context.prepare()
    options = params["self_pretrain"]
    seed = context.seed
    total, _ = total_steps(settings.train, len(setup.data.train_x))
    pretrain_steps = max(1, int(round(float(options.pretrain_fraction) * total)))
    finetune_steps = total - pretrain_steps
    if finetune_steps < 1:
        raise UserError(f"self_pretrain.pretrain_fraction leaves no fine-tuning steps out of {total}")
    model = setup.new_model(seed)
    sequence = callable(getattr(model, "sequence_features", None))
    if sequence:
        with torch.no_grad():
            parameter = next(model.parameters())
            probe = torch.zeros(1, *setup.data.input_shape, device=parameter.device, dtype=parameter.dtype)
            features = int(model.sequence_features(probe).shape[-1])
        channels = 1 if len(setup.data.input_shape) == 1 else int(setup.data.input_shape[0])
        torch.manual_seed(seed + 1)
        pretrained = PositionDecoder(model, features, channels).to(parameter.device)
        loss = sequence_reconstruction_loss(float(options.mask_fraction), float(options.noise))
    else:
        replace_head(model, int(math.prod(setup.data.input_shape)), seed + 1)
        pretrained = model
        loss = reconstruction_loss(float(options.mask_fraction), float(options.noise))

    def pretrain() -> dict:
        train = merged(settings.train, {"steps": pretrain_steps, "eval_every": pretrain_steps,
                                        "grad_clip": options.grad_clip})
        kwargs = setup.fit_kwargs(train=train, optim=merged(settings.optim, options["optim"].as_dict()))
        # run=None: fit's val/test rows would score the decoder as a classifier; the phase is resumed whole.
        result = fit(pretrained, setup.data, None, tag="pretrain", label="self-pretrain", loss_fn=loss, **kwargs)
        return {"pretrain_steps": result.steps, "pretrain_seconds": round(result.seconds, 3)}

    figures = cached_phase(run, "pretrain", pretrained, pretrain)
    held_out = setup.data.val_x if setup.data.val_x is not None else setup.data.test_x
    error = _reconstruction(pretrained, loss, held_out, seed)
    figures["pretrain_reconstruction_loss"] = error
    figures["pretrain_reconstruction_error"] = error / max(float(held_out.float().var()), 1e-12)
    if not sequence:
        replace_head(model, setup.data.num_classes, seed + 2)
    result = fit(model, setup.data, run, tag="finetune", label="finetune",
                 **setup.fit_kwargs(train=merged(settings.train, {"steps": finetune_steps})))
    run.save_checkpoint("model", model.state_dict())
    summary = {**result.flat(), "train_accuracy": _train_accuracy(model, setup.data), **model_summary(model),
               "steps": total, "finetune_steps": finetune_steps, **figures}
    if options.baseline:
        scratch = setup.new_model(seed)

        def from_scratch() -> dict:
            alone = fit(scratch, setup.data, None, tag="scratch", label="scratch",
                        **setup.fit_kwargs(train=merged(settings.train, {"steps": total})))
            out = {k: v for k, v in alone.flat("scratch_").items() if isinstance(v, (int, float))}
            return {**out, "scratch_train_accuracy": _train_accuracy(scratch, setup.data)}

        summary.update(cached_phase(run, "scratch", scratch, from_scratch))
        summary["self_pretrain_gain"] = summary["test_accuracy"] - summary["scratch_test_accuracy"]
    return summary


def _train_accuracy(model, data) -> float:
    """Accuracy on the training rows (beside test: shows whether an arm fits or overfits)."""
    return float(evaluate(model, data.train_x, data.train_y)["accuracy"])


@torch.no_grad()
def _reconstruction(model, loss, x, seed: int) -> float:
    """Held-out masked-reconstruction MSE after phase 1 (a fixed corruption, for the summary)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 3)
        model.eval()
        value = float(loss(model, x, None, 0, None))  # held-out rows: no train-set index
        model.train()
    return value
