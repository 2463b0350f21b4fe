"""The merge context every merge opens: device, evaluation data and a model to score states with
(`MergeSetup`), and saving the merged model.

Ingredients are named by run directories (optionally `<dir>@<tag>`), a multirun directory (all of
its finished jobs) or a glob; `ingredients.py` checks them before any work, `states.py` loads them one
at a time (a merge of N models holds about two of them in memory), `evaluation.py` adds the shifted and
per-task data and BN recalibration, and `summary.py` writes the rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from overparam.recipes.shared.evaluation import recalibrate_batchnorm, shift_settings, task_data, task_settings
from overparam.recipes.shared.ingredients import (IngredientCheck, _container, check_ingredients, check_val_split,
                                                 resolve_ingredients, weights_config)
from overparam.store.load import RunRef


# --- the merge context -------------------------------------------------------------------------

@dataclass
class MergeSetup:
    """Device, evaluation data and a model of the ingredients' architecture to evaluate states with."""

    settings: Any
    device: str
    data: Any
    model: Any
    refs: list[RunRef]
    check: IngredientCheck
    notes: dict = field(default_factory=dict)
    # The test split of a shifted copy of the dataset (`merge.shift`), evaluated as `shift_*`; None: none.
    shift: Any = None
    # `merge.tasks`: (name, test data) of each distinct dataset the ingredients trained on, evaluated as
    # `task_<name>_accuracy`; `task_of[i]` is the task ingredient i was fine-tuned on.
    tasks: list = field(default_factory=list)
    task_of: list = field(default_factory=list)
    # `merge.bn_recalibrate` / `merge.bn_fraction`: recompute BatchNorm statistics after merging.
    recalibrate: bool = False
    bn_fraction: float = 0.25

    def evaluate_state(self, state: dict, recalibrate: bool | None = None) -> dict:
        """{"val_accuracy", "val_loss", "test_accuracy", "test_loss"} of a state (BN recalibrated if set)."""
        from overparam.engine.evaluate import evaluate_splits

        self.model.load_state_dict(state)
        if self.recalibrate if recalibrate is None else recalibrate:
            recalibrate_batchnorm(self.model, self.data, fraction=self.bn_fraction, seed=int(self.settings.seed))
        results = evaluate_splits(self.model, self.data)
        metrics = {f"{split}_{name}": value for split, metrics in results.items() for name, value in metrics.items()}
        if self.shift is not None:
            from overparam.engine.evaluate import evaluate

            shifted = evaluate(self.model, self.shift.test_x, self.shift.test_y)
            metrics.update({"shift_accuracy": shifted["accuracy"], "shift_loss": shifted["loss"]})
        if self.tasks:
            from overparam.engine.evaluate import evaluate

            for task, data in self.tasks:
                metrics[f"task_{task}_accuracy"] = evaluate(self.model, data.test_x, data.test_y)["accuracy"]
        return metrics

    def normalize(self, rows: list[dict]) -> list[dict]:
        """Multitask figures in the TIES paper's terms, added to every row that has the task columns:
        `normalized_accuracy` = mean over tasks of (row's accuracy on task t) / (accuracy on task t of the
        ingredient fine-tuned on t; the mean if several were), and `task_mean_accuracy` (the plain mean)."""
        if not self.tasks:
            return rows
        names = [task for task, _ in self.tasks]
        tuned = {name: [] for name in names}
        for row in rows:
            if row.get("role") == "ingredient":
                tuned[names[self.task_of[row["ingredient"]]]].append(row[f"task_{names[self.task_of[row['ingredient']]]}_accuracy"])
        reference = {name: sum(values) / len(values) for name, values in tuned.items() if values}
        for row in rows:
            if all(f"task_{name}_accuracy" in row for name in names):
                row["task_mean_accuracy"] = sum(row[f"task_{name}_accuracy"] for name in names) / len(names)
                ratios = [row[f"task_{name}_accuracy"] / reference[name] for name in names if reference.get(name)]
                if ratios:
                    row["normalized_accuracy"] = sum(ratios) / len(ratios)
        return rows

    def current_state(self) -> dict:
        """The evaluation model's state (after BN recalibration, if any)."""
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}


