"""A method's parameters, declared once: from the declaration come validation, `runner ls method NAME`
and the typed object the recipe receives.

    SPEC = Spec("imp", [Param("prune.rate", "float", 0.2, low=0, high=1, low_open=True, high_open=True,
                              doc="fraction removed per round")], check=_rewind_rules)
    SPEC.validate(cfg)            # one clear line (UserError) for the first bad value
    params = SPEC.parse(cfg)      # params.prune.rate == params["prune.rate"] == 0.2

The messages are those of `overparam.checks` (the value checks every method used before). A cross-field
`check(params, cfg)` sees the typed parameters and the whole config (for shared keys such as
`train.steps` or `dataset.val_fraction`); it may also be given as a "module:function" constant of the
package, imported only when a run is validated, so the declarations stay importable without torch.

Imports nothing heavy: `runner ls` reads these declarations.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from overparam.checks import choice, get, number
from overparam.errors import UserError

# float/int: numbers in [low, high] (open ends allowed); bool; str; choice: one of `choices`;
# run: a run reference (dir or dir@tag); runs: one or several (a list, a multirun dir, a glob);
# list: a list, its items checked by `item` (described by `items`); mapping: a dict of config keys;
# any: a value checked by the spec's own rules (e.g. a model name or mapping).
TYPES = ("float", "int", "bool", "str", "choice", "run", "runs", "list", "mapping", "any")

_MISSING = object()


@dataclass(frozen=True)
class Param:
    """One dotted config key of a method: its type, default, allowed values and a one-line doc."""

    key: str
    type: str
    default: Any = None
    doc: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False
    item: Callable[[Any], bool] | None = None
    items: str = ""
    min_items: int = 0
    message: str = ""

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"{self.key}: unknown parameter type {self.type!r}; one of {', '.join(TYPES)}")
        if self.type == "choice" and not self.choices:
            raise ValueError(f"{self.key}: a choice needs its choices")

    def check(self, cfg: dict) -> None:
        """Raise UserError (one line, the checks.py wording) when `cfg`'s value of this key is bad."""
        value = get(cfg, self.key)
        if self.type in ("float", "int"):
            number(cfg, self.key, low=self.low, high=self.high, low_open=self.low_open, high_open=self.high_open,
                   integer=self.type == "int", optional=self.optional)
        elif value is None:
            if not self.optional and self.type in ("choice", "bool", "str", "list"):
                if self.type == "choice":
                    choice(cfg, self.key, self.choices)
                raise UserError(f"{self.key} is required ({self.kind()})")
        elif self.type == "choice":
            choice(cfg, self.key, self.choices)
        elif self.type == "bool":
            if not isinstance(value, bool):
                raise UserError(f"{self.key}={value!r} must be true or false")
        elif self.type == "str":
            if not isinstance(value, str):
                raise UserError(f"{self.key}={value!r} must be a string")
        elif self.type == "list":
            if (not isinstance(value, (list, tuple)) or len(value) < self.min_items
                    or (self.item is not None and not all(map(self.item, value)))):
                raise UserError(self.message.format(key=self.key, value=value) if self.message
                                else f"{self.key}={value!r} must be a list of {self.items or 'values'}")
        elif self.type == "mapping":
            if not isinstance(value, dict):
                raise UserError(f"{self.key}={value!r} must be a mapping of config keys")
        elif self.type in ("run", "runs"):
            if not isinstance(value, (str, list, tuple)) or (self.type == "run" and not isinstance(value, str)):
                raise UserError(f"{self.key}={value!r} must be a run (<run dir> or <run dir>@<tag>)")

    def kind(self) -> str:
        """The type as a reader sees it in `runner ls method NAME`."""
        return {"float": "a number", "int": "an integer", "bool": "true or false", "str": "a string",
                "choice": "a choice", "run": "a run", "runs": "runs", "list": f"a list of {self.items or 'values'}",
                "mapping": "a mapping", "any": "a value"}[self.type]

    def allowed(self) -> str:
        """Range or choices, as text: `(0, 1]`, `global|layerwise`, `>= 1`."""
        if self.type == "choice":
            return "|".join(self.choices)
        if self.type in ("float", "int") and (self.low is not None or self.high is not None):
            if self.high is None:
                return f"{'>' if self.low_open else '>='} {self.low}"
            if self.low is None:
                return f"{'<' if self.high_open else '<='} {self.high}"
            return f"{'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"
        return ""

    def convert(self, value: Any) -> Any:
        """The typed value a recipe receives (float for float, int for int, tuples for lists)."""
        if value is None:
            return None
        if self.type == "float":
            return float(value)
        if self.type == "int":
            return int(value)
        if self.type == "list" or (self.type == "runs" and isinstance(value, (list, tuple))):
            return tuple(value)
        return value


