"""Did you mean: the closest names to a mistyped option or key, said before any list of every name.

An option is matched by its spelling (`tie` -> ties) and, failing that, by the words of its one-line
description (`lotery` -> `imp (lottery tickets)`); a key by its dotted name or its last part
(`densty` -> ties.density). Torch-free: `runner ls` uses it and must answer in under a second.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Callable

# Sections whose keys are handed to their component as keyword arguments (the component refuses a
# name it does not take); a key added anywhere else has no reader.
FORWARDED_SECTIONS = ("model", "dataset", "logger")
# Below this many letters a description word is too common to suggest an option by.
MIN_WORD = 4
# Words that do not finish a phrase (`prune at` says less than `prune`).
GLUE = {"a", "an", "and", "at", "by", "for", "from", "in", "of", "on", "or", "the", "to", "vs", "with"}
# Similarity (difflib's ratio) a name, a description word or a key's last part needs to be suggested, how far
# behind the best a suggestion may stay, and the score of a name that holds the typed word.
NAME_CUTOFF, WORD_CUTOFF, KEY_CUTOFF, MARGIN, CONTAINED = 0.7, 0.8, 0.75, 0.15, 0.85


def _words(text: str) -> list[str]:
    """The lower-case words of `text` (`lottery-ticket` gives lottery and ticket)."""
    return re.findall(r"[a-z][a-z0-9]*", text.lower())


def _phrase(description: str, word: str) -> str:
    """The short clause of `description` that holds `word` (`lottery tickets`), else the word and the next."""
    for clause in re.split(r"[():;,]|\. ", description):
        if word in _words(clause):
            if len(clause.split()) <= 4:
                return clause.strip()
            found = re.search(rf"(?i)\b{re.escape(word)}\w*(?:[- ](\w+))?", clause)
            if found is None:
                return word
            whole = found.group(1) and found.group(1).lower() not in GLUE
            return found.group(0) if whole else found.group(0).split()[0]
    return word


def _ranked(scored: list[tuple[float, str]], cutoff: float) -> list[str]:
    """The best-scored names first, leaving out any well behind the best (a distant second helps nobody)."""
    scored = sorted((item for item in scored if item[0] >= cutoff), key=lambda item: -item[0])
    return [name for score, name in scored if score >= scored[0][0] - MARGIN][:3] if scored else []


def _ratio(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def closest_options(value: str, options: list[str], describe: Callable[[str], str] | None = None) -> list[str]:
    """Up to three options `value` may have meant, closest first: `ties`, or `imp (lottery tickets)` found in
    an option's description."""
    # A name that holds what was typed (`soup` in greedy_soup, `distil` in self_distill) is close too.
    scored = [(max(_ratio(value, option), CONTAINED if len(value) >= MIN_WORD and value in option else 0.0), option)
              for option in options]
    if describe is not None and len(value) >= MIN_WORD:
        for option in options:
            description = describe(option)
            words = {w for w in _words(description) if len(w) >= MIN_WORD}
            best = max(((_ratio(value.lower(), w), w) for w in words), default=(0.0, ""))
            if best[0] >= WORD_CUTOFF:
                scored.append((best[0], f"{option} ({_phrase(description, best[1])})"))
    names = _ranked(scored, NAME_CUTOFF)
    return [n for i, n in enumerate(names) if n.split(" ")[0] not in (m.split(" ")[0] for m in names[:i])]


def option_error(group: str, value: str, options: list[str], *, prefix: str | None = None,
                 listing: str | None = None) -> str:
    """`method=lotery is not an option; did you mean imp (lottery tickets)? (runner ls method lists them all)`,
    or every option when none is close. `group` names the config folder whose descriptions are searched too."""
    from overparam.cli.paths import describe
    from overparam.configtree import config_dir

    def description(option: str) -> str:
        path = config_dir() / group / f"{option}.yaml"
        return describe(path) if group and path.is_file() else ""

    head = prefix or f"{group}={value} is not an option"
    meant = closest_options(value, options, description)
    if meant:
        return f"{head}; did you mean {' or '.join(meant)}? ({listing or f'runner ls {group}'} lists them all)"
    return f"{head}; choose one of: {', '.join(options)}"


def dotted_keys(node: Any, prefix: str = "") -> list[str]:
    """Every key of a nested mapping, dotted (`train`, `train.steps`, ...)."""
    if not isinstance(node, dict):
        return []
    keys = []
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        keys.extend(dotted_keys(value, dotted + "."))
    return keys


def closest_keys(key: str, container: dict) -> list[str]:
    """Up to three keys of the composed config `key` may have meant: the same last part elsewhere
    (`from` -> teacher.from), else the closest last parts (`densty` -> ties.density)."""
    parent, _, leaf = key.rpartition(".")
    existing = [k for k in dotted_keys(container)
                if k != key and not k.startswith(key + ".") and not key.startswith(k + ".")]
    same_leaf = [k for k in existing if k.rpartition(".")[2] == leaf]
    if same_leaf:
        return sorted(same_leaf, key=lambda k: k.rpartition(".")[0] != parent)[:3]
    return _ranked([(_ratio(leaf, k.rpartition(".")[2]) + 0.01 * (k.rpartition(".")[0] == parent), k)
                    for k in existing], KEY_CUTOFF)


def _method(container: dict) -> str:
    return str((container.get("method") or {}).get("name", "?"))


def unknown_key_error(override: str, container: dict) -> str:
    """A `key=value` whose key the composed config lacks: the closest keys, and `+` only where a reader takes it."""
    key, _, value = override.partition("=")
    known = closest_keys(key, container)
    hint = f"; did you mean {' or '.join(known)}?" if known else ""
    top = key.split(".")[0]
    if top in FORWARDED_SECTIONS and isinstance(container.get(top), dict) and "." in key:
        # The component takes keywords its config file need not list: then `+` is the right advice.
        hint += f" (a keyword the {top} takes but its config does not list: +{key}={value})"
    elif not known:
        hint = f" (runner train method={_method(container)} --cfg job shows every key)"
    return f"unknown key {key}: nothing in this run (method={_method(container)}) reads it{hint}"


def check_added_keys(overrides: list[str], container: dict) -> None:
    """Refuse a `+key=value` that no part of the composed run reads (it would be silently ignored).

    A config group (`+prune=imp`), the `hydra` section, and keys of the sections forwarded to their
    component (model, dataset, logger) are read; any other new key is not: `method=kd +from=<run>`
    would otherwise train a fresh student and ignore the run.
    """
    from overparam.configtree import config_dir
    from overparam.errors import UserError

    for override in overrides:
        if not override.startswith("+") or override.startswith("++"):
            continue
        key = override[1:].partition("=")[0]
        top = key.split(".")[0].split("@")[0].split("/")[0]
        if top == "hydra" or (config_dir() / top).is_dir() and "." not in key:
            continue
        if top in FORWARDED_SECTIONS and isinstance(container.get(top), dict):
            continue
        known = closest_keys(key, container)
        hint = f"; did you mean {' or '.join(known)}?" if known else ""
        raise UserError(f"+{key} adds a key that nothing in this run (method={_method(container)}) reads{hint}")
