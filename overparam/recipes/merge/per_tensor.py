"""Merges that combine every model's copy of one tensor at a time: `slerp`, `nuslerp`, `karcher`,
`model_stock` and `sce`, rows of `ROWS` (each: how its keys make a per-tensor function, whether it takes a
base, how many ingredients). The ingredients are read tensor by tensor from their safetensors files
(`states.lazy`): memory holds one tensor of each model, never whole models. The arithmetic is
spherical.py's, in float64; masks, integer buffers and non-float tensors come from the first ingredient.

- `slerp` (Shoemake 1985; as mergekit merges two models): ingredient 0 at t=0 to ingredient 1 at t=1, row by row;
  `slerp.t` may vary across blocks or by tensor name (gradients.py).
- `nuslerp` (mergekit): SLERP with t = w1 / (w0 + w1) of `nuslerp.weights`, over the flattened tensor, its
  rows or columns; with a `base`, of the two task vectors, added to the base.
- `karcher` (the Riemannian mean on the sphere, mergekit's karcher): equal weights, `max_iter`, `tol`.
- `model_stock` (Jang et al. 2024): the interpolation ratio from the angle between the fine-tuned models
  around the base, per tensor or per row (`filter_wise`).
- `sce` (Wan et al. 2024, FuseChat): select high-variance entries, calculate per-model weights, erase
  minority signs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from overparam.errors import UserError
from overparam.recipes.merge import gradients, spherical
from overparam.recipes.merge.task_vectors import run_merge, validate_inputs
from overparam.recipes.shared import merging as common
from overparam.recipes.shared.ingredients import validate_base
from overparam.recipes.shared.states import finish_state, is_averaged, lazy


def merge_tensors(base, models: list, combine: Callable) -> dict:
    """{key: combine(key, base tensor or None, [each model's tensor])} over the first model's keys, all in
    float64, cast back to the first model's dtypes (masked entries zeroed). `base` and `models`: mappings
    read by key (state dicts or `states.LazyState`)."""
    import torch

    first = models[0]
    merged, dtypes = {}, {}
    for key in first.keys():
        value = first[key]
        dtypes[key] = torch.empty(0, dtype=value.dtype)
        if not is_averaged(key, value):
            merged[key] = value.clone()
            continue
        tensors = [value.double()] + [model[key].double() for model in models[1:]]
        merged[key] = combine(key, base[key].double() if base is not None else None, tensors)
        del tensors, value
    return finish_state(merged, like=dtypes)


def _t_of(setting, key: str, where: dict) -> float:
    value = gradients.value_at(setting, key, where.get(key, 0.0))
    if value is None:
        raise UserError(f"no filter of the setting {setting!r} matches the tensor {key}: add a default "
                        f"{{value: ...}} entry")
    return value


def _slerp(p, names):
    where = gradients.positions(names)
    return lambda key, base, x: spherical.slerp(_t_of(p["t"], key, where), x[0], x[1], float(p["dot_threshold"]))


def _nuslerp(p, names):
    w0, w1 = (float(w) for w in p["weights"])
    t = 0.5 if abs(w0 + w1) < 1e-6 else w1 / (w0 + w1)
    row_wise, flatten = bool(p["row_wise"]), bool(p["flatten"])

    def combine(key, base, x):
        if base is None:
            return spherical.nuslerp(t, x[0], x[1], row_wise=row_wise, flatten=flatten)
        return base + spherical.nuslerp(t, x[0] - base, x[1] - base, row_wise=row_wise, flatten=flatten)
    return combine


def _karcher(p, names):
    return lambda key, base, x: spherical.karcher(x, [1.0 / len(x)] * len(x), int(p["max_iter"]), float(p["tol"]))


@dataclass(frozen=True)
class Row:
    """A per-tensor merge: its function of the method's keys and the tensor names, whether it takes a base
    (required | optional | none), the fewest and most ingredients, and the figures its summary reports."""

    combine: Callable
    base: str
    minimum: int
    maximum: int | None
    figures: Callable


ROWS = {
    "slerp": Row(_slerp, "none", 2, 2, lambda p: {"t": p["t"], "dot_threshold": float(p["dot_threshold"])}),
    "nuslerp": Row(_nuslerp, "optional", 2, 2, lambda p: {
        "weights": list(p["weights"]), "row_wise": bool(p["row_wise"]), "flatten": bool(p["flatten"])}),
    "karcher": Row(_karcher, "none", 2, None, lambda p: {"max_iter": int(p["max_iter"]), "tol": float(p["tol"])}),
    "model_stock": Row(lambda p, names: lambda key, base, x: spherical.model_stock(base, x, bool(p["filter_wise"])),
                       "required", 2, None, lambda p: {"filter_wise": bool(p["filter_wise"])}),
    "sce": Row(lambda p, names: lambda key, base, x: spherical.sce(base, x, float(p["select_topk"])),
               "required", 2, None, lambda p: {"select_topk": float(p["select_topk"])}),
}


def combine_of(preset: str, p, names) -> Callable:
    """The per-tensor function the method `preset` makes of its own keys `p` for tensors named `names`."""
    return ROWS[preset].combine(p, list(names))


def check(params, cfg: dict, preset: str | None = None) -> None:
    """Ingredients (as many as the method takes) and base exist and match; every tensor has its settings."""
    preset = preset or str(cfg["method"]["name"])
    row = ROWS[preset]
    if row.base == "required":
        validate_inputs(params)
    check = common.validate_refs(params, minimum=row.minimum, maximum=row.maximum)
    if row.maximum == row.minimum and len(check.refs) != row.minimum:
        raise UserError(f"{preset} merges exactly {row.minimum} models: ingredients names {len(check.refs)}")
    if row.base == "none" and params.get("base") not in (None, "", []):
        raise UserError(f"{preset} takes no base: it merges the ingredients' weights themselves")
    if row.base == "optional":
        validate_base(params, check, required=False)
    if preset == "slerp":
        where = gradients.positions(check.shapes)
        for key in check.shapes:
            _t_of(params["slerp.t"], key, where)


def run(params, context, preset: str) -> dict:
    """Merge the ingredients tensor by tensor (read lazily), evaluate, save."""
    own, row = params[preset], ROWS[preset]

    def merged_of(base, setup):
        models = lazy(setup.refs, setup.device)
        return merge_tensors(base, models, combine_of(preset, own, models[0].keys()))

    return run_merge(params, context, merged_of, row.figures(own), base_required=row.base == "required")
