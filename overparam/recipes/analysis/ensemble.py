"""`method=ensemble`: the average of the ingredients' predictions (Lakshminarayanan et al. 2017).

The model-soups paper (Wortsman et al. 2022, Table 1) sets soups beside this output ensemble of the
same ingredients: it costs N forward passes where a soup costs one. `ensemble.average=probs` averages
softmax probabilities (the paper's ensemble); `logits` averages logits and takes their softmax.
Ingredients are found, checked and evaluated on the same val/test splits as the merges
(`recipes/shared/merging.py`), so an ensemble run and a soup run of one sweep share their ingredient rows.
"""

from __future__ import annotations

from overparam.recipes.shared import merging as common
from overparam.recipes.shared.ingredients import ref_text
from overparam.recipes.shared.states import load_weights
from overparam.recipes.shared.summary import ingredient_figures


def check(params, cfg: dict) -> None:
    """Ingredients exist, finished and share one architecture (the values: analysis/params.py)."""
    common.validate_refs(params, same_masks=False)


def predict(model, x, batch_size: int = 2048):
    """Logits of `model` on `x` (eval mode, no grad, batched)."""
    import torch

    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(x[start:start + batch_size]).float() for start in range(0, len(x), batch_size)])
    model.train(was_training)
    return out


def scores(log_probs, y) -> dict:
    """Cross-entropy (negative log-likelihood of `log_probs`) and accuracy, as `engine.evaluate` reports them."""
    import torch.nn.functional as F

    n = max(len(y), 1)
    return {"loss": float(F.nll_loss(log_probs.double(), y, reduction="sum")) / n,
            "accuracy": float((log_probs.argmax(dim=1) == y).sum()) / n}


def combine(logits: list, average: str):
    """Log-probabilities of the ensemble of these logits: log mean softmax, or log softmax of mean logits."""
    import math

    import torch

    stacked = torch.stack([t.double() for t in logits])
    if average == "logits":
        return torch.log_softmax(stacked.mean(dim=0), dim=1)
    # log(mean_i p_i) computed stably as logsumexp_i(log p_i) - log N.
    return torch.logsumexp(torch.log_softmax(stacked, dim=2), dim=0) - math.log(len(logits))


def run(params, context) -> dict:
    """Predict with every ingredient (one loaded at a time), average, and score the ensemble and each one."""
    settings, run = context.settings, context.run
    setup = common.open_merge(params, settings, same_masks=False)
    average = params["ensemble.average"]
    splits = setup.data.splits()
    logits: dict[str, list] = {split: [] for split in splits}
    rows = []
    for index, ref in enumerate(setup.refs):
        setup.model.load_state_dict(load_weights(ref, setup.device))
        row = {"role": "ingredient", "ingredient": index, "name": ref_text(ref)}
        for split, (x, y) in splits.items():
            out = predict(setup.model, x)
            logits[split].append(out)
            row.update({f"{split}_{k}": v for k, v in scores(out.double().log_softmax(dim=1), y).items()})
        rows.append(row)
    metrics = {}
    for split, (x, y) in splits.items():
        metrics.update({f"{split}_{k}": v for k, v in scores(combine(logits[split], average), y).items()})
    common.record_architecture(run, setup.check.model, setup.check.dataset)
    extra = {"ensemble_size": len(rows), "average": average}
    ensemble_row = {"role": "merged", "name": "ensemble", **metrics, **extra}
    return {**metrics, **ingredient_figures(rows), **setup.notes, **extra, "rows": [ensemble_row, *rows]}
