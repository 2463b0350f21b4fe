"""Resolve the interpolations a saved or composed config may hold, with no config library below the CLI.

A config is data; its `${...}` strings are the grammar Hydra's configs write and read, limited to what
`overparam.components.SAFE_RESOLVERS` allows (checked before anything is resolved):

    ${paths.output_dir}/.cache           a node (absolute dotted path; `${.key}` relative to the node's parent)
    ${oc.env:NAME,default}               an environment variable (default: a value, may interpolate itself)
    ${oc.select:model.tokenizer,null}    a node or a default
    ${oc.dict.keys:key} ${oc.dict.values:key}
    ${now:%Y-%m-%d}                      the local time
    \\${not.interpolated}                 an escaped literal

A string that is exactly one interpolation takes the value's own type; inside longer text, each value is
its text (`str(value)`, as Hydra's own resolution gives it). Anything else ends with ValueError, which callers report as one line.
"""

from __future__ import annotations

import copy
import os
import re
from typing import Any

_KEY = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*:(.*)$", re.S)
_MAX_DEPTH = 64
# A resolved string longer than this ends resolution: `${a}${a}` chains would otherwise double at each step.
MAX_TEXT = 1 << 20


def has_interpolation(value: Any) -> bool:
    """True when any string of `value` (a nested tree) holds `${`."""
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, dict):
        return any(has_interpolation(k) or has_interpolation(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(has_interpolation(v) for v in value)
    return False


def resolve(tree: dict) -> dict:
    """A deep copy of `tree` with every interpolation replaced by its value."""
    return _Resolver(tree).node(tree, (), 0)


def _scalar(text: str) -> Any:
    """A resolver argument's value: YAML's plain scalars (null, true, 1, 0.5), else the text."""
    lowered = text.lower()
    if lowered in ("null", "~"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _text(value: Any) -> str:
    return str(value)


class _Resolver:
    def __init__(self, root: dict) -> None:
        self.root = root
        self.resolved: dict[tuple, Any] = {}  # each referenced node is resolved once

    def node(self, value: Any, where: tuple, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise ValueError("interpolations nest too deeply (a cycle?)")
        if isinstance(value, dict):
            return {key: self.node(item, (*where, str(key)), depth) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.node(item, (*where, str(index)), depth) for index, item in enumerate(value)]
        if isinstance(value, str) and "${" in value:
            return self.string(value, where, depth + 1)
        return value

    def lookup(self, dotted: str, where: tuple, *, missing: Any = ValueError) -> tuple[Any, tuple]:
        """The raw value at `dotted` and its path (relative `.key` counts from the parent of `where`)."""
        if dotted.startswith("."):
            stripped = dotted.lstrip(".")
            up = len(dotted) - len(stripped)
            base = list(where[:-up]) if up <= len(where) else None
            if base is None:
                raise ValueError(f"${{{dotted}}} reaches above the config's root")
            parts = [*base, *stripped.split(".")] if stripped else base
        else:
            parts = dotted.split(".")
        node: Any = self.root
        for part in parts:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                if missing is ValueError:
                    raise ValueError(f"interpolation key '{dotted}' not found")
                return missing, tuple(parts)
        return node, tuple(parts)

    def string(self, text: str, where: tuple, depth: int) -> Any:
        pieces = _split(text)
        if len(pieces) == 1 and isinstance(pieces[0], tuple):
            return self.expression(pieces[0][1], where, depth)
        out = []
        for piece in pieces:
            if isinstance(piece, tuple):
                out.append(_text(self.expression(piece[1], where, depth)))
            else:
                out.append(piece)
            if sum(map(len, out)) > MAX_TEXT:
                raise ValueError(f"an interpolation makes a value longer than {MAX_TEXT} characters")
        return "".join(out)

    def argument(self, text: str, where: tuple, depth: int) -> Any:
        text = text.strip()
        if "${" in text:
            return self.string(text, where, depth + 1)
        return _scalar(text.replace("\\,", ","))

    def expression(self, inner: str, where: tuple, depth: int) -> Any:
        match = _KEY.match(inner)
        if match is None:
            value, path = self.lookup(inner.strip(), where)
            if path not in self.resolved:
                self.resolved[path] = self.node(value, path, depth + 1)
            return copy.deepcopy(self.resolved[path])
        name, rest = match.group(1), match.group(2)
        args = [self.argument(a, where, depth) for a in _split_args(rest)] if rest.strip() else []
        if name == "oc.env":
            if not args:
                raise ValueError("oc.env needs a variable name")
            variable = str(args[0])
            if variable in os.environ:
                return os.environ[variable]
            if len(args) > 1:
                return None if args[1] is None else args[1]
            raise ValueError(f"Environment variable '{variable}' not found")
        if name == "oc.select":
            default = args[1] if len(args) > 1 else None
            value, path = self.lookup(str(args[0]), where, missing=_ABSENT)
            return default if value is _ABSENT else self.node(value, path, depth + 1)
        if name in ("oc.dict.keys", "oc.dict.values"):
            value, path = self.lookup(str(args[0]), where)
            if not isinstance(value, dict):
                raise ValueError(f"{name}: {args[0]} is not a mapping")
            if name == "oc.dict.keys":
                return list(value)
            return [self.node(item, (*path, str(key)), depth + 1) for key, item in value.items()]
        if name == "now":
            from datetime import datetime

            return datetime.now().strftime(str(args[0]) if args else "")
        raise ValueError(f"Unsupported interpolation type {name}")


_ABSENT = object()


def _split(text: str) -> list:
    """`text` as literal pieces and ("${", inner) pieces, nested braces matched, `\\${` kept literal."""
    pieces: list = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("\\${", i):
            literal.append("${")
            i += 3
            continue
        if text.startswith("${", i):
            level, j = 1, i + 2
            while j < len(text) and level:
                if text.startswith("${", j):
                    level, j = level + 1, j + 2
                    continue
                if text[j] == "}":
                    level -= 1
                j += 1
            if level:
                raise ValueError(f"unclosed interpolation in {text!r}")
            if literal:
                pieces.append("".join(literal))
                literal = []
            pieces.append(("${", text[i + 2:j - 1]))
            i = j
            continue
        literal.append(text[i])
        i += 1
    if literal:
        pieces.append("".join(literal))
    return pieces


def _split_args(text: str) -> list[str]:
    """A resolver's arguments: split at commas outside nested `${...}` and quotes."""
    args, current, level, quote = [], [], 0, None
    i = 0
    while i < len(text):
        char = text[i]
        if quote:
            current.append(char)
            if char == quote:
                quote = None
        elif text.startswith("${", i):
            level += 1
            current.append("${")
            i += 2
            continue
        elif char == "}" and level:
            level -= 1
            current.append(char)
        elif char in "'\"" and level == 0:
            quote = char
            current.append(char)
        elif char == "," and level == 0 and (not current or current[-1] != "\\"):
            args.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    args.append("".join(current))
    return args
