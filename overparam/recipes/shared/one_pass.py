"""The frame of one-pass methods on a finished run (`from=`): Wanda, SparseGPT and magnitude pruning without
retraining (and, built on the same driver, quantization). The run's model settings must be the source run's
(its weights are saved under them, so `runner export`, `reproduce` and `table` read them back); the source is
evaluated, pruned (layer by layer with `layerwise.run_layerwise` when the method needs calibration data),
evaluated again and saved with its masks, as every pruned run stores them.

Selection rules shared by the methods (True = kept), as locuslab/wanda's `prune_wanda`/`prune_magnitude`:
`row_keep` prunes the int(columns * sparsity) lowest scores of every row; `nm_keep` the m - n lowest of every
group of m consecutive columns of a row; `layer_keep` the int(numel * sparsity) lowest of the layer.
"""

from __future__ import annotations

import time

import torch

from overparam.errors import UserError
from overparam.recipes.shared.choices import parse_pattern
from overparam.settings import plain

# Calibration sequences per forward pass (their code runs one at a time; the results are the same).
CALIB_BATCH = 16


# --- selection ---------------------------------------------------------------------------------------

def row_keep(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep all but the int(columns * sparsity) lowest scores of each row (stable order: ties, lower index first)."""
    keep = torch.ones_like(scores, dtype=torch.bool)
    order = torch.sort(scores, dim=-1, stable=True)[1]
    keep.scatter_(1, order[:, :int(scores.shape[1] * sparsity)], False)
    return keep


def nm_keep(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the n highest of every m consecutive scores of a row (the m - n lowest pruned)."""
    rows, columns = scores.shape
    groups = scores.reshape(rows, columns // m, m)
    keep = torch.ones_like(groups, dtype=torch.bool)
    keep.scatter_(2, torch.topk(groups, m - n, dim=2, largest=False)[1], False)
    return keep.reshape(rows, columns)


def layer_keep(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep all but the int(numel * sparsity) lowest scores of the layer."""
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    keep[torch.sort(scores.flatten(), stable=True)[1][:int(scores.numel() * sparsity)]] = False
    return keep.reshape(scores.shape)


# --- the frame ---------------------------------------------------------------------------------------

def _model_difference(source: dict, own: dict, prefix: str = "model") -> str:
    for key in sorted(set(source) | set(own)):
        a, b = source.get(key), own.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = _model_difference(a, b, f"{prefix}.{key}")
            if found:
                return found
        elif a != b and key != "_target_":
            return f"{prefix}.{key}={a}" if a is not None else f"~{prefix}.{key}"
    return ""


def load_source(params, setup, settings):
    """The `from=` run's model (masks included), once its model settings are known to be the run's own."""
    from overparam.recipes.shared.source import load_from_run
    from overparam.store.identity import identity
    from overparam.store.load import RunRef, check_finished, weights_config

    ref = RunRef.parse(str(params["from"]))
    check_finished(ref.root)
    source = identity({"model": plain(weights_config(ref.root).model)}).get("model", {})
    own = identity({"model": plain(settings.model)}).get("model", {})
    if source.get("name") != own.get("name"):
        raise UserError(f"from={params['from']} is model={source.get('name')}, this run model={own.get('name')}: "
                        f"give the source's model settings (model={source.get('name')} ...)")
    difference = _model_difference(source, own)
    if difference:
        raise UserError(f"from={params['from']} has other model settings than this run: add {difference}")
    model = load_from_run(params["from"], setup)
    if setup.data.bytes_per_token and not getattr(model, "language_model", False):
        raise UserError(f"from={params['from']} is not a language model; dataset=text needs one")
    return model


def check_pattern(model, targets: list[str], pattern) -> None:
    """Every target layer's row length divides by m."""
    if pattern is None:
        return
    n, m = pattern
    for name in targets:
        columns = model.get_submodule(name).weight[0].numel()
        if columns % m:
            raise UserError(f"prune.pattern={n}:{m}: layer {name} has rows of {columns} weights, not a multiple of "
                            f"{m}; use another pattern or unstructured sparsity")


def figures(model, data, prefix: str = "") -> dict:
    """Val/test accuracy, loss (and perplexity, bits per byte on text), flat: `{prefix}test_accuracy`, ..."""
    from overparam.engine.evaluate import evaluate_splits

    return {f"{prefix}{split}_{metric}": value for split, metrics in evaluate_splits(model, data).items()
            for metric, value in metrics.items()}


def prune_run(params, context, method=None, *, select=None) -> dict:
    """Load `from`, prune its target layers (with `method` on the calibration set by `layerwise.run_layerwise`, or
    with `select({name: (rows, columns) weight}) -> {name: keep}` from the weights alone), evaluate before and after, save the model.
    `params`: the method's (`from`, `prune.pattern`, and `calib.*` when `method` is given)."""
    from overparam.models.masked import sparsify
    from overparam.recipes.shared import layerwise
    from overparam.recipes.shared.level_stats import mask_statistics

    settings, run = context.settings, context.run
    setup = context.prepare()
    pattern = parse_pattern(params.get("prune.pattern"))
    model = load_source(params, setup, settings)
    targets = layerwise.default_targets(model)
    if not targets:
        raise UserError(f"from={params['from']}: no layer to prune (a language model's Linear layers inside its "
                        f"blocks; a classifier's layers but its output layer)")
    check_pattern(model, targets, pattern)
    calibration = None
    if method is not None:
        from overparam.recipes.shared.calibration import from_params

        calibration = from_params(params, setup.data, run)
    before = figures(model, setup.data, "dense_")
    sparsify(model, include=targets)
    start = time.perf_counter()
    if method is not None:
        records = layerwise.run_layerwise(model, calibration.inputs, method, targets, batch_size=CALIB_BATCH)
    else:
        records = _select_each(model, targets, select)
    total = time.perf_counter() - start
    run.record("pruned_layers", [{"name": r.name, "rows": r.rows, "columns": r.columns, "kept": r.kept,
                                  "seconds": r.seconds} for r in records])
    run.save_checkpoint("model", model.state_dict())
    stats = mask_statistics(model, setup.data.input_shape, setup.device)
    # `sparsity` is the target, as the run's config names it (tables group by it); the masks' own count is
    # `achieved_sparsity` (per-row rounding, and SparseGPT's threshold, which prunes one more per block).
    target = 1.0 - pattern[0] / pattern[1] if pattern else float(settings.sparsity)
    stats.update(achieved_sparsity=stats["sparsity"], sparsity=target, remaining_fraction=1.0 - target)
    layer_seconds = sum(r.seconds for r in records)
    return {**figures(model, setup.data), **before, **stats,
            "pattern": f"{pattern[0]}:{pattern[1]}" if pattern else "unstructured",
            "pruned_layers": len(records), "prune_seconds": total, "per_layer_seconds": layer_seconds / len(records)}


def _select_each(model, targets, select):
    from overparam.recipes.shared.layerwise import LayerRecord

    weights = {name: model.get_submodule(name).weight.detach().flatten(1).float() for name in targets}
    start = time.perf_counter()
    masks = select(weights)
    seconds = (time.perf_counter() - start) / len(targets)
    records = []
    for name in targets:
        module = model.get_submodule(name)
        module.set_mask(module.weight_mask.bool() & masks[name].reshape(module.weight.shape))
        records.append(LayerRecord(name=name, rows=weights[name].shape[0], columns=weights[name].shape[1],
                                   kept=float(module.weight_mask.float().mean()), seconds=seconds))
    return records
