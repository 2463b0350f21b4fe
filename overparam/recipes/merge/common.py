"""What every merge shares: the merge context (device, evaluation data, a model to score states with,
shifted and per-task evaluation), ingredient rows, BN recalibration and saving the merged run.

Ingredients are named by run directories (optionally `<dir>@<tag>`), a multirun directory (all of
its finished jobs) or a glob; `ingredients.py` checks them before any work and `states.py` loads
them one at a time, so a merge of N models holds about two of them in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from overparam.errors import UserError
# Ingredient checks and state arithmetic have modules of their own; merges call them through `common`.
from overparam.recipes.merge.ingredients import (  # noqa: F401
    SAME_MASK_ROUTES, IngredientCheck, _container, check_ingredients, check_val_split, load_masks, ref_text,
    resolve_ingredients, tensor_shapes, validate_base, weights_config)
from overparam.recipes.merge.states import (  # noqa: F401
    MASK_SUFFIX, apply_state_masks, finish_state, is_averaged, is_mask, load_weights, stream, weighted_average)
from overparam.store.discover import GLOB_CHARS  # noqa: F401 - kept for importers
from overparam.store.load import RunRef


# --- the merge context -------------------------------------------------------------------------

@dataclass
class MergeSetup:
    """Device, evaluation data and a model of the ingredients' architecture to evaluate states with."""

    cfg: Any
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

    def evaluate_state(self, state: dict, recalibrate: bool | None = None) -> dict:
        """{"val_accuracy", "val_loss", "test_accuracy", "test_loss"} of a state (BN recalibrated if set)."""
        from overparam.engine.evaluate import evaluate_splits

        self.model.load_state_dict(state)
        if self.recalibrate if recalibrate is None else recalibrate:
            recalibrate_batchnorm(self.model, self.data, fraction=self.bn_fraction, seed=int(self.cfg.seed))
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

    @property
    def recalibrate(self) -> bool:
        merge = self.cfg.get("merge") or {}
        return bool(merge.get("bn_recalibrate", False))

    @property
    def bn_fraction(self) -> float:
        merge = self.cfg.get("merge") or {}
        return float(merge.get("bn_fraction", 0.25) or 0.25)

    def current_state(self) -> dict:
        """The evaluation model's state (after BN recalibration, if any)."""
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}


def prepare_merge(cfg, refs: list[RunRef], check: IngredientCheck) -> MergeSetup:
    """Device, the ingredients' dataset (val split of the first ingredient's seed) and a model template."""
    from overparam.data import load_dataset
    from overparam.engine import setup_hardware
    from overparam.store.load import load_run_model

    device = setup_hardware(cfg.hardware)
    # Every ingredient is evaluated on the first one's val split; one that trained on part of it is
    # refused here (unless merge.allow_val_overlap), and the summary says whether the split was shared.
    notes = check_val_split(cfg, refs)
    first_cfg = weights_config(refs[0].root)
    data = load_dataset(first_cfg.dataset, cfg.paths.data_dir, seed=int(first_cfg.get("seed", 0) or 0), device=device)
    model, _ = load_run_model(refs[0], device=device, data=data)
    shift = shift_settings(cfg)
    shifted = None
    if shift:
        # The same dataset with the shifted settings; only its test split is read (no val split drawn).
        shifted = load_dataset({**_container(first_cfg.dataset), **shift, "val_fraction": 0.0, "label_noise": None},
                               cfg.paths.data_dir, device=device)
        notes = {**notes, "shift": ",".join(f"{k}={v}" for k, v in sorted(shift.items()))}
    tasks, task_of = [], []
    if task_settings(cfg):
        tasks, task_of = _task_data(cfg, refs, device)
        notes = {**notes, "tasks": ",".join(name for name, _ in tasks)}
    return MergeSetup(cfg=cfg, device=device, data=data, model=model, refs=refs, check=check, notes=notes,
                      shift=shifted, tasks=tasks, task_of=task_of)


