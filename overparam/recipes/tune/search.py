"""Hyperparameter search with separate tuning and evaluation seeds.

`runner train -m hparams_search=lr_wd` runs an Optuna study (configs/hparams_search/lr_wd.yaml).
Each trial is one job whose recipe is `run` below: it trains the chosen method once per
`search.tuning_seeds` entry (sub-runs `<job>/seed_<s>/`) and returns the mean of the objective
over those seeds, so the search only ever sees its tuning seeds. Afterwards `runner search <sweep dir>`
(overparam/cli/search.py) re-runs the best configuration on `search.eval_seeds`.
"""

from __future__ import annotations

import statistics

from overparam.errors import UserError


def inner_target(cfg) -> str:
    """The searched method's own recipe path, looked up by `method.name` in the method registry."""
    from overparam.components import REGISTRIES, dotted

    name = (cfg.get("method") or {}).get("name")
    if name == "search":
        raise UserError("hparams_search: the searched method cannot be the search itself")
    if name not in REGISTRIES["method"]:
        raise UserError(f"hparams_search: method {name!r} is not registered; choose one of: "
                        f"{', '.join(sorted(REGISTRIES['method']))}")
    return dotted(REGISTRIES["method"][name])


def inner_recipe(cfg):
    """The searched method's recipe (a registered callable)."""
    from overparam.components import resolve

    return resolve("method", {"_target_": inner_target(cfg)}, trust=False)


def _seeds(cfg, key: str) -> list[int]:
    seeds = (cfg.get("search") or {}).get(key)
    if not isinstance(seeds, (list, tuple)) or not seeds:
        raise UserError(f"search.{key} must be a non-empty list of seeds")
    return [int(s) for s in seeds]


def run(params, context) -> dict:
    """One trial: the method on every tuning seed; the summary holds the means (the objective among them)."""
    from overparam.recipes.context import call

    settings, run = context.settings, context.run
    recipe = inner_recipe(settings)
    rows = []
    for seed in _seeds(settings, "tuning_seeds"):
        container = settings.to_dict()
        container["seed"] = seed
        container["method"]["_target_"] = inner_target(settings)
        sub = run.sub_run(f"seed_{seed}", container)
        if sub.done:
            summary = sub.read_summary() or {}
        else:
            summary = call(recipe, container, sub)
            summary.setdefault("method", settings.method.name)
            sub.finish("done", summary=summary)
        rows.append({"seed": seed, **{k: v for k, v in summary.items() if isinstance(v, (int, float))}})
    keys = set.intersection(*(set(row) for row in rows)) - {"seed"}
    means = {key: statistics.fmean(row[key] for row in rows) for key in sorted(keys)}
    return {**means, "tuning_seeds": ",".join(str(r["seed"]) for r in rows), "rows": rows}
