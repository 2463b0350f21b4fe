"""`method=sparsegpt from=<run>`: SparseGPT (Frantar & Alistarh 2023), one-shot pruning with OBS reconstruction.

Every layer's remaining weights are updated to compensate for the pruned ones using the Hessian 2/n X X^T of
its calibration inputs (dampened by `sparsegpt.percdamp` of its mean diagonal), column by column with lazy
updates over blocks of `sparsegpt.blocksize` columns, the mask chosen adaptively per block (unstructured) or
per group of m columns (`prune.pattern=n:m`): `recipes/shared/obs.py`, as IST-DASLab/sparsegpt's
`fasterprune`. Layers are pruned block by block with the pruned blocks' outputs feeding the next.
"""

from __future__ import annotations


class SparseGPT:
    """The layer-wise method (`layerwise.run_layerwise`'s interface): new weights and mask per layer."""

    def __init__(self, sparsity: float, pattern: tuple[int, int] | None, blocksize: int = 128,
                 percdamp: float = 0.01):
        self.sparsity, self.pattern = float(sparsity), pattern
        self.blocksize, self.percdamp = int(blocksize), float(percdamp)

    def collector(self, name, module, columns):
        from overparam.recipes.shared.obs import Hessian

        return Hessian(columns, device=module.weight.device)

    def prune(self, name, module, weight, collector):
        from overparam.recipes.shared.obs import fasterprune

        n, m = self.pattern if self.pattern is not None else (0, 0)
        result = fasterprune(weight, collector.matrix, self.sparsity, prunen=m - n, prunem=m,
                             blocksize=self.blocksize, percdamp=self.percdamp)
        collector.matrix = None  # the Hessian is not needed again: free it before the next layer's
        return result.weight, result.mask


def run(params, context) -> dict:
    """SparseGPT on the `from=` run's model, on `calib.samples` calibration sequences; evaluated before and after."""
    from overparam.recipes.shared.one_pass import parse_pattern, prune_run

    pattern = parse_pattern(params["prune.pattern"])
    method = SparseGPT(context.settings.sparsity or 0.0, pattern, params["sparsegpt.blocksize"],
                       params["sparsegpt.percdamp"])
    return prune_run(params, context, method)
