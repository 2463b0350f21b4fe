"""`runner ls [group]`: what exists, one line each, read from the config files (no torch import)."""

from __future__ import annotations

import argparse

from overparam.cli.paths import GROUPS, config_dir, group_options

ALIASES = {"methods": "method", "models": "model", "datasets": "dataset", "experiments": "experiment",
           "loggers": "logger", "searches": "hparams_search"}


def describe(path) -> str:
    """The first comment line of a config file (its one-line description)."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line.startswith("# @package") or not line:
                continue
            if line.startswith("#"):
                return line.lstrip("#").strip()
            break
    return ""


def defaults() -> dict[str, str]:
    """Default option of each group, from train.yaml's defaults list."""
    import yaml

    with open(config_dir() / "train.yaml", encoding="utf-8") as handle:
        tree = yaml.safe_load(handle)
    out = {}
    for entry in tree.get("defaults", []):
        if isinstance(entry, dict):
            out.update({k: v for k, v in entry.items()})
    return out


def main(argv: list[str]) -> int:
    """List every group, or one group, with descriptions; `runner ls runs` lists run directories."""
    if argv and argv[0] == "runs":
        from overparam.cli.runs import main as list_runs

        return list_runs(argv[1:])
    parser = argparse.ArgumentParser(prog="runner ls", description="List methods, models, datasets, hardware, "
                                     "experiments, loggers and searches, read from the config tree.")
    parser.add_argument("group", nargs="?", help=f"one of: {', '.join(GROUPS)}; or `runs [DIR]` (the run "
                        "directories, see runner ls runs --help)")
    args = parser.parse_args(argv)
    groups = GROUPS
    if args.group:
        group = ALIASES.get(args.group, args.group)
        if group not in GROUPS:
            from overparam.errors import UserError

            raise UserError(f"unknown group {args.group!r}; choose one of: {', '.join(GROUPS)}")
        groups = (group,)
    chosen = defaults()
    root = config_dir()
    for group in groups:
        options = group_options(group)
        print(f"{group}:")
        if not options:
            print("  (none)")
        width = max((len(o) for o in options), default=0)
        for option in options:
            marker = "*" if chosen.get(group) == option else " "
            print(f" {marker}{option:<{width}}  {describe(root / group / f'{option}.yaml')}")
        if len(groups) > 1:
            print()
    if len(groups) > 1:
        print("(* = default; pick with group=option, e.g. runner train method=imp)")
    if groups == ("hardware",):
        from overparam import hardware

        fixed, _ = hardware.default_threads(adaptive=False)
        free, why = hardware.default_threads(adaptive=True)
        print(f"\ndefault threads here: {fixed} (allowed cores; tiny models 1), {free} with "
              f"hardware.deterministic=false ({why}); hardware.threads=N fixes the count")
        print("\n".join(hardware.describe_measurements()))
    return 0
