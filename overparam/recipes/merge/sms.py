"""`method=sms`: Sparse Model Soups (Zimmer et al. 2024).

Start from a trained model (`base`, or a dense model trained here first). In each of `sms.phases`
phases: prune the current model by global magnitude to the phase's sparsity (the run's `sparsity`
is reached after the last phase, the remaining fraction shrinking geometrically), retrain
`sms.copies` copies that differ by `sms.vary` (seed | data_order | weight_decay | lr), average them
(`sms.soup=uniform|greedy`) and start the next phase from the soup. All copies of a phase share the
phase's mask, so their average keeps exactly that mask.

Every phase is stored like a prune level (`level_<p>/` with model, mask and summary) and every copy as
the checkpoint `phase_<p>_copy_<c>`: a killed run resumes at the first copy not yet finished.
"""

from __future__ import annotations

from overparam.recipes.merge.greedy_soup import greedy
from overparam.recipes.shared import merging as common
from overparam.recipes.shared.evaluation import recalibrate_batchnorm
from overparam.recipes.shared.ingredients import ref_text, validate_base
from overparam.recipes.shared.states import weighted_average

PARAMS = "sms"


def phase_remaining(sparsity: float, phase: int, phases: int) -> float:
    """Remaining fraction after `phase` of `phases` (geometric: the same prune rate every phase)."""
    return (1.0 - float(sparsity)) ** (phase / phases)


def copy_settings(params, settings, copy: int) -> dict:
    """fit() keyword arguments that make copy `copy` differ from the others (`sms.vary`, `sms.values`)."""
    seed = int(settings.seed)
    vary = params["sms.vary"]
    optim = settings.optim.to_dict()
    if vary == "seed":
        return {"seed": seed + copy, "data_seed": seed + copy, "optim": optim}
    if vary == "data_order":
        return {"seed": seed, "data_seed": seed + 1 + copy, "optim": optim}
    optim["lr" if vary == "lr" else "weight_decay"] = float(params["sms.values"][copy])
    return {"seed": seed, "data_seed": seed, "optim": optim}


def retrain_schedule(params, settings) -> dict:
    """train.* for each copy: `sms.retrain_epochs` epochs when set (compute matching), else train.* as is."""
    train = settings.train.to_dict()
    epochs = params["sms.retrain_epochs"]
    if epochs is not None:
        train.update({"epochs": epochs, "steps": None})
    return train


def check(params, cfg: dict) -> None:
    """The starting model, if given."""
    if params.base:
        validate_base(params, None)


def _start(params, run, setup) -> tuple[object, dict]:
    """The trained starting model: `base`'s weights, or a dense model trained here (tag `dense`)."""
    from overparam.engine import fit
    from overparam.store.load import load_run_model

    if params.base:
        ref = validate_base(params, None)
        model, base_cfg = load_run_model(ref, device=setup.device, data=setup.data)
        return model, {"base": ref_text(ref), "_base_cfg": base_cfg}
    model = setup.new_model()
    dense = run.phase("dense", level=0)
    if dense.saved:
        model.load_state_dict(dense.load(device=setup.device))
        return model, {}
    result = fit(model, setup.data, run, tag=dense.name, label="dense", level=0, **setup.fit_kwargs())
    dense.save(model.state_dict())
    return model, {"dense_train_seconds": round(result.seconds, 3)}


def _level_row(summary: dict) -> dict:
    """A committed phase's summary as its row of the run summary's `levels` (lineage as `<run_id>/level_<p>`)."""
    from overparam.store.run import lineage_id

    lineage = lineage_id(summary.get("lineage"))
    return {**{k: v for k, v in summary.items() if k != "lineage"}, **({"lineage": lineage} if lineage else {})}