def task_settings(cfg) -> bool:
    """`merge.tasks`: evaluate every state on each ingredient's own training data (multitask merging);
    raises UserError on a value that is not true/false."""
    value = (cfg.get("merge") or {}).get("tasks", False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise UserError(f"merge.tasks={value!r} must be true or false")
    return value


def _task_key(dataset: dict) -> tuple:
    """What makes two ingredients' tasks the same: their dataset settings, less the split and label noise."""
    from overparam.data.bundle import split_identity

    return tuple(sorted((k, repr(v)) for k, v in split_identity(dataset, 0)["dataset"].items()))


def _task_name(dataset: dict, index: int) -> str:
    """A task's column name: the MNIST-1D variant when that is its only setting, else task<index>."""
    from overparam.data.bundle import split_identity

    settings = split_identity(dataset, 0)["dataset"]
    extra = set(settings) - {"name", "variant", "root"}
    variant = settings.get("variant")
    return str(variant) if variant and not extra and str(variant).isidentifier() else f"task{index}"


def _task_data(cfg, refs: list[RunRef], device: str) -> tuple[list, list[int]]:
    """The test split of each distinct dataset the ingredients trained on, and each ingredient's task index."""
    from overparam.data import load_dataset

    keys: dict = {}
    tasks: list = []
    task_of: list[int] = []
    for ref in refs:
        dataset = _container(weights_config(ref.root).get("dataset"))
        key = _task_key(dataset)
        if key not in keys:
            keys[key] = len(tasks)
            name = _task_name(dataset, len(tasks))
            if any(name == other for other, _ in tasks):
                name = f"task{len(tasks)}"
            data = load_dataset({**dataset, "val_fraction": 0.0, "label_noise": None}, cfg.paths.data_dir,
                                device=device)
            tasks.append((name, data))
        task_of.append(keys[key])
    return tasks, task_of


def shift_settings(cfg) -> dict:
    """`merge.shift`: dataset keys (e.g. {variant: noisy}) of a shifted copy whose test split every merged
    state is also evaluated on; {} when unset. Raises UserError on a value that is not a mapping of scalars."""
    shift = (cfg.get("merge") or {}).get("shift")
    if shift is None:
        return {}
    shift = _container(shift) if not isinstance(shift, dict) else dict(shift)
    if not isinstance(shift, dict) or not shift:
        raise UserError("merge.shift takes dataset keys of the shifted copy, e.g. merge.shift={variant: noisy}")
    for key, value in shift.items():
        if key in ("_target_", "name", "val_fraction", "split_seed", "label_noise", "label_noise_seed"):
            raise UserError(f"merge.shift.{key} cannot be shifted: give the dataset's own settings (variant, ...)")
        if not isinstance(value, (str, int, float, bool)) and value is not None:
            raise UserError(f"merge.shift.{key}={value!r} must be a single value")
    return shift


def validate_refs(cfg: dict, key: str = "ingredients", **kwargs) -> IngredientCheck:
    """`validate(cfg)` helper: resolve `cfg[key]` and check the runs (cheap: headers and masks only)."""
    task_settings(cfg)
    shift_settings(cfg)
    refs = resolve_ingredients(cfg.get(key), key)
    check = check_ingredients(refs, key=key, **kwargs)
    check_val_split(cfg, refs, key=key)
    return check


def open_merge(cfg, key: str = "ingredients", **check_kwargs) -> MergeSetup:
    """Resolve and check the ingredients again at run time, then `prepare_merge`."""
    refs = resolve_ingredients(cfg.get(key), key)
    check = check_ingredients(refs, key=key, **check_kwargs)
    return prepare_merge(cfg, refs, check)


def recalibrate_batchnorm(model, data, fraction: float = 0.25, seed: int = 0, batch_size: int = 256) -> None:
    """Recompute BatchNorm running statistics on a seeded `fraction` of train data.

    Averaged weights do not match the averaged statistics of their ingredients (the statistics of
    a mean of networks are not the mean of their statistics), so merges of BN nets re-estimate them.
    """
    import torch
    from torch import nn

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    count = max(1, int(round(len(data.train_x) * fraction)))
    generator = torch.Generator().manual_seed(int(seed) + 104729)
    index = torch.randperm(len(data.train_x), generator=generator)[:count].to(data.train_x.device)
    saved_momentum = [m.momentum for m in norms]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # cumulative average over all batches seen
    was_training = model.training
    model.train()
    with torch.no_grad():
        for start in range(0, count, batch_size):
            model(data.train_x[index[start:start + batch_size]])
    for module, momentum in zip(norms, saved_momentum):
        module.momentum = momentum
    model.train(was_training)


def ingredient_rows(setup: MergeSetup, refs: list[RunRef] | None = None) -> list[dict]:
    """Val/test of every ingredient (loaded one at a time), evaluated on the merge's data."""
    rows = []
    for index, ref in enumerate(refs or setup.refs):
        metrics = setup.evaluate_state(load_weights(ref, setup.device), recalibrate=False)
        rows.append({"role": "ingredient", "ingredient": index, "name": ref_text(ref), **metrics})
    return rows


def ingredient_figures(rows: list[dict]) -> dict:
    """Best (by val) and mean ingredient figures, for comparing a merge with what went in."""
    if not rows:
        return {}
    select = "val_accuracy" if "val_accuracy" in rows[0] else "test_accuracy"
    best = max(rows, key=lambda r: r[select])
    out = {"ingredients": len(rows), "best_ingredient": best["name"]}
    for metric in ("val_accuracy", "test_accuracy", "val_loss", "test_loss"):
        if metric in best:
            out[f"best_ingredient_{metric}"] = best[metric]
            out[f"mean_ingredient_{metric}"] = sum(r[metric] for r in rows) / len(rows)
    return out


def save_merged(run, setup: MergeSetup, state: dict) -> dict:
    """Save the merged model as checkpoints/model.safetensors (after BN recalibration, if set)."""
    setup.model.load_state_dict(state)
    if setup.recalibrate:
        recalibrate_batchnorm(setup.model, setup.data, fraction=setup.bn_fraction, seed=int(setup.cfg.seed))
    final = setup.current_state()
    run.save_checkpoint("model", final)
    record_architecture(run, setup.check.model, setup.check.dataset)
    return final


def record_architecture(run, model: dict, dataset: dict) -> None:
    """Record in run.json the architecture the saved weights have (the ingredients', not this run's config)."""
    run.record("weights_config", {"model": model, "dataset": dataset})


def masked_sparsity(state: dict) -> dict:
    """Exact sparsity over masked weights of a state (and the count of weights that are nonzero there)."""
    total, kept = 0, 0
    for k, v in state.items():
        if is_mask(k):
            total += v.numel()
            kept += int(v.count_nonzero())
    return {"sparsity": (1.0 - kept / total) if total else 0.0, "remaining_weights": kept} if total else {}


def any_masked(model) -> bool:
    """True when the model already has masked layers (a pruned starting point)."""
    from overparam.models.masked import masked_modules

    return bool(masked_modules(model))
