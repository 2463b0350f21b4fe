"""Running a registered method inside another method's run: a search trial trains the searched method once
per tuning seed, each in a sub-run of the trial (`<trial>/seed_<s>/`) that is saved, listed and reproduced
like any run. The CLI resolves the method through the registry by its name and calls its recipe; the recipe
that asks only sees `context.run_method(config, name)`.
"""

from __future__ import annotations

import copy
from typing import Any

from overparam.errors import UserError


def searched_target(config: dict) -> str:
    """The searched method's own recipe path, looked up by `method.name` in the method registry."""
    from overparam.components import REGISTRIES, dotted

    method = config.get("method") or {}
    name = method.get("name")
    if name not in REGISTRIES["method"]:
        raise UserError(f"hparams_search: method {name!r} is not registered; choose one of: "
                        f"{', '.join(sorted(REGISTRIES['method']))}")
    target = dotted(REGISTRIES["method"][name])
    if target == method.get("_target_"):  # the trial's own recipe: it would run itself without end
        raise UserError("hparams_search: the searched method cannot be the search itself")
    return target


def named_models(container: dict) -> dict[str, dict]:
    """configs/model/<name>.yaml of every model a role block names by its name (`teacher.model=cnn1d`), read
    here so that no recipe reads the config tree; an unknown name is one clear line listing the options."""
    from overparam.components import walk
    from overparam.configtree import group_config

    names = {value for where, key, value in walk(container)
             if key == "model" and where.count(".") == 1 and isinstance(value, str)
             and where.split(".")[0] not in ("hydra", "claims", "stages")}
    return {name: group_config("model", name) for name in sorted(names)}


def run_method(parent: Any, config: dict, name: str) -> dict:
    """Run the method `config` names (its `method.name`) in the sub-run `name` of `parent`: once; a finished
    sub-run's summary is read back (a resumed trial trains no seed twice)."""
    from overparam.components import resolve
    from overparam.recipes.context import call

    config = copy.deepcopy(config)
    config["method"]["_target_"] = searched_target(config)
    sub = parent.sub_run(name, config)
    if sub.done:
        return sub.read_summary() or {}
    summary = call(resolve("method", {"_target_": config["method"]["_target_"]}, trust=False), config, sub,
                   launch=run_method, models=named_models(config))
    summary.setdefault("method", config["method"]["name"])
    sub.finish("done", summary=summary)
    return summary
