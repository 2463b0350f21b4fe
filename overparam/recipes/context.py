"""What a recipe receives besides its own parameters: the run it writes to and the composed config.

A recipe is `run(params, context) -> summary`: `params` is its typed parameters (its Spec's `parse`), and
`context` carries the store `Run` and, in `context.cfg`, the keys every run shares (model, dataset, train,
optim, hardware, seed, sparsity, paths; `context.seed` for short). A recipe reads its own keys only from `params`; `context.cfg` goes whole only to
the shared helpers that need the config itself (`prepare`, the run identity, level cache keys). Called
without Hydra, a context is built from a plain dict:

    params = spec_for(name).parse(config)          # overparam.specs.spec_for
    summary = recipe(params, Context.from_dict(config, Run(out_dir, config, device="cpu").start()))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Context:
    """The run and the composed config (an OmegaConf DictConfig, read by the shared engine helpers)."""

    cfg: Any
    run: Any

    @classmethod
    def from_dict(cls, config: dict, run: Any) -> "Context":
        """A context from a plain nested dict (no Hydra composition)."""
        from omegaconf import OmegaConf

        return cls(cfg=OmegaConf.create(config), run=run)

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    @property
    def settings(self) -> Any:
        """The keys every run shares, read by attribute (`settings.seed`, `settings.train.steps`,
        `settings.model.name`). New recipes read shared values only through this, never `cfg`."""
        return self.cfg

    def prepare(self):
        """The run's device, data and model factory (`recipes.common.Setup`), made once per context."""
        cached = self.__dict__.get("_setup")
        if cached is None:
            from overparam.recipes.common import prepare

            cached = prepare(self.cfg)
            object.__setattr__(self, "_setup", cached)
        return cached


def call(recipe: Callable, cfg: Any, run: Any) -> dict:
    """Run `recipe` on a composed config: parse the method's parameters from its Spec, build the context."""
    from omegaconf import DictConfig, OmegaConf

    from overparam.params import Params
    from overparam.methods import method_name
    from overparam.specs import spec_for

    container = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    spec = spec_for(method_name(container.get("method") or {}))
    params = spec.parse(container) if spec is not None else Params({})
    context = Context(cfg=cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg), run=run)
    return recipe(params, context) or {}
