"""A saved config from elsewhere is data, not code: only allowlisted `_target_`s may be instantiated.

`check_targets(config)` walks a config (a plain dict, or a DictConfig) and refuses any `_target_`
outside ALLOWED_PREFIXES with one clear line. `runner reproduce` calls it on every saved config it
runs; `runner train` should call it when given a config from outside the repository's `configs/`
(`--config-path` / `--config-dir`). `trust=True` (the `--trust` flag) skips the check.
"""

from __future__ import annotations

from typing import Any, Iterator

from overparam.errors import UserError

ALLOWED_PREFIXES = ("overparam.", "torch.optim.", "torch.nn.", "torchvision.models.")
# Hydra's own launcher/sweeper plugins, allowed in the `hydra` section of a saved run only.
HYDRA_PREFIXES = ("hydra._internal.", "hydra_plugins.")


def iter_targets(tree: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every `_target_` key in a nested dict/list config."""
    if hasattr(tree, "items") and not isinstance(tree, dict):  # a DictConfig: read it as plain data
        from omegaconf import OmegaConf

        tree = OmegaConf.to_container(tree, resolve=False)
    if isinstance(tree, dict):
        for key, value in tree.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                yield where, value
            else:
                yield from iter_targets(value, where)
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            yield from iter_targets(value, f"{path}[{index}]")


def target_allowed(target: Any, prefixes: tuple[str, ...] = ALLOWED_PREFIXES) -> bool:
    """True when `target` is a dotted name under one of `prefixes` (no interpolation, no odd characters)."""
    if not isinstance(target, str) or "${" in target:
        return False
    parts = target.split(".")
    if not all(part.isidentifier() for part in parts):
        return False
    return any(target.startswith(prefix) for prefix in prefixes)


def check_targets(config: Any, *, trust: bool = False, source: str = "config",
                  prefixes: tuple[str, ...] = ALLOWED_PREFIXES) -> None:
    """Raise UserError at the first `_target_` outside the allowlist, unless `trust`."""
    if trust:
        return
    for where, target in iter_targets(config):
        allowed = prefixes + HYDRA_PREFIXES if where.startswith("hydra.") else prefixes
        if not target_allowed(target, allowed):
            raise UserError(f"{source}: {where}={target!r} is outside the allowed targets "
                            f"({', '.join(p + '*' for p in prefixes)}); refusing to run it "
                            f"(pass --trust if you trust where this config came from)")


def _override_trees(overrides: list[str], source: str) -> Iterator[dict]:
    """Each override as the nested config it sets (`a.b=x` -> {"a": {"b": x}}; a sweep gives one per value).

    Read with Hydra's own override parser, so quoting, escapes and `key={...}` / `key=[...]` values
    mean here what they mean to Hydra.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides([str(o) for o in overrides])
    except HydraException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{source}: an override does not parse ({first})") from None
    for override in parsed:
        if override.is_delete():
            continue
        if override.is_sweep_override():
            try:
                values = list(override.sweep_iterator())
            except HydraException:  # interval or glob: numbers or option names, checked as text
                values = [str(override.value())]
        else:
            values = [override.value()]
        for value in values:
            tree: Any = value
            for part in reversed(override.key_or_group.split(".")):
                tree = {part: tree}
            yield tree


def check_override_targets(overrides: list[str], *, trust: bool = False, source: str = "overrides") -> None:
    """The same check for command-line overrides saved with a run (`a._target_=x`, `a={_target_: x}`...)."""
    if trust:
        return
    for tree in _override_trees(overrides, source):
        for where, target in iter_targets(tree):
            allowed = ALLOWED_PREFIXES + HYDRA_PREFIXES if where.startswith("hydra.") else ALLOWED_PREFIXES
            if not target_allowed(target, allowed):
                raise UserError(f"{source}: {where}={target!r} is outside the allowed targets "
                                f"({', '.join(p + '*' for p in ALLOWED_PREFIXES)}); refusing to run it "
                                f"(pass --trust if you trust where this config came from)")
