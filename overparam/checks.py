"""Checks of single config values (one clear line each): the helpers every method's `validate` uses.

They sit below the recipes and the CLI alike, so a recipe checks its keys without importing `cli/`.
"""

from __future__ import annotations

import math
from typing import Any

from overparam.errors import UserError


def get(cfg: dict, dotted: str, default: Any = None) -> Any:
    """A dotted key of a config container, or `default` when absent (None-safe)."""
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def number(cfg: dict, key: str, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, integer: bool = False, optional: bool = False) -> None:
    """Require `key` to be a finite number in the given range."""
    value = get(cfg, key)
    if value is None:
        if optional:
            return
        raise UserError(f"{key} is required (a number)")
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (integer and isinstance(value, float) and not value.is_integer()):
        raise UserError(f"{key}={_short(value)} must be {kind}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{key}={value} must be a finite number")
    lo = "(" if low_open else "["
    hi = ")" if high_open else "]"
    span = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    if low is not None and (value < low or (low_open and value == low)):
        raise UserError(f"{key}={_short(value)} is out of range; allowed: {span}")
    if high is not None and (value > high or (high_open and value == high)):
        raise UserError(f"{key}={_short(value)} is out of range; allowed: {span}")


def _short(value: Any) -> str:
    """A value for a one-line message: a huge number or a long text is cut, not printed whole."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def choice(cfg: dict, key: str, allowed: tuple[str, ...]) -> None:
    """Require `key` to be one of `allowed`."""
    value = get(cfg, key)
    if value not in allowed:
        raise UserError(f"{key}={value!r} is not allowed; choose one of: {', '.join(allowed)}")
