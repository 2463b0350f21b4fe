"""The bounded safe readers every file from a run directory goes through (the floor of the store).

YAML through PyYAML's safe loader with no tags, anchors or aliases; JSON without NaN tricks; both
bounded in size and nesting; anything malformed is one clear line (UserError, exit 2).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from overparam.errors import UserError
from overparam.regular import json_int, read_text

# Limits for files read from a run directory; Hydra's own files are a few kilobytes.
MAX_YAML_BYTES = 4 * 1024 * 1024
MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 64


def _check_depth(tree: Any, path: Path) -> Any:
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise UserError(f"{path}: nested deeper than {MAX_DEPTH} levels; refusing to read it")
        if isinstance(node, dict):
            stack.extend((value, depth + 1) for value in node.values())
        elif isinstance(node, list):
            stack.extend((value, depth + 1) for value in node)
    return tree


def yaml_loader():
    """PyYAML's safe loader, libyaml's C parser when PyYAML was built with it (several times faster)."""
    try:
        from yaml import CSafeLoader as Loader
    except ImportError:  # pragma: no cover - PyYAML built without libyaml
        from yaml import SafeLoader as Loader
    return Loader


def _yaml_events_check(text: str, path: Path) -> None:
    """Depth, tags and aliases from the parser's event stream (no objects built, no recursion)."""
    import yaml

    depth = 0
    for event in yaml.parse(text, Loader=yaml_loader()):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise UserError(f"{path}: nested deeper than {MAX_DEPTH} levels; refusing to read it")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            raise UserError(f"{path}: uses a YAML alias (*{event.anchor}); run files are plain data without them")
        tag = getattr(event, "tag", None)
        if tag and not (isinstance(event, yaml.ScalarEvent) and tag == "!") and \
                not (tag.startswith("tag:yaml.org,2002:") and "python" not in tag):
            raise UserError(f"{path}: has the YAML tag {tag}; run files are plain data without tags")


def _read_data(path: str | os.PathLike, limit: int, parse: Callable[[str, Path], Any]) -> Any:
    """`parse(text, path)` of a run file as plain data of bounded depth (None if the file does not exist)."""
    path = Path(path)
    text = read_text(path, limit)
    if text is None:
        return None
    try:
        return _check_depth(parse(text, path), path)
    except RecursionError:
        raise UserError(f"{path}: nested deeper than {MAX_DEPTH} levels; refusing to read it") from None


def _parse_yaml(text: str, path: Path) -> Any:
    import yaml

    try:
        _yaml_events_check(text, path)
        return yaml.load(text, Loader=yaml_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or _one_line(exc)
        raise UserError(f"{path}: not valid YAML{where}: {problem}") from None


def _parse_json(text: str, path: Path) -> Any:
    try:
        return json.loads(text, parse_int=json_int)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except ValueError as exc:
        raise UserError(f"{path}: {exc}; refusing to read it") from None


def read_yaml(path: str | os.PathLike, *, limit: int = MAX_YAML_BYTES) -> Any:
    """A YAML file from a run directory as plain data (None if it does not exist); UserError if it is not data."""
    return _read_data(path, limit, _parse_yaml)


def read_json_file(path: str | os.PathLike, *, limit: int = MAX_JSON_BYTES) -> Any:
    """A JSON file from a run directory (None if it does not exist); UserError if it is malformed or huge."""
    return _read_data(path, limit, _parse_json)
