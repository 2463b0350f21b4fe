"""What every merge shares: resolving and checking ingredients, streaming them, evaluating, saving.

Ingredients are named by run directories (optionally `<dir>@<tag>`), a multirun directory (all of
its finished jobs) or a glob. They are checked before any work - they exist, finished, and share
architecture, parameter shapes and (where a merge needs it) masks - and loaded one at a time, so
a merge of N models holds about two of them in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from overparam.errors import UserError
from overparam.store.discover import GLOB_CHARS, expand_refs  # noqa: F401 - GLOB_CHARS kept for importers
from overparam.store.load import RunRef, check_finished, saved_config

MASK_SUFFIX = "_mask"


# --- resolving ---------------------------------------------------------------------------------

# Run references are expanded by store (one finder for runs, sweeps and globs).
resolve_ingredients = expand_refs


def ref_text(ref: RunRef) -> str:
    """How a reference is written back to the user (and into summaries)."""
    return f"{ref.root}@{ref.tag}" if ref.tag else str(ref.root)


# --- checking ----------------------------------------------------------------------------------

@dataclass
class IngredientCheck:
    """What the checks learned: the references, their shared model config and tensor shapes."""

    refs: list[RunRef]
    model: dict
    dataset: dict
    seeds: list[int]
    shapes: dict[str, tuple[int, ...]]
    masked: bool = False
    extras: dict = field(default_factory=dict)


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """{key: shape} of a safetensors file, read from its header only."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise UserError(f"corrupt weights {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def _container(node) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def _describe_difference(a: dict, b: dict, prefix: str = "") -> str:
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            found = _describe_difference(va, vb, f"{prefix}{key}.")
            if found:
                return found
        elif va != vb:
            return f"{prefix}{key}={va!r} vs {vb!r}"
    return ""


def weights_config(run_dir):
    """A run's saved config, with the architecture its weights really have (run.json `weights_config`), checked."""
    from overparam.store.load import weights_config as checked

    return checked(run_dir)


def check_ingredients(refs: list[RunRef], *, key: str = "ingredients", same_masks: bool = True,
                      minimum: int = 1, maximum: int | None = None, reference: RunRef | None = None) -> IngredientCheck:
    """Each ingredient exists, finished, has weights, and matches the first (or `reference`):
    model config, dataset, parameter names and shapes, and masks (when `same_masks`).
    UserError names the first mismatch."""
    if len(refs) < minimum:
        raise UserError(f"{key} needs at least {minimum} run(s), got {len(refs)}")
    if maximum is not None and len(refs) > maximum:
        raise UserError(f"{key} takes at most {maximum} run(s), got {len(refs)}")
    first: IngredientCheck | None = None
    first_name = ""
    first_masks: dict | None = None
    seeds = []
    ordered = ([reference] if reference is not None else []) + list(refs)
    for index, ref in enumerate(ordered):
        name = ref_text(ref)
        check_finished(ref.root)
        cfg = weights_config(ref.root)
        if not ref.weights.is_file():
            raise UserError(f"{key}: {name} has no weights at {ref.weights}")
        shapes = tensor_shapes(ref.weights)
        model_cfg, dataset_cfg = _container(cfg.get("model")), _container(cfg.get("dataset"))
        masked = any(k.endswith(MASK_SUFFIX) for k in shapes)
        if reference is None or index > 0:
            seeds.append(int(cfg.get("seed", 0)))
        if first is None:
            first = IngredientCheck(refs=list(refs), model=model_cfg, dataset=dataset_cfg, seeds=[], shapes=shapes,
                                    masked=masked)
            first_name = name
        else:
            if model_cfg != first.model:
                raise UserError(f"{key}: {name} has another architecture than {first_name} "
                                f"({_describe_difference(model_cfg, first.model)})")
            if dataset_cfg.get("name") != first.dataset.get("name"):
                raise UserError(f"{key}: {name} was trained on dataset {dataset_cfg.get('name')}, "
                                f"{first_name} on {first.dataset.get('name')}")
            weights_only = lambda s: {k: v for k, v in s.items() if not k.endswith(MASK_SUFFIX)}  # noqa: E731
            ours, theirs = weights_only(shapes), weights_only(first.shapes)
            for tensor in list(theirs) + [k for k in ours if k not in theirs]:
                if tensor not in ours:
                    raise UserError(f"{key}: {name} has no parameter {tensor} (present in {first_name})")
                if tensor not in theirs:
                    raise UserError(f"{key}: {name} has parameter {tensor} that {first_name} lacks")
                if ours[tensor] != theirs[tensor]:
                    raise UserError(f"{key}: parameter {tensor} has shape {list(ours[tensor])} in {name} "
                                    f"but {list(theirs[tensor])} in {first_name}")
        if same_masks and (masked or first.masked) and (reference is None or index > 0):
            masks = load_masks(ref)
            if first_masks is None:
                first_masks, mask_owner = masks, name
            else:
                _compare_masks(masks, first_masks, name, mask_owner, key)
    assert first is not None
    first.seeds = seeds
    first.masked = first.masked if reference is None else any(k.endswith(MASK_SUFFIX) for k in tensor_shapes(refs[0].weights))
    return first


# Where to go when tickets of different masks are given to a merge (experiment=ticket_soup_distill).
SAME_MASK_ROUTES = ("Routes that keep one mask: fine-tune K copies of one ticket "
                    "(method=finetune from=<imp run>@level_<L> seed=0,1,2), soup those (greedy_soup/uniform_soup "
                    "keep the mask), then distill into the ticket (method=kd teacher.from=<soup run> "
                    "student.from=<imp run>@level_<L>); or ensemble the tickets (method=ensemble), which "
                    "needs no shared mask; see experiment=ticket_soup_distill")


def _compare_masks(masks: dict, reference: dict, name: str, reference_name: str, key: str) -> None:
    import torch

    for tensor in sorted(set(masks) | set(reference)):
        if tensor not in masks or tensor not in reference:
            owner = reference_name if tensor in reference else name
            other = name if tensor in reference else reference_name
            raise UserError(f"{key}: {owner} masks {tensor} but {other} does not (a sparse merge needs the same masks)")
        if not torch.equal(masks[tensor] != 0, reference[tensor] != 0):
            differing = int(((masks[tensor] != 0) != (reference[tensor] != 0)).sum())
            raise UserError(f"{key}: mask {tensor} of {name} differs from {reference_name} in {differing} entries "
                            f"(a sparse merge needs the same masks). {SAME_MASK_ROUTES}")


def load_masks(ref: RunRef) -> dict:
    """The `*_mask` tensors of an ingredient's weights (read without loading the weights)."""
    from safetensors import safe_open

    with safe_open(str(ref.weights), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys() if k.endswith(MASK_SUFFIX)}


def validate_refs(cfg: dict, key: str = "ingredients", **kwargs) -> IngredientCheck:
    """`validate(cfg)` helper: resolve `cfg[key]` and check the runs (cheap: headers and masks only)."""
    task_settings(cfg)
    shift_settings(cfg)
    refs = resolve_ingredients(cfg.get(key), key)
    check = check_ingredients(refs, key=key, **kwargs)
    check_val_split(cfg, refs, key=key)
    return check


def _split_of(ref: RunRef) -> dict:
    from overparam.data.bundle import split_identity

    cfg = weights_config(ref.root)
    return split_identity(_container(cfg.get("dataset")), int(cfg.get("seed", 0) or 0))


def _split_text(split: dict) -> str:
    return f"dataset {split['dataset'].get('name')}, val_fraction {split['val_fraction']:g}, split_seed {split['split_seed']}"


def check_val_split(cfg, refs: list[RunRef], key: str = "ingredients") -> dict:
    """The merge evaluates every ingredient on the first one's val split: refuse (one line naming the ingredient)
    when another ingredient held out other examples and so trained on some of that split, unless
    `merge.allow_val_overlap` is set. Returns the notes a merge summary records."""
    splits = [_split_of(ref) for ref in refs]
    evaluation = splits[0]
    allowed = bool((cfg.get("merge") or {}).get("allow_val_overlap") or False)
    if evaluation["val_fraction"] and not allowed:
        for ref, split in zip(refs[1:], splits[1:]):
            if split != evaluation:
                raise UserError(
                    f"{key}: {ref_text(ref)} trained on examples of the val split this merge evaluates on (it held "
                    f"out {_split_text(split)}; the merge evaluates on {_split_text(evaluation)} from "
                    f"{ref_text(refs[0])}); train the ingredients with one dataset.split_seed, or set "
                    f"merge.allow_val_overlap=true to accept optimistic val numbers")
    return {"val_split_seed": evaluation["split_seed"], "val_split_shared": int(all(s == evaluation for s in splits))}


def validate_base(cfg: dict, check: IngredientCheck | None = None, required: bool = True) -> RunRef | None:
    """Resolve and check `base` (one run) against the ingredients' architecture."""
    value = cfg.get("base")
    if value in (None, "", []):
        if required:
            raise UserError("base is required: the run the ingredients were fine-tuned from (base=<run dir>[@tag])")
        return None
    refs = resolve_ingredients(value, "base")
    if len(refs) != 1:
        raise UserError(f"base names {len(refs)} runs; give exactly one")
    if check is not None:
        check_ingredients(check.refs[:1], key="base", same_masks=False, reference=refs[0])
    else:
        check_ingredients(refs, key="base", same_masks=False)
    return refs[0]


# --- loading and streaming ---------------------------------------------------------------------

def load_weights(ref: RunRef, device: str = "cpu") -> dict:
    """The flat state_dict an ingredient saved."""
    import torch

    from overparam.store.checkpoint import load_state

    state = load_state(ref.weights, device=device)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{ref.weights} is not a model state_dict")
    return state


def is_mask(key: str) -> bool:
    return key.endswith(MASK_SUFFIX)


def is_averaged(key: str, value) -> bool:
    """Floating tensors that merges combine (masks and integer counters are carried over instead)."""
    return value.is_floating_point() and not is_mask(key)


def weighted_average(states: Iterable[dict], weights: Iterable[float] | None = None) -> dict:
    """Streaming weighted mean of state_dicts: one ingredient at a time, float64 accumulators.

    Masks and integer buffers are taken from the first state; masked weights stay exactly zero.
    """
    import torch

    total: dict | None = None
    weight_sum = 0.0
    weights_iter = iter(weights) if weights is not None else None
    for state in states:
        weight = float(next(weights_iter)) if weights_iter is not None else 1.0
        if total is None:
            total = {k: (v.double() * weight if is_averaged(k, v) else v.clone()) for k, v in state.items()}
        else:
            for k, v in state.items():
                if is_averaged(k, v):
                    total[k].add_(v.double(), alpha=weight)
        weight_sum += weight
        del state
    if total is None:
        raise UserError("nothing to average: no ingredients")
    if weight_sum == 0:
        raise UserError("ingredient weights sum to zero")
    return finish_state({k: (v / weight_sum if v.dtype == torch.float64 and not is_mask(k) else v)
                         for k, v in total.items()})


def finish_state(state: dict, like: dict | None = None) -> dict:
    """Cast accumulators back to float32 (or `like`'s dtypes) and zero the weights that masks remove."""
    import torch

    out = {}
    for k, v in state.items():
        target = like[k].dtype if like is not None and k in like else (torch.float32 if v.dtype == torch.float64 else v.dtype)
        out[k] = v.to(target)
    return apply_state_masks(out)


def apply_state_masks(state: dict) -> dict:
    """Multiply every `<name>` by its `<name>_mask` (so masked entries are exactly zero)."""
    for k in list(state):
        if is_mask(k):
            weight_key = k[: -len(MASK_SUFFIX)]
            if weight_key in state:
                state[weight_key] = state[weight_key] * state[k].to(state[weight_key].dtype)
    return state


def stream(refs: list[RunRef], device: str = "cpu") -> Iterator[dict]:
    """Ingredients' state_dicts, one at a time."""
    for ref in refs:
        yield load_weights(ref, device)


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
