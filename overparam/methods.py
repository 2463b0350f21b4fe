"""Every method of the package, each declared once next to its parameters: `declare(SPEC, family)`.

A declaration names the method (its Spec's name), its Spec, its family and its run function by a
"module:function" path that is imported only when the method runs, so this module and the declaring
modules (`overparam/recipes/params.py`, `overparam/recipes/<family>/params.py`) stay torch-free:
`runner ls method`, validation and the component registry (`overparam.components`) read them all
without loading a recipe. A method that differs from another only by its settings (the task-vector
presets) names a shared run function with `preset=True`: it is called with `preset=<its name>`.

Adding a method is one recipe module, its `declare(...)` beside its Spec and its configs/method/<name>.yaml.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from dataclasses import dataclass
from typing import Any, Callable

# The recipe families, bottom-up order of no importance; each declares its methods in recipes/<family>/params.py.
FAMILIES = ("prune", "merge", "tune", "distill", "analysis", "quantize")
_DECLARING = ("overparam.recipes.params",) + tuple(f"overparam.recipes.{family}.params" for family in FAMILIES)


@dataclass(frozen=True)
class Method:
    """One method: its Spec, its family and the recipe that runs it (imported on demand)."""

    name: str
    spec: Any
    family: str | None
    run: str  # "module:function"
    target: str  # the `_target_` configs/method/<name>.yaml gives (part of every run's identity)
    preset: bool = False
    usage: str = ""  # the command that runs it, when not `runner train method=<name>`

    @property
    def doc(self) -> str:
        return self.spec.doc

    def load(self) -> Callable:
        """The recipe `run(params, context) -> summary` (imports the recipe module)."""
        module, _, attribute = self.run.partition(":")
        function = getattr(importlib.import_module(module), attribute)
        return functools.partial(function, preset=self.name) if self.preset else function


_METHODS: dict[str, Method] = {}


def declare(spec: Any, family: str | None, *, module: str | None = None, check: bool = False, preset: bool = False,
            target: str | None = None, usage: str = "") -> Method:
    """Declare the method `spec.name` of `family` (None: the family-less `dense`).

    `module`: the recipe module's name inside the family folder (default: the method's name); its `run`
    is the recipe. `check`: the module also has `check(params, cfg)`, the rule that opens input runs
    (added to the Spec's rules, imported only when a config is validated). `target`: the `_target_` of
    the method's YAML when it is not `<module path>.run`. `usage`: the command that runs it, when not
    `runner train method=<name>` (`runner ls method <name>` shows it).
    """
    package = f"overparam.recipes.{family}" if family else "overparam.recipes"
    path = f"{package}.{module or spec.name}"
    if check:
        rules = spec.check if isinstance(spec.check, tuple) else ((spec.check,) if spec.check else ())
        spec = dataclasses.replace(spec, check=rules + (f"{path}:check",))
    method = Method(spec.name, spec, family, f"{path}:run", target or f"{path}.run", preset, usage)
    if _METHODS.get(method.name, method) != method:
        raise ValueError(f"method {method.name} declared twice")
    _METHODS[method.name] = method
    return method


def methods() -> dict[str, Method]:
    """{name: Method} of every method of the package (imports the torch-free declaring modules)."""
    for module in _DECLARING:
        importlib.import_module(module)
    return dict(_METHODS)


def by_target(target: Any) -> str | None:
    """The name of the method whose `_target_` is exactly `target`, or None."""
    return next((m.name for m in methods().values() if m.target == target), None)


def method_name(method: dict) -> str | None:
    """The registered name of the method a config selects: by its `_target_` when given, else its `name`."""
    target = method.get("_target_")
    return by_target(target) if target else method.get("name")
