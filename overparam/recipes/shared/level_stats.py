"""Statistics and printing of pruned models and levels: FLOPs and mask statistics, a level's row in
the run summary, and the per-level table."""

from __future__ import annotations

import sys

import torch
from torch import nn


# --- statistics -----------------------------------------------------------------------------------

@torch.no_grad()
def flops_per_example(model: nn.Module, input_shape: tuple[int, ...], device: str | torch.device = "cpu"
                      ) -> tuple[int, int]:
    """(FLOPs, dense FLOPs) of one forward pass on one example: 2 x live weights x output positions per
    Linear/Conv layer (a multiply-add counts 2; biases, activations and pooling are not counted)."""
    from overparam.models.masked import MASKED_TYPES
    from overparam.models.taps import FeatureTap

    # By module path ("." when the model itself is the layer).
    layers = {name or ".": m for name, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))}
    positions: dict[nn.Module, int] = {}
    was_training = model.training
    model.eval()
    try:
        with FeatureTap(model, [(name, "output") for name in layers]) as tap:
            model(torch.zeros((1, *input_shape), device=device))
            for name, layer in layers.items():
                output = tap.pop((name, "output"))
                if output is not None:  # a layer the forward did not use is not counted
                    channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
                    positions[layer] = max(1, output.numel() // channels)
    finally:
        model.train(was_training)
    sparse, dense = 0, 0
    for layer in layers.values():
        if layer not in positions:
            continue
        weight_count = layer.weight.numel()
        alive = int(layer.weight_mask.count_nonzero()) if isinstance(layer, MASKED_TYPES) else weight_count
        sparse += 2 * alive * positions[layer]
        dense += 2 * weight_count * positions[layer]
    return sparse, dense


def mask_statistics(model: nn.Module, input_shape: tuple[int, ...], device: str | torch.device = "cpu") -> dict:
    """Sparsity (total and per layer), remaining fraction, weights and parameters left, FLOPs."""
    from overparam.models import count_parameters
    from overparam.models.masked import sparsity_report

    report = sparsity_report(model)
    parameters = count_parameters(model)
    pruned = report["prunable_weights"] - report["remaining_weights"]
    flops, dense_flops = flops_per_example(model, input_shape, device)
    stats = {
        "sparsity": report["sparsity"],
        "remaining_fraction": 1.0 - report["sparsity"],
        "remaining_weights": report["remaining_weights"],
        "prunable_weights": report["prunable_weights"],
        "parameters": parameters,
        "remaining_params": parameters - pruned,
        "flops": flops,
        "dense_flops": dense_flops,
    }
    for layer, value in report["layer_sparsity"].items():
        stats[f"layer_sparsity/{layer}"] = value
    return stats


# --- reporting ------------------------------------------------------------------------------------

LEVEL_ROW_KEYS = ("level", "sparsity", "remaining_fraction", "remaining_weights", "remaining_params", "flops",
                  "test_accuracy", "test_loss", "val_accuracy", "val_loss", "early_stop_step",
                  "test_accuracy_at_early_stop", "val_accuracy_at_early_stop", "train_seconds", "source",
                  # language models only
                  "test_perplexity", "test_bits_per_byte", "val_perplexity", "val_bits_per_byte")


def level_row(summary: dict) -> dict:
    """The entry of one level in the run summary's `levels` list (flat numbers/strings).

    `lineage` is `<run_id>/level_<L>` of the training that produced the weights: levels shared
    through the cache carry the same one, so a table counts them once.
    """
    from overparam.store.run import lineage_id

    row = {k: summary[k] for k in LEVEL_ROW_KEYS if k in summary}
    if lineage_id(summary.get("lineage")):
        row["lineage"] = lineage_id(summary.get("lineage"))
    row.update({k: v for k, v in summary.items() if k.startswith("layer_sparsity/")})
    return row


def print_level_table(levels: list[dict], title: str) -> None:
    """A per-level table on stdout (rich)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    text = any("test_perplexity" in row for row in levels)
    for column in ("level", "remaining", "sparsity", "weights", "test acc", "val acc", "test loss",
                   *(("test ppl", "test bpb") if text else ()), "stop step", "from"):
        table.add_column(column, justify="left" if column == "from" else "right", no_wrap=True)
    for row in levels:
        language = (f"{row.get('test_perplexity', float('nan')):.3f}",
                    f"{row.get('test_bits_per_byte', float('nan')):.4f}") if text else ()
        table.add_row(str(row["level"]), f"{100 * row['remaining_fraction']:.2f}%", f"{row['sparsity']:.4f}",
                      str(row.get("remaining_weights", "")), f"{row.get('test_accuracy', float('nan')):.4f}",
                      f"{row.get('val_accuracy', float('nan')):.4f}", f"{row.get('test_loss', float('nan')):.4f}",
                      *language, str(row.get("early_stop_step", "")), str(row.get("source", "")))
    # Off a terminal rich assumes 80 columns; the table is wider than that and must not be cut.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    console.print(table)
