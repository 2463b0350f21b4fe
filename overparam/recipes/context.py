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

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable

from overparam.settings import Settings


# Runs the registered method a config names in a sub-run of `parent`: launch(parent, config, name) -> summary.
Launch = Callable[[Any, dict, str], dict]


@dataclass(frozen=True)
class Context:
    """The run and the shared settings of one recipe call; `launch`: the runner's way to run another
    registered method in a sub-run (given by the CLI; None where a recipe is called directly)."""

    settings: Settings
    run: Any
    launch: Launch | None = None
    # configs/model/<name>.yaml of each model a role block names by its name (`teacher.model=cnn1d`), read by
    # the CLI; a recipe never reads the config tree.
    models: Mapping[str, dict] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, config: dict, run: Any, models: Mapping[str, dict] | None = None) -> "Context":
        """A context from a plain nested dict (no Hydra composition); `models`: the model configs a role block
        names by name, when it does."""
        return cls(settings=Settings.from_dict(config), run=run, models=dict(models or {}))

    @property
    def seed(self) -> int:
        return int(self.settings.seed)

    def run_method(self, config: dict, name: str) -> dict:
        """Run the method `config` names in the sub-run `name` of this run (a search's tuning seeds)."""
        if self.launch is None:
            from overparam.errors import UserError

            raise UserError("this method runs other methods in its run: start it with runner train")
        return self.launch(self.run, config, name)

    def prepare(self):
        """The run's device, data and model factory (`recipes.common.Setup`), made once per context."""
        cached = self.__dict__.get("_setup")
        if cached is None:
            from overparam.recipes.common import prepare

            cached = prepare(self.settings)
            object.__setattr__(self, "_setup", cached)
        return cached


def call(recipe: Callable, settings: Settings | dict, run: Any, launch: Launch | None = None,
         models: Mapping[str, dict] | None = None) -> dict:
    """Run `recipe` on a resolved config: parse the method's parameters from its Spec, build the context."""
    from overparam.methods import method_name
    from overparam.params import Params
    from overparam.specs import spec_for

    settings = settings if isinstance(settings, Settings) else Settings.resolved(settings)
    container = settings.to_dict()
    spec = spec_for(method_name(container.get("method") or {}))
    params = spec.parse(container) if spec is not None else Params({})
    return recipe(params, Context(settings=settings, run=run, launch=launch, models=dict(models or {}))) or {}
