"""Ingredients of a merge: resolving run references and checking them before any work (finished,
same architecture and parameter shapes, the same masks where a merge needs them, the same
validation split), one clear line for the first mismatch."""

from __future__ import annotations

from dataclasses import dataclass, field
from overparam.errors import UserError
from overparam.recipes.shared.states import MASK_SUFFIX
from overparam.store.checkpoint import load_tensors_ending, tensor_shapes
from overparam.store.discover import expand_refs
from overparam.store.load import RunRef, check_finished


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


def _container(node) -> dict:
    """A saved config's group (a Settings node) as a plain dict; {} when absent."""
    from overparam.settings import plain

    return plain(node) if node is not None else {}


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
        if not ref.has_weights():
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
    return load_tensors_ending(ref.weights, MASK_SUFFIX)


def _split_of(ref: RunRef) -> dict:
    from overparam.data.bundle import split_identity

    cfg = weights_config(ref.root)
    return split_identity(_container(cfg.get("dataset")), int(cfg.get("seed", 0) or 0))


def _split_keys(split: dict) -> dict:
    """A split identity as the dotted keys a user sets: dataset.name, dataset.variant, dataset.split_seed, ..."""
    keys = {f"dataset.{k}": v for k, v in split["dataset"].items()}
    keys.update({"dataset.val_fraction": split["val_fraction"], "dataset.split_seed": split["split_seed"]})
    return keys


def _split_difference(split: dict, evaluation: dict) -> str:
    """The keys whose values make two val splits differ: `dataset.variant=warped vs noisy`."""
    mine, theirs = _split_keys(split), _split_keys(evaluation)
    def shown(value):
        return "unset" if value is None else value

    return ", ".join(f"{key}={shown(mine.get(key))} vs {shown(theirs.get(key))}"
                     for key in sorted(set(mine) | set(theirs)) if mine.get(key) != theirs.get(key))


def check_val_split(params, refs: list[RunRef], key: str = "ingredients") -> dict:
    """The merge evaluates every ingredient on the first one's val split: refuse (one line naming the ingredient)
    when another ingredient held out other examples and so trained on some of that split, unless
    `merge.allow_val_overlap` is set. Returns the notes a merge summary records."""
    splits = [_split_of(ref) for ref in refs]
    evaluation = splits[0]
    allowed = bool(params.get("merge.allow_val_overlap") or False)
    if evaluation["val_fraction"] and not allowed:
        for ref, split in zip(refs[1:], splits[1:]):
            if split != evaluation:
                raise UserError(
                    f"{key}: {ref_text(ref)} trained on examples of the val split this merge evaluates on (its split "
                    f"differs from that of {ref_text(refs[0])}, whose val split the merge evaluates on: "
                    f"{_split_difference(split, evaluation)}); train the ingredients with one dataset split, or set "
                    f"merge.allow_val_overlap=true to accept optimistic val numbers")
    return {"val_split_seed": evaluation["split_seed"], "val_split_shared": int(all(s == evaluation for s in splits))}


def validate_base(params, check: IngredientCheck | None = None, required: bool = True) -> RunRef | None:
    """Resolve and check the method's `base` param (one run) against the ingredients' architecture."""
    value = params.get("base")
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
