"""`method=wanda from=<run>`: Wanda (Sun et al. 2023), pruning by |W| x ||X||_2 without retraining.

A weight's score is its magnitude times the L2 norm of its input feature over the calibration tokens; scores
are compared within each output row (the paper's default): the int(columns * sparsity) lowest of every row are
pruned, or with `prune.pattern=n:m` the m - n lowest of every m consecutive weights. Layers are pruned block by
block with the pruned blocks' outputs feeding the next (`recipes/shared/layerwise.py`), as locuslab/wanda's
`prune_wanda`; the norms are accumulated as its `WrappedGPT.add_batch` (a running mean of squared norms).
"""

from __future__ import annotations

import torch


class SquaredNorms:
    """Running mean over calibration batches of each input feature's squared L2 norm (their `scaler_row`)."""

    def __init__(self, columns: int, device=None):
        self.scaler_row = torch.zeros(columns, device=device)
        self.samples = 0

    def add_batch(self, inputs: torch.Tensor) -> None:
        """inputs: (batch, ..., columns); the batch's leading dimension counts its samples."""
        if inputs.dim() == 1:
            inputs = inputs.unsqueeze(0)
        count = inputs.shape[0]
        flat = inputs.reshape(-1, inputs.shape[-1]).float()
        self.scaler_row *= self.samples / (self.samples + count)
        self.samples += count
        self.scaler_row += torch.norm(flat, p=2, dim=0) ** 2 / self.samples


def wanda_scores(weight: torch.Tensor, scaler_row: torch.Tensor) -> torch.Tensor:
    """|W| * sqrt(mean squared input norm) per input feature."""
    return weight.abs() * torch.sqrt(scaler_row.reshape(1, -1))


class Wanda:
    """The layer-wise method (`layerwise.run_layerwise`'s interface): keeps the weights, chooses the mask."""

    def __init__(self, sparsity: float, pattern: tuple[int, int] | None):
        self.sparsity, self.pattern = float(sparsity), pattern

    def collector(self, name, module, columns):
        return SquaredNorms(columns, device=module.weight.device)

    def prune(self, name, module, weight, collector):
        from overparam.recipes.shared.one_pass import nm_keep, row_keep

        scores = wanda_scores(weight, collector.scaler_row)
        if self.pattern is not None:
            return None, nm_keep(scores, *self.pattern)
        return None, row_keep(scores, self.sparsity)


def run(params, context) -> dict:
    """Wanda on the `from=` run's model, on `calib.samples` calibration sequences; evaluated before and after."""
    from overparam.recipes.shared.one_pass import parse_pattern, prune_run

    pattern = parse_pattern(params["prune.pattern"])
    return prune_run(params, context, Wanda(context.settings.sparsity or 0.0, pattern))
