"""`method=layer_drop from=<run>`: a language model made shallower by removing whole blocks or single sublayers.

`drop.criterion` chooses what goes, measured on the calibration set (`calib.*`, block_scores.py):
`bi` (ShortGPT: the `drop.blocks` blocks of least block influence), `angular` (Gromov et al.: the
`drop.blocks` consecutive blocks whose input and output are closest in angle), `last` (the last blocks, the
baseline), `finercut` (FinerCut: `drop.sublayers` attention or MLP sublayers, greedily, each the one whose
removal changes the output least). The model is saved physically smaller (fewer blocks and parameters), and
run.json's `weights_config` gives its shape (model=gpt: `model.layers`, `model.removed`; model=hf: the
folder's `model.layers` kept and `model.removed`), so evaluation, `from=`, `reproduce` and `export --format hf`
rebuild it. A sparse source keeps its masks in the blocks that stay.
"""

from __future__ import annotations

import time

from overparam.errors import UserError

PARAMS = "drop"


def _source_shape(cfg: dict) -> tuple[str, int]:
    """(model name, number of blocks) of a source run's weights config (resolved dict)."""
    model = cfg.get("model") or {}
    name = model.get("name")
    if name == "gpt":
        return name, int(model.get("layers") or 0)
    if name == "hf":
        if model.get("layers") is not None:
            return name, len(model["layers"])
        from overparam.models.hf import check_folder

        folder = check_folder(model.get("path"))
        return name, int(folder.get("num_hidden_layers") or folder.get("n_layer") or 0)
    raise UserError(f"method=layer_drop removes blocks of a language model (model=gpt or model=hf); from= is "
                    f"model={name}")


def _source_config(ref: str) -> dict:
    """The source run's weights config (its real architecture) as a plain resolved dict."""
    from overparam.store.load import RunRef, weights_config

    return weights_config(RunRef.parse(str(ref)).root).to_dict()


def check(params, cfg: dict) -> None:
    """from= names a finished language-model run with more blocks (or sublayers) than are to be removed."""
    if not params["from"]:
        raise UserError("method=layer_drop needs from=<run dir> (a finished model=gpt or model=hf run)")
    source = _source_config(params["from"])
    _, blocks = _source_shape(source)
    removed = len((source.get("model") or {}).get("removed") or [])
    if params["drop.criterion"] == "finercut":
        left = 2 * blocks - removed
        if params["drop.sublayers"] >= left:
            raise UserError(f"drop.sublayers={params['drop.sublayers']}: the model has {left} sublayers; at least "
                            f"one must stay")
    elif params["drop.blocks"] >= blocks:
        raise UserError(f"drop.blocks={params['drop.blocks']}: the model has {blocks} blocks; at least one must stay")


def _choose_blocks(model, inputs, criterion: str, count: int, batch_size: int) -> tuple[list[int], list[float]]:
    from overparam.recipes.prune import block_scores
    from overparam.models.blocks import decoder_blocks

    total = len(decoder_blocks(model))
    if criterion == "last":
        return list(range(total - count, total)), []
    if criterion == "bi":
        scores = block_scores.block_influence(model, inputs, batch_size)
        order = sorted(range(total), key=lambda i: (float(scores[i]), i))
        return sorted(order[:count]), scores.tolist()
    distances = block_scores.angular_distances(model, inputs, count, batch_size)
    return block_scores.consecutive_choice(distances, count), distances.tolist()


def _saved_shape(source_model: dict, model, kept: list[int], blocks_before: int) -> dict:
    """The source's model config with the new shape (see the module doc)."""
    from overparam.models.blocks import removed_sublayers

    shape = dict(source_model)
    removed = removed_sublayers(model) or None
    if shape.get("name") == "gpt":
        shape["layers"] = len(kept)
    else:
        original = shape.get("layers") or list(range(blocks_before))
        shape["layers"] = [int(original[i]) for i in kept]
    shape["removed"] = removed
    return shape


def run(params, context) -> dict:
    """Score the source's blocks on the calibration set, remove the chosen ones, evaluate and save."""
    from overparam.engine.evaluate import evaluate_splits
    from overparam.models.blocks import decoder_blocks, has_sublayer, is_language_model, keep_blocks
    from overparam.models import count_parameters
    from overparam.models.masked import masked_modules, sparsity_report
    from overparam.recipes.prune import block_scores
    from overparam.recipes.shared.calibration import from_params
    from overparam.recipes.shared.source import load_from_run

    run, setup = context.run, context.prepare()
    if not setup.data.bytes_per_token:
        raise UserError("method=layer_drop needs text data (dataset=text), as the run it starts from")
    source_model = _source_config(params["from"])["model"]
    model = load_from_run(params["from"], setup)
    if not is_language_model(model):
        raise UserError(f"from={params['from']} is not a language model")
    model.eval()
    calibration = from_params(params, setup.data, run)
    before = evaluate_splits(model, setup.data)
    blocks_before, parameters_before = len(decoder_blocks(model)), count_parameters(model)
    criterion, batch_size = params["drop.criterion"], params["drop.batch_size"]
    started = time.perf_counter()
    record: dict = {"criterion": criterion}
    if criterion == "finercut":
        steps = block_scores.finercut(model, calibration.inputs, params["drop.sublayers"], batch_size)
        kept = [i for i, block in enumerate(decoder_blocks(model))
                if has_sublayer(block, "attn") or has_sublayer(block, "mlp")]
        record["steps"] = steps
    else:
        dropped, scores = _choose_blocks(model, calibration.inputs, criterion, params["drop.blocks"], batch_size)
        kept = [i for i in range(blocks_before) if i not in dropped]
        record["scores"] = scores
    seconds = time.perf_counter() - started
    record["dropped_blocks"] = [i for i in range(blocks_before) if i not in kept]
    keep_blocks(model, kept)
    shape = _saved_shape(source_model, model, kept, blocks_before)
    record["removed_sublayers"] = shape["removed"]
    run.record("layer_drop", record)
    run.record("weights_config", {"model": shape})
    after = evaluate_splits(model, setup.data)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    run.save_checkpoint("model", {k: v.detach() for k, v in model.state_dict().items()})
    summary = {"blocks_before": blocks_before, "blocks": len(kept), "parameters_before": parameters_before,
               "parameters": count_parameters(model), "selection_seconds": round(seconds, 3),
               "dropped": ",".join(map(str, record["dropped_blocks"])) or "-",
               "removed_sublayers": ",".join(shape["removed"] or []) or "-"}
    if masked_modules(model):  # a sparse source keeps its masks in the blocks that stay
        summary["sparsity"] = sparsity_report(model)["sparsity"]
    for split, metrics in after.items():
        summary.update({f"{split}_{key}": float(value) for key, value in metrics.items()})
    for split, metrics in before.items():
        summary.update({f"source_{split}_{key}": float(value) for key, value in metrics.items()})
    return summary