class Params:
    """A method's typed parameters, read-only: `params["prune.rate"]` or `params.prune.rate`."""

    __slots__ = ("_values", "_prefix")

    def __init__(self, values: dict[str, Any], prefix: str = "") -> None:
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "_prefix", prefix)

    def __getitem__(self, key: str) -> Any:
        full = self._prefix + key
        if full in self._values:
            return self._values[full]
        if any(k.startswith(full + ".") for k in self._values):
            return Params(self._values, full + ".")
        raise KeyError(full)

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no parameter {self._prefix + name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("parameters are read-only")

    def __contains__(self, key: str) -> bool:
        try:
            self[key]
        except KeyError:
            return False
        return True

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def as_dict(self) -> dict[str, Any]:
        """The flat {dotted key: value} view under this prefix."""
        n = len(self._prefix)
        return {k[n:]: v for k, v in self._values.items() if k.startswith(self._prefix)}

    def tree(self) -> dict[str, Any]:
        """The nested view under this prefix: `params["teacher"].tree()` -> {"from": ..., "train": {"steps": ...}}."""
        out: dict[str, Any] = {}
        for dotted, value in self.as_dict().items():
            *parents, leaf = dotted.split(".")
            node = out
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Params) and self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, repr(v)) for k, v in self.as_dict().items())))

    def __repr__(self) -> str:
        return f"Params({self.as_dict()!r})"


Check = Callable[[Params, dict], None]
Rule = Check | str  # a function, or "module:function" (a constant of the package, imported when used)


@dataclass(frozen=True)
class Spec:
    """A method's parameters and its cross-field rules."""

    name: str
    params: tuple[Param, ...] = ()
    check: Rule | tuple[Rule, ...] | None = None
    doc: str = ""
    extends: tuple["Spec", ...] = field(default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", tuple(self.params))
        keys = [p.key for p in self.all_params()]
        duplicated = sorted({k for k in keys if keys.count(k) > 1})
        if duplicated:
            raise ValueError(f"spec {self.name}: {', '.join(duplicated)} declared twice")

    def all_params(self) -> tuple[Param, ...]:
        """This spec's own parameters, then those of the specs it extends."""
        out: list[Param] = list(self.params)
        for base in self.extends:
            out.extend(base.all_params())
        return tuple(out)

    def __iter__(self) -> Iterator[Param]:
        return iter(self.all_params())

    def keys(self) -> list[str]:
        return [p.key for p in self.all_params()]

    def defaults(self) -> dict[str, Any]:
        """{dotted key: default} of every parameter."""
        return {p.key: p.default for p in self.all_params()}

    def checks(self) -> list[Check]:
        """The cross-field rules, its own then the extended specs'; a "module:function" string is imported here."""
        out: list[Check] = []
        rules = self.check if isinstance(self.check, tuple) else (self.check,)
        for rule in rules:
            if isinstance(rule, str):
                module, _, attribute = rule.partition(":")
                out.append(getattr(importlib.import_module(module), attribute))
            elif rule is not None:
                out.append(rule)
        for base in self.extends:
            out.extend(base.checks())
        return out

    def validate(self, cfg: dict) -> Params:
        """Check every value, then the cross-field rules; the first problem ends it with one UserError line."""
        params = self.parse(cfg)
        for rule in self.checks():
            rule(params, cfg)
        return params

    def parse(self, cfg: dict) -> Params:
        """The typed parameters of `cfg` (each value checked; an absent key takes its default)."""
        values = {}
        for param in self.all_params():
            value = get(cfg, param.key, _MISSING)
            if value is _MISSING and (param.default is not None or param.optional):
                value = param.default
            else:  # a required key without a default is reported missing, as a bad value is
                param.check(cfg)
                value = None if value is _MISSING else value
            values[param.key] = param.convert(value)
        return Params(values)

    def table(self) -> list[tuple[str, str, str, str, str]]:
        """(key, type, range or choices, default, doc) rows, for `runner ls method NAME`."""
        return [(p.key, p.type, p.allowed(), _text(p.default), p.doc) for p in self.all_params()]


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    return str(value)


def format_table(rows: Iterable[tuple[str, ...]], header: tuple[str, ...] = ("key", "type", "allowed", "default",
                                                                             "doc")) -> str:
    """Rows as aligned columns (the last column unpadded)."""
    rows = [header, *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1] for r in rows).rstrip()
