"""The keys every run shares, typed and read-only: what a recipe reads through `context.settings`.

The CLI composes and resolves the config, then builds `Settings.from_dict(config)` once; nothing below it
sees Hydra or its config objects. A Settings is a frozen attribute tree over the plain resolved dict:

    settings.seed, settings.sparsity                       # top-level shared keys
    settings.train.steps, settings.optim.lr                # declared groups (overparam.specs.SHARED)
    settings.model.name, settings.model.get("widths")      # open-ended groups: attributes and .get
    dict(settings.train), settings.to_dict()               # plain copies for the engine helpers

Every key `overparam.specs.SHARED` declares is checked against its declaration when the tree is built (an
int is an int, a choice one of its choices); values stay as the config gave them (a float key written `1`
reads 1), so a config rebuilt from the tree hashes as the original did. Lists read as tuples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Iterator

_MISSING = object()


def _freeze(value: Any) -> Any:
    if isinstance(value, Settings):
        return value
    if isinstance(value, Mapping):
        return Settings(value)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item) for item in value)
    return value


def plain(value: Any) -> Any:
    """`value` as plain containers: mappings as dicts, sequences (a Settings' tuples too) as lists."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain(item) for item in value]
    return value


class Settings(Mapping):
    """A read-only mapping whose keys also read as attributes; nested mappings are Settings too."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping | None = None) -> None:
        object.__setattr__(self, "_items", {key: _freeze(value) for key, value in (items or {}).items()})

    @classmethod
    def from_dict(cls, config: Mapping) -> "Settings":
        """The settings of a config as a file holds it: its interpolations resolved (`overparam.interpolation`),
        then checked as `resolved` does."""
        from overparam.interpolation import has_interpolation, resolve

        tree = plain(config)
        if has_interpolation(tree):
            try:
                tree = resolve(tree)
            except ValueError as exc:
                from overparam.errors import UserError

                raise UserError(f"the config does not resolve: {exc}") from None
        return cls.resolved(tree)

    @classmethod
    def resolved(cls, config: Mapping) -> "Settings":
        """The settings of a resolved config (the CLI's); each shared key it holds is checked against
        `specs.SHARED` (a UserError names the first bad value)."""
        check_shared(config)
        return cls(config)

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_items":
            raise AttributeError(name)
        try:
            return self._items[name]
        except KeyError:
            raise AttributeError(f"no setting {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("settings are read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("settings are read-only")

    def __reduce__(self):
        return (Settings, (self.to_dict(),))

    def select(self, dotted: str, default: Any = None) -> Any:
        """The value at a dotted path (`"dataset.tokenizer"`), or `default` where any part is absent."""
        node: Any = self
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return node

    def to_dict(self) -> dict:
        """A plain, mutable deep copy (lists as lists)."""
        return plain(self)

    def __repr__(self) -> str:
        return f"Settings({self.to_dict()!r})"


def check_shared(config: Mapping) -> None:
    """Check every key of `specs.SHARED` that `config` sets (types, ranges, choices): one UserError line."""
    from overparam.checks import get
    from overparam.specs import SHARED

    tree = plain(config)
    for param in SHARED:
        if get(tree, param.key, _MISSING) is not _MISSING:
            param.check(tree)