def recalibration(params) -> dict:
    """MergeSetup's BatchNorm settings from the method's params (`merge.bn_recalibrate`, `merge.bn_fraction`)."""
    return {"recalibrate": bool(params.get("merge.bn_recalibrate") or False),
            "bn_fraction": float(params.get("merge.bn_fraction") or 0.25)}


def prepare_merge(params, settings, refs: list[RunRef], check: IngredientCheck) -> MergeSetup:
    """Device, the ingredients' dataset (val split of the first ingredient's seed) and a model template.

    `params`: the method's merge.* settings; `settings`: the shared keys (hardware, paths, seed)."""
    from overparam.data import load_dataset
    from overparam.engine import setup_hardware
    from overparam.store.load import load_run_model

    device = setup_hardware(settings.hardware.to_dict())
    # Every ingredient is evaluated on the first one's val split; one that trained on part of it is
    # refused here (unless merge.allow_val_overlap), and the summary says whether the split was shared.
    notes = check_val_split(params, refs)
    first_cfg = weights_config(refs[0].root)
    data_dir = settings.paths.data_dir
    data = load_dataset(_container(first_cfg.dataset), data_dir, seed=int(first_cfg.get("seed", 0) or 0), device=device)
    model, _ = load_run_model(refs[0], device=device, data=data)
    shift = shift_settings(params)
    shifted = None
    if shift:
        # The same dataset with the shifted settings; only its test split is read (no val split drawn).
        shifted = load_dataset({**_container(first_cfg.dataset), **shift, "val_fraction": 0.0, "label_noise": None},
                               data_dir, device=device)
        notes = {**notes, "shift": ",".join(f"{k}={v}" for k, v in sorted(shift.items()))}
    tasks, task_of = [], []
    if task_settings(params):
        tasks, task_of = task_data(data_dir, refs, device)
        notes = {**notes, "tasks": ",".join(name for name, _ in tasks)}
    return MergeSetup(settings=settings, device=device, data=data, model=model, refs=refs, check=check, notes=notes,
                      shift=shifted, tasks=tasks, task_of=task_of, **recalibration(params))


def validate_refs(params, key: str = "ingredients", **kwargs) -> IngredientCheck:
    """`check(params, cfg)` helper: resolve `params[key]` and check the runs (cheap: headers and masks only)."""
    task_settings(params)
    shift_settings(params)
    refs = resolve_ingredients(params.get(key), key)
    check = check_ingredients(refs, key=key, **kwargs)
    check_val_split(params, refs, key=key)
    return check


def open_merge(params, settings, key: str = "ingredients", **check_kwargs) -> MergeSetup:
    """Resolve and check the ingredients again at run time, then `prepare_merge`."""
    refs = resolve_ingredients(params.get(key), key)
    check = check_ingredients(refs, key=key, **check_kwargs)
    return prepare_merge(params, settings, refs, check)


def save_merged(run, setup: MergeSetup, state: dict) -> dict:
    """Save the merged model as checkpoints/model.safetensors (after BN recalibration, if set)."""
    setup.model.load_state_dict(state)
    if setup.recalibrate:
        recalibrate_batchnorm(setup.model, setup.data, fraction=setup.bn_fraction, seed=int(setup.settings.seed))
    final = setup.current_state()
    run.save_checkpoint("model", final)
    record_architecture(run, setup.check.model, setup.check.dataset)
    return final


def record_architecture(run, model: dict, dataset: dict) -> None:
    """Record in run.json the architecture the saved weights have (the ingredients', not this run's config)."""
    run.record("weights_config", {"model": model, "dataset": dataset})


def any_masked(model) -> bool:
    """True when the model already has masked layers (a pruned starting point)."""
    from overparam.models.masked import masked_modules

    return bool(masked_modules(model))
