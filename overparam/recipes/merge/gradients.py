"""Per-layer and per-name values of a merge setting, as mergekit writes them (torch-free).

A setting is a number (every tensor), a gradient list `[v0, v1, ..., vk]` (interpolated across the
model's numbered blocks: the block at position t in [0, 1] takes the linear interpolation at t * k), or a
list of filters `[{filter: self_attn, value: ...}, {value: ...}]` (the first whose `filter` is a substring
of the tensor's name, or that has none or `*`, gives the value; that value may itself be a gradient).

A tensor's position t: the first integer component of its dotted name numbers its block (`blocks.3.`,
`model.layers.3.`, `transformer.h.3.`); its rank among the distinct numbers under the same prefix, over
(count - 1), is t (1 when there is one block). Tensors outside numbered blocks (embeddings, final norm,
head, every layer of a model without numbered blocks) take t = 0, as mergekit's pre- and post-block weights.
"""

from __future__ import annotations

from typing import Any, Iterable

from overparam.errors import UserError


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _filters(setting: Any) -> list | None:
    """The filter list of a setting, or None when it is a number or a plain gradient."""
    if isinstance(setting, dict):
        return [setting]
    if isinstance(setting, (list, tuple)) and setting and all(isinstance(e, dict) for e in setting):
        return list(setting)
    return None


def check_setting(key: str, setting: Any, low: float | None = None, high: float | None = None) -> None:
    """One line (UserError) unless `setting` is a number, a gradient list or a filter list whose numbers
    all lie in [low, high]."""
    hint = (f"{key}={setting!r} must be a number, a list of numbers (a gradient across blocks) or a list of "
            f"{{filter: <name part>, value: ...}}")
    filters = _filters(setting)
    if filters is not None:
        for entry in filters:
            if set(entry) - {"filter", "value"} or "value" not in entry or _filters(entry["value"]) is not None:
                raise UserError(hint)
            if entry.get("filter") is not None and not isinstance(entry["filter"], str):
                raise UserError(hint)
            check_setting(key, entry["value"], low, high)
        return
    values = list(setting) if isinstance(setting, (list, tuple)) else [setting]
    if not values or not all(_is_number(v) for v in values):
        raise UserError(hint)
    for value in values:
        if (low is not None and value < low) or (high is not None and value > high):
            raise UserError(f"{key}={setting!r} must lie in [{low}, {high}]")


def value_at(setting: Any, name: str, t: float) -> float | None:
    """The setting's value for tensor `name` at block position `t` (mergekit's evaluate_setting);
    None when no filter matches."""
    filters = _filters(setting)
    if filters is not None:
        for entry in filters:
            where = entry.get("filter")
            if where is None or where == "*" or where in name:
                return value_at(entry["value"], name, t)
        return None
    if _is_number(setting):
        return float(setting)
    values = [float(v) for v in setting]
    scaled = t * (len(values) - 1)
    low = int(scaled)
    high = min(len(values) - 1, low + 1)
    fraction = scaled - low
    return (1 - fraction) * values[low] + fraction * values[high]


def positions(names: Iterable[str]) -> dict[str, float]:
    """{name: t} of every tensor name (see the module doc)."""
    names = list(names)

    def block(name: str):
        parts = name.split(".")
        for index, part in enumerate(parts):
            if part.isdigit():
                return ".".join(parts[:index]), int(part)
        return None

    numbers: dict[str, set] = {}
    for name in names:
        found = block(name)
        if found:
            numbers.setdefault(found[0], set()).add(found[1])
    ranks = {prefix: {n: i for i, n in enumerate(sorted(found))} for prefix, found in numbers.items()}
    out = {}
    for name in names:
        found = block(name)
        if found is None:
            out[name] = 0.0
        else:
            count = len(ranks[found[0]])
            out[name] = ranks[found[0]][found[1]] / (count - 1) if count > 1 else 1.0
    return out
