"""What a recipe receives besides its own parameters: the run it writes to and the shared settings.

A recipe is `run(params, context) -> summary`: `params` is its typed parameters (its Spec's `parse`), and
`context` carries the store `Run` and, in `context.settings`, the keys every run shares, typed and read-only
(`overparam.settings.Settings`: `settings.seed`, `settings.train.steps`, `settings.model.get("widths")`;
`context.seed` for short). `context.prepare()` gives the device, data and model factory. A recipe reads its
own keys only from `params`. Called without Hydra, a context is built from a plain dict:

    params = spec_for(name).parse(config)          # overparam.specs.spec_for
    summary = recipe(params, Context.from_dict(config, Run(out_dir, config, device="cpu").start()))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from overparam.settings import Settings


@dataclass(frozen=True)
class Context:
    """The run and the shared settings of one recipe call."""

    settings: Settings
    run: Any

    @classmethod
    def from_dict(cls, config: dict, run: Any) -> "Context":
        """A context from a plain nested dict (no Hydra composition)."""
        return cls(settings=Settings.from_dict(config), run=run)

    @property
    def seed(self) -> int:
        return int(self.settings.seed)

    def prepare(self):
        """The run's device, data and model factory (`recipes.common.Setup`), made once per context."""
        cached = self.__dict__.get("_setup")
        if cached is None:
            from overparam.recipes.common import prepare

            cached = prepare(self.settings)
            object.__setattr__(self, "_setup", cached)
        return cached


def call(recipe: Callable, settings: Settings | dict, run: Any) -> dict:
    """Run `recipe` on a resolved config: parse the method's parameters from its Spec, build the context."""
    from overparam.methods import method_name
    from overparam.params import Params
    from overparam.specs import spec_for

    settings = settings if isinstance(settings, Settings) else Settings.resolved(settings)
    container = settings.to_dict()
    spec = spec_for(method_name(container.get("method") or {}))
    params = spec.parse(container) if spec is not None else Params({})
    return recipe(params, Context(settings=settings, run=run)) or {}
