"""What a merge evaluates its states on besides the ingredients' own splits: a shifted copy of the
dataset (`merge.shift`), the test split of each ingredient's task (`merge.tasks`), and BatchNorm
statistics re-estimated after merging (`merge.bn_recalibrate`)."""

from __future__ import annotations

from overparam.errors import UserError
from overparam.recipes.shared.ingredients import _container, weights_config
from overparam.store.load import RunRef


def task_settings(params) -> bool:
    """`merge.tasks` (of the method's params; False where its Spec has none): evaluate every state on each
    ingredient's own training data (multitask merging); raises UserError on a value that is not true/false."""
    value = params.get("merge.tasks", False)
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


def task_data(data_dir, refs: list[RunRef], device: str) -> tuple[list, list[int]]:
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
            data = load_dataset({**dataset, "val_fraction": 0.0, "label_noise": None}, data_dir,
                                device=device)
            tasks.append((name, data))
        task_of.append(keys[key])
    return tasks, task_of


def shift_settings(params) -> dict:
    """`merge.shift` (of the method's params; unset where its Spec has none): dataset keys (e.g. {variant: noisy})
    of a shifted copy whose test split every merged state is also evaluated on; {} when unset. Raises UserError
    on a value that is not a mapping of scalars."""
    shift = params.get("merge.shift")
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
