"""`method=oneshot`: magnitude pruning to `sparsity` in one step.

- Without `from=`: train dense, prune once, then rewind or retrain. The same machinery as IMP with two levels:
  level 0 (dense, shared by a sparsity sweep through the level cache) and level 1 at exactly the target.
- With `from=<run>`: the finished run's model pruned by |w| in one pass, no retraining (the baseline of the
  one-shot LLM papers, as locuslab/wanda's `prune_magnitude`), on the layers Wanda and SparseGPT prune, with
  `prune.scope=global` (one threshold over them), `layerwise` (the same fraction per layer) or `row` (per
  output row), or `prune.pattern=n:m`. Fine-tune the result with `method=finetune from=<this run>` (it keeps
  the mask).
"""

from __future__ import annotations


def magnitude_masks(weights: dict, sparsity: float, scope: str, pattern) -> dict:
    """{name: keep} of the given (rows, columns) weights by |w| (module doc)."""
    import torch

    from overparam.recipes.shared.one_pass import layer_keep, nm_keep, row_keep

    scores = {name: weight.abs() for name, weight in weights.items()}
    if pattern is not None:
        return {name: nm_keep(s, *pattern) for name, s in scores.items()}
    if scope == "row":
        return {name: row_keep(s, sparsity) for name, s in scores.items()}
    if scope == "layerwise":
        return {name: layer_keep(s, sparsity) for name, s in scores.items()}
    flat = layer_keep(torch.cat([s.flatten() for s in scores.values()]), sparsity)
    masks, start = {}, 0
    for name, s in scores.items():
        masks[name] = flat[start:start + s.numel()].reshape(s.shape)
        start += s.numel()
    return masks


def _one_pass(params, context) -> dict:
    from overparam.recipes.shared.one_pass import parse_pattern, prune_run

    pattern = parse_pattern(params["prune.pattern"])
    sparsity = float(context.settings.sparsity or 0.0)
    scope = str(params["prune.scope"] or "global")
    return prune_run(params, context,
                     select=lambda weights: magnitude_masks(weights, sparsity, scope, pattern))


def run(params, context) -> dict:
    """From `from=`: one magnitude pruning of that run's model. Else dense training (level 0), one magnitude
    pruning to the target, training of the pruned net (level 1)."""
    if params["from"]:
        return _one_pass(params, context)
    from overparam.recipes.shared.lottery import run_lottery

    return run_lottery(params, context, oneshot=True)