def run(params, context) -> dict:
    """Prune, retrain copies, soup; phase after phase. One summary row (`levels`) per phase."""
    import copy as copying

    from overparam.engine import fit
    from overparam.engine.evaluate import evaluate_splits
    from overparam.models.masked import apply_masks, masks_of, sparsity_report
    from overparam.recipes.shared import prunable as prune_common
    from overparam.recipes.shared.masks import select_masks

    settings, run = context.settings, context.run
    phases, copies = params["sms.phases"], params["sms.copies"]
    setup = context.prepare()
    model, extra = _start(params, run, setup)
    if not common.any_masked(model):
        prune_common.make_prunable(model, exclude_output=params["sms.exclude_output"])
    names = prune_common.weight_names(model)
    total = sum(dict(model.named_parameters())[n].numel() for n in names)
    # Evaluating soups: a MergeSetup over the same data and a twin of the model.
    evaluator = common.MergeSetup(settings=settings, device=setup.device, data=setup.data, model=copying.deepcopy(model),
                                  refs=[], check=None, **common.recalibration(params))  # type: ignore[arg-type]
    levels = []
    dense_metrics = evaluate_splits(model, setup.data)
    levels.append({"level": 0, "remaining_fraction": 1.0 - sparsity_report(model)["sparsity"],
                   "sparsity": sparsity_report(model)["sparsity"],
                   **{f"{s}_{k}": v for s, m in dense_metrics.items() for k, v in m.items()}})
    for phase in range(1, phases + 1):
        level = run.level(phase)
        if level.complete:
            model.load_state_dict(level.state())
            levels.append(_level_row(level.summary()))
            continue
        remaining = phase_remaining(float(settings.sparsity), phase, phases)
        keep = prune_common.target_count(total, 1.0 - remaining)
        masks = select_masks(prune_common.magnitude_scores(model), keep, scope="global", alive=masks_of(model))
        apply_masks(model, masks)
        pruned = {k: v.detach().clone() for k, v in model.state_dict().items()}
        copy_phases = []
        seconds = 0.0
        for index in range(copies):
            copy = run.phase(f"phase_{phase}_copy_{index}", level=(phase - 1) * copies + index + 1)
            copy_phases.append(copy)
            if copy.saved:
                continue
            model.load_state_dict(pruned)
            varied = copy_settings(params, settings, index)
            result = fit(model, setup.data, run, train=retrain_schedule(params, settings),
                         hardware=settings.hardware.to_dict(), tag=copy.name, label=copy.name, level=copy.level, **varied)
            seconds += result.seconds
            copy.save(model.state_dict())
        copy_rows = []
        for index, copy in enumerate(copy_phases):
            copy_rows.append({"copy": index, **evaluator.evaluate_state(copy.load(setup.device), recalibrate=False)})

        if params["sms.soup"] == "uniform":
            soup = weighted_average(copy.load(setup.device) for copy in copy_phases)
            kept = list(range(copies))
        else:
            soup, kept = greedy(evaluator, copy_rows, params["sms.accept"],
                                load=lambda index: copy_phases[index].load(setup.device))
        evaluator.model.load_state_dict(soup)
        if evaluator.recalibrate:
            recalibrate_batchnorm(evaluator.model, setup.data, evaluator.bn_fraction, int(settings.seed))
        model.load_state_dict(evaluator.current_state())
        # The soup keeps exactly the phase's mask: same masks in, masks copied, masked weights zero.
        if not all(bool((masks_of(model)[k] == masks[k].to(masks_of(model)[k].dtype)).all()) for k in masks):
            raise RuntimeError(f"phase {phase}: the soup's mask differs from the phase's mask")
        metrics = evaluate_splits(model, setup.data)
        report = sparsity_report(model)
        flat = {f"{s}_{k}": v for s, m in metrics.items() for k, v in m.items()}
        best_copy = max(copy_rows, key=lambda r: r.get("val_accuracy", r["test_accuracy"]))
        summary = {"level": phase, "sparsity": report["sparsity"], "remaining_fraction": 1.0 - report["sparsity"],
                   "remaining_weights": report["remaining_weights"], **flat, "soup_size": len(kept),
                   "best_copy_test_accuracy": best_copy["test_accuracy"],
                   "mean_copy_test_accuracy": sum(r["test_accuracy"] for r in copy_rows) / copies,
                   "retrain_seconds": round(seconds, 3)}
        levels.append(_level_row(level.commit(model, summary, rows=copy_rows)))
    run.save_checkpoint("model", model.state_dict())
    base_cfg = extra.pop("_base_cfg", None)
    if base_cfg is not None:
        common.record_architecture(run, base_cfg.model.to_dict(), base_cfg.dataset.to_dict())
    final = levels[-1]
    return {**{k: v for k, v in final.items() if k != "level"}, "phases": phases, "copies": copies,
            "vary": params["sms.vary"], **extra, "levels": levels}

