"""`method=finetune`: continue training a finished run's model, all of it or a chosen part.

`finetune.train`: `all` | `head` (a linear probe: only the classifier) | `norm_bias` (only
normalization and bias parameters) | `bias` | `norm`. On a dataset with another class count the
classifier is replaced by a fresh one. A sparse source keeps its mask unless `finetune.dense=true`.

`norm_bias` after pruning is PERP's cheap repair (Zimmer et al., "PERP: Rethinking the Prune-Retrain
Paradigm in the Era of LLMs"): a pruned model's loss is mostly recovered by retraining its biases and
normalization parameters alone, a tiny fraction of its parameters; every weight, pruned or not, stays as
it is, so the model stays exactly as sparse. Normalization layers are recognized by type (BatchNorm,
LayerNorm, GroupNorm, RMSNorm, and transformers' own `...Norm` classes such as LlamaRMSNorm).
The summary gives `trainable_parameters`, `parameters_alive` and their ratio `trainable_fraction`, and what
the source was (`source_method`, `source_sparsity`, `source_pattern`, its `source_<split>_accuracy`).
"""

from __future__ import annotations

from torch import nn

from overparam.engine import fit
from overparam.engine.evaluate import evaluate_splits
from overparam.models.counting import trainable_summary
from overparam.recipes.common import model_summary
from overparam.recipes.shared.source import load_from_run, source_fields

NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def is_norm(module: nn.Module) -> bool:
    """A normalization layer: torch's, or a model library's own class named `...Norm` (LlamaRMSNorm)."""
    return isinstance(module, NORM_TYPES) or type(module).__name__.endswith(("Norm", "RMSNorm", "LayerNorm"))


def trainable_parameters(model: nn.Module, mode: str) -> list[nn.Parameter]:
    """The parameters `finetune.train=mode` updates (the others get requires_grad=False)."""
    from overparam.models import output_layer_name

    if mode == "all":
        chosen = list(model.parameters())
    elif mode == "head":
        chosen = list(model.get_submodule(output_layer_name(model)).parameters())
    else:
        chosen = []
        for module in model.modules():
            if is_norm(module):
                if mode in ("norm_bias", "norm"):
                    chosen += list(module.parameters(recurse=False))
            elif mode in ("norm_bias", "bias") and isinstance(getattr(module, "bias", None), nn.Parameter):
                chosen.append(module.bias)
    ids = {id(p) for p in chosen}
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in ids)
    return chosen


def run(params, context) -> dict:
    """Load `from`, choose what trains, fine-tune on the configured data; save the result as model."""
    from overparam.models.masked import densify, masked_modules, sparsity_report

    settings, run = context.settings, context.run
    setup = context.prepare()
    model = load_from_run(params["from"], setup)
    if params["finetune.dense"]:
        densify(model)
    before = evaluate_splits(model, setup.data)
    trainable = trainable_parameters(model, params["finetune.train"])
    # Counted before training ends: a pruned weight is held at zero by its mask and never trains.
    counts = trainable_summary(model, trainable)
    counts["trainable_fraction"] = counts["trainable_parameters"] / max(counts["parameters_alive"], 1)
    result = fit(model, setup.data, run, tag="finetune", label="finetune", trainable=trainable, **setup.fit_kwargs())
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    run.save_checkpoint("model", model.state_dict())
    summary = {**result.flat(), **model_summary(model), "steps": result.steps,
               **counts,
               **{f"source_{split}_accuracy": m["accuracy"] for split, m in before.items()},
               **{f"source_{split}_bits_per_byte": m["bits_per_byte"] for split, m in before.items()
                  if "bits_per_byte" in m},
               **source_fields(params["from"])}
    if masked_modules(model):
        summary["sparsity"] = sparsity_report(model)["sparsity"]
    return summary
