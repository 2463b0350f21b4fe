"""A fast reader for the block YAML that Hydra/OmegaConf write (`.hydra/config.yaml`, `overrides.yaml`).

PyYAML needs ~5 ms per run config even with its C parser (object construction is Python), which
makes an index of thousands of runs slow. The files Hydra writes use a small subset of YAML: block
mappings, block sequences, plain or single-quoted scalars, `[]`/`{}`. `parse` reads that subset in
one pass and returns `None` for anything else (double quotes, flow collections, multi-line
scalars, anchors, tags...), so the caller falls back to PyYAML: the result is always what PyYAML
gives, only faster for the common case. Scalars follow PyYAML's YAML 1.1 rules.
"""

from __future__ import annotations

import re
from typing import Any

_INT = re.compile(r"^[-+]?(0|[1-9][0-9_]*)$")
_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+][0-9]+)?$")
_SPECIAL_FLOAT = {".inf": float("inf"), ".Inf": float("inf"), ".INF": float("inf"), "+.inf": float("inf"),
                  "-.inf": float("-inf"), "-.Inf": float("-inf"), "-.INF": float("-inf"),
                  ".nan": float("nan"), ".NaN": float("nan"), ".NAN": float("nan")}
_NULL = {"", "~", "null", "Null", "NULL"}
_TRUE = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON", "y", "Y"}
_FALSE = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF", "n", "N"}
# Characters that make a plain scalar something this reader does not handle.
_UNSAFE_START = set("\"&*!|>%@`{[,?#")


class _Unsupported(Exception):
    pass


def _scalar(text: str) -> Any:
    if text in _NULL:
        return None
    if text[0] in _UNSAFE_START or " #" in text or text.endswith(":") or ": " in text:
        if text == "[]":
            return []
        if text == "{}":
            return {}
        raise _Unsupported(text)
    if text[0] == "'":
        if len(text) < 2 or text[-1] != "'":
            raise _Unsupported(text)
        inner = text[1:-1]
        if "'" in inner.replace("''", ""):
            raise _Unsupported(text)
        return inner.replace("''", "'")
    if text in _TRUE and text not in ("y", "Y", "n", "N"):
        return True
    if text in _FALSE and text not in ("y", "Y", "n", "N"):
        return False
    if _INT.match(text):
        return int(text.replace("_", ""))
    if _FLOAT.match(text) and any(c.isdigit() for c in text):
        return float(text.replace("_", ""))
    if text in _SPECIAL_FLOAT:
        return _SPECIAL_FLOAT[text]
    if text[0] in "-+0123456789." and not text.lstrip("-+").replace(".", "").isalpha():
        # Octal, hex, sexagesimal, timestamps...: PyYAML has rules for these; let it decide.
        raise _Unsupported(text)
    if text[0] == "-" and len(text) > 1 and text[1] == " ":
        raise _Unsupported(text)
    return text


def _lines(text: str) -> list[tuple[int, str]]:
    out = []
    for raw in text.split("\n"):
        stripped = raw.rstrip()
        if not stripped or stripped.lstrip().startswith("#"):
            continue
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise _Unsupported("tab indentation")
        if stripped.startswith(("---", "...", "%")):
            raise _Unsupported("document markers")
        indent = len(stripped) - len(stripped.lstrip(" "))
        out.append((indent, stripped[indent:]))
    return out


def _block(lines: list[tuple[int, str]], start: int, indent: int) -> tuple[Any, int]:
    """Parse the block (mapping or sequence) whose lines start at `start` with this indent."""
    if lines[start][1].startswith("- ") or lines[start][1] == "-":
        return _sequence(lines, start, indent)
    return _mapping(lines, start, indent)


def _sequence(lines, index, indent) -> tuple[list, int]:
    items: list = []
    while index < len(lines):
        level, content = lines[index]
        is_item = content.startswith("- ") or content == "-"
        if level < indent or (level == indent and not is_item):
            break  # Hydra writes a mapping's sequence at the key's own indent; the next key ends it
        if level > indent:
            raise _Unsupported("sequence layout")
        rest = content[2:].strip() if content != "-" else ""
        if not rest:
            if index + 1 < len(lines) and lines[index + 1][0] > indent:
                value, index = _block(lines, index + 1, lines[index + 1][0])
                items.append(value)
                continue
            items.append(None)
            index += 1
            continue
        if _is_key(rest):
            # "- key: value" starts a mapping whose keys sit two columns in.
            inner = [(indent + 2, rest)]
            end = index + 1
            while end < len(lines) and lines[end][0] > indent:
                inner.append(lines[end])
                end += 1
            value, used = _mapping(inner, 0, indent + 2)
            if used != len(inner):
                raise _Unsupported("sequence mapping layout")
            items.append(value)
            index = end
            continue
        items.append(_scalar(rest))
        index += 1
    return items, index


def _is_key(content: str) -> bool:
    if content[0] in "'\"":
        return False
    key, sep, _ = content.partition(":")
    return bool(sep) and (content.endswith(":") or content[len(key) + 1: len(key) + 2] == " ")


def _mapping(lines, index, indent) -> tuple[dict, int]:
    mapping: dict = {}
    while index < len(lines):
        level, content = lines[index]
        if level < indent:
            break
        if level > indent or not _is_key(content):
            raise _Unsupported("mapping layout")
        key_text, _, rest = content.partition(":")
        key = _scalar(key_text.strip()) if key_text.strip() else None
        if not isinstance(key, (str, int, float, bool)) or key in mapping:
            raise _Unsupported("key")
        rest = rest.strip()
        index += 1
        if rest:
            mapping[key] = _scalar(rest)
        elif index < len(lines) and (lines[index][0] > indent or
                                     (lines[index][0] == indent and lines[index][1].startswith("- "))):
            value, index = _block(lines, index, lines[index][0])
            mapping[key] = value
        else:
            mapping[key] = None
    return mapping, index


def parse(text: str) -> Any:
    """The parsed document, or None when it uses YAML this reader does not handle (use PyYAML then)."""
    try:
        lines = _lines(text)
        if not lines:
            return None
        if lines[0][0] != 0:
            return None
        if len(lines) == 1 and not _is_key(lines[0][1]) and not lines[0][1].startswith("- "):
            return None  # a bare scalar document: rare, let PyYAML handle it
        value, used = _block(lines, 0, 0)
        return value if used == len(lines) else None
    except (_Unsupported, IndexError, ValueError):
        return None
