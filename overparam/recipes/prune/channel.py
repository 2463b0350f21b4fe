"""`method=channel`: structured pruning of whole output channels / neurons by L1 norm (Li et al. 2017).

Train dense (level 0), remove `sparsity` of the hidden channels (the output layer's classes are
never removed), then fine-tune (level 1). A removed channel masks its row in its layer and its
input column in the next layer, so it has no effect at all (its bias included). The layers must
form a chain (each prunable layer feeds the next one), as the zoo's mlp, lenet300_100 and cnn1d do.

`channel.scope=layerwise` (the default) removes the same fraction from every layer; `global` ranks
channels of all layers by mean |w| (the L1 norm divided by fan-in, so layers of different fan-in
compare). Global ranking can empty a layer whose weights are small (sparsity=0.5 on the default MLP
once kept 1 of 256 units of its second layer), so every layer keeps at least
`channel.min_fraction` of its channels (default 0.25; at least one channel in any case). With `channel.shrink=true` the fine-tuning runs on a physically
smaller network (its Linear/Conv modules replaced by narrower ones), so parameters and FLOPs drop
for real; the final weights are written back into the full-size masked model so that the run
loads like any other (`checkpoints/shrunk.safetensors` holds the small one).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from overparam.errors import UserError
from overparam.recipes.shared import prunable as common
from overparam.recipes.shared.masks import round_to_total
from overparam.models.channels import chain, expand_into, shrink
from overparam.recipes.shared.level_stats import flops_per_example, mask_statistics


def channel_keep(model: nn.Module, sparsity: float, scope: str,
                 min_fraction: float = 0.0) -> dict[str, torch.Tensor]:
    """{hidden layer name: bool vector of kept output channels}, `sparsity` of all hidden channels removed.

    Each layer keeps at least `min_fraction` of its channels (and one channel); when the floors add
    up to more than `1 - sparsity` of the channels, the floors win (fewer channels are removed).
    """
    layers = chain(model)[:-1]  # the output layer's channels are the classes
    if not layers:
        raise UserError("method=channel needs at least one hidden layer")
    scores = {name: layer.weight.detach().abs().reshape(layer.weight.shape[0], -1).mean(dim=1).cpu()
              for name, layer in layers}
    sizes = {name: s.numel() for name, s in scores.items()}
    total = sum(sizes.values())
    floors = {name: max(1, min(n, math.ceil(n * float(min_fraction) - 1e-9))) for name, n in sizes.items()}
    keep_total = max(sum(floors.values()), int(math.floor(total * (1.0 - sparsity) + 0.5)))
    keep: dict[str, torch.Tensor] = {}
    if scope == "layerwise":
        counts = round_to_total({k: n * keep_total / total for k, n in sizes.items()}, keep_total, sizes)
        counts = {name: max(count, floors[name]) for name, count in counts.items()}
    else:
        # Each layer's floor (its best channels) is kept regardless; the rest go to the globally highest scores.
        counts = dict(floors)
        pool = torch.cat([torch.sort(s, descending=True, stable=True).values[floors[name]:]
                          for name, s in scores.items()])
        owners = torch.cat([torch.full((n - floors[name],), i) for i, (name, n) in enumerate(sizes.items())])
        best = torch.argsort(pool, descending=True, stable=True)[:keep_total - sum(floors.values())]
        for index, name in enumerate(scores):
            counts[name] += int((owners[best] == index).sum())
    for name, score in scores.items():
        count = max(1, counts[name])
        chosen = torch.zeros(score.numel(), dtype=torch.bool)
        chosen[torch.argsort(score, descending=True, stable=True)[:count]] = True
        keep[name] = chosen
    return keep


def channel_masks(model: nn.Module, keep: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Weight masks: a removed channel's row in its layer and its input column in the next layer."""
    layers = chain(model)
    masks = {f"{name}.weight": torch.ones_like(layer.weight, device="cpu") for name, layer in layers}
    for (name, _layer), (next_name, following) in zip(layers, layers[1:]):
        if name not in keep:
            continue
        removed = ~keep[name]
        masks[f"{name}.weight"][removed] = 0.0
        masks[f"{next_name}.weight"][:, removed] = 0.0
    return masks


def run(params, context) -> dict:
    """Dense training, L1 channel pruning to `sparsity` of hidden channels, (shrinking,) fine-tuning."""
    import copy

    from overparam.engine import fit
    from overparam.models import count_parameters

    settings, run = context.settings, context.run
    setup = context.prepare()
    model = common.make_prunable(setup.new_model(), exclude_output=False)
    chain(model)
    dense = fit(model, setup.data, run, tag="dense", level=0, label="channel dense", **setup.fit_kwargs())
    channels = run.phase("channels")
    if channels.saved:
        keep = {k: v.bool() for k, v in channels.load().items()}
    else:
        keep = channel_keep(model, float(settings.sparsity), params["channel.scope"],
                            float(params["channel.min_fraction"] or 0.0))
        channels.save({k: v.to(torch.uint8) for k, v in keep.items()})
    common.apply_masks_by_name(model, channel_masks(model, keep))
    extra: dict = {}
    if params["channel.shrink"]:
        small = shrink(copy.deepcopy(model), keep)
        result = fit(small, setup.data, run, tag="finetune", level=1, label="channel fine-tune (shrunk)",
                     **setup.fit_kwargs())
        run.save_checkpoint("shrunk", small.state_dict())
        expand_into(model, small, keep)
        flops, _ = flops_per_example(small, setup.data.input_shape, setup.device)
        extra = {"shrunk_parameters": count_parameters(small), "shrunk_flops": flops}
    else:
        result = fit(model, setup.data, run, tag="finetune", level=1, label="channel fine-tune", **setup.fit_kwargs())
    run.save_checkpoint("model", model.state_dict())
    stats = mask_statistics(model, setup.data.input_shape, setup.device)
    kept = sum(int(v.sum()) for v in keep.values())
    hidden = sum(v.numel() for v in keep.values())
    return {**result.flat(), **stats, **extra, "steps": result.steps, "channels_kept": kept,
            "channels_hidden": hidden, "channel_sparsity": 1.0 - kept / hidden,
            "dense_test_accuracy": dense.final["test"]["accuracy"]}
