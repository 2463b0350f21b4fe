"""The config tree's location for the CLI (see overparam.configtree), and a config file's one-line description."""

from overparam.configtree import GROUPS, config_dir, group_options  # noqa: F401


def describe(path) -> str:
    """The first sentence of a config file's first comment (its one-line description), which may wrap over
    several comment lines; the text after that sentence's full stop is left out."""
    import re

    text = ""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not text and (line.startswith("# @package") or not line):
                continue
            comment = line.lstrip("#").strip()
            if not line.startswith("#") or not comment:
                break
            if text:
                # Lines after the first are read only up to the sentence's end (". " then a capital, or the end).
                end = re.search(r"\.(\s+(?=[A-Z`(])|$)", comment)
                text += " " + (comment[:end.start() + 1] if end else comment)
            else:
                text = comment
            if text.endswith((".", ".)", ")")):
                break
    return text
