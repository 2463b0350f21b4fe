"""`runner ls [group]`: what exists, one line each, read from the config files (no torch import).

`runner ls method NAME` prints one method's parameters (key, type, range or choices, default, doc) from its
declaration (overparam/recipes/<family>/params.py), still without importing torch.
"""

from __future__ import annotations

import argparse

from overparam.cli.paths import GROUPS, config_dir, describe, group_options

ALIASES = {"methods": "method", "models": "model", "datasets": "dataset", "experiments": "experiment",
           "loggers": "logger", "searches": "hparams_search", "launchers": "hydra/launcher"}


# Config groups listed beside GROUPS, with the options that have no file of their own (Hydra's built-ins).
HYDRA_GROUPS = {"hydra/launcher": {"basic": "Hydra's own launcher: a sweep's jobs one after another in this process."}}
LISTED = (*GROUPS, *HYDRA_GROUPS)


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


def model_training(model: str) -> str:
    """A model's own training defaults (configs/model/train/<model>.yaml and the files its defaults list names
    there) as the overrides they amount to; "" for a model that trains with train.yaml's shared defaults."""
    import yaml

    folder = config_dir() / "model" / "train"

    def flat(name: str, seen: tuple = ()) -> dict:
        path = folder / f"{name}.yaml"
        if name in seen or not path.is_file():
            return {}
        with open(path, encoding="utf-8") as handle:
            tree = yaml.safe_load(handle) or {}
        out: dict = {}
        for entry in tree.pop("defaults", None) or []:
            if isinstance(entry, str) and entry != "_self_":
                out.update(flat(entry, (*seen, name)))

        def walk(node, prefix):
            for key, value in node.items():
                if isinstance(value, dict):
                    walk(value, f"{prefix}{key}.")
                else:
                    out[f"{prefix}{key}"] = value
        walk(tree, "")
        return out

    return " ".join(f"{key}={value}" for key, value in flat(model).items())


def show_method(name: str) -> int:
    """One method's description and parameter table; the keys every run shares are listed by `runner ls`."""
    from overparam.params import format_table
    from overparam.specs import all_specs

    specs = all_specs()
    if name not in specs:
        from overparam.errors import UserError

        from overparam.cli.suggest import option_error

        raise UserError(option_error("method", name, sorted(specs), prefix=f"unknown method {name!r}"))
    spec = specs[name]
    path = config_dir() / "method" / f"{name}.yaml"
    print(f"{name}: {describe(path) if path.is_file() else spec.doc}")
    rows = spec.table()
    print(format_table(rows) if rows else "  (no parameters of its own: only the shared keys, train.*, optim.*, ...)")
    example = next((row for row in rows if row[1] not in ("run", "runs")), None)
    if example is not None:
        from overparam.methods import methods

        command = methods()[name].usage or f"runner train method={name}"
        print(f"\n(set any with key=value, e.g. {command} {example[0]}={example[3].replace(' ', '')})")
    return 0


def main(argv: list[str]) -> int:
    """List every group, or one group, with descriptions; `runner ls runs` lists run directories."""
    if argv and argv[0] == "runs":
        from overparam.cli.runs import main as list_runs

        return list_runs(argv[1:])
    parser = argparse.ArgumentParser(prog="runner ls", description="List methods, models, datasets, hardware, "
                                     "experiments, loggers, searches and launchers, read from the config tree.")
    parser.add_argument("group", nargs="?", help=f"one of: {', '.join(LISTED)}; or `runs [DIR]` (the run "
                        "directories, see runner ls runs --help)")
    parser.add_argument("name", nargs="?", help="with group `method`: one method, whose parameters are listed "
                        "(runner ls method imp)")
    args = parser.parse_args(argv)
    if args.name is not None:
        if ALIASES.get(args.group, args.group) != "method":
            from overparam.errors import UserError

            raise UserError(f"runner ls {args.group} {args.name}: only methods list their parameters "
                            f"(runner ls method {args.name})")
        return show_method(args.name)
    groups = LISTED
    if args.group:
        group = ALIASES.get(args.group, args.group)
        if group not in LISTED:
            from overparam.errors import UserError

            from overparam.cli.suggest import option_error

            raise UserError(option_error("", args.group, list(LISTED), prefix=f"unknown group {args.group!r}",
                                         listing="runner ls"))
        groups = (group,)
    chosen = {**defaults(), "hydra/launcher": "basic"}
    root = config_dir()
    for group in groups:
        builtin = HYDRA_GROUPS.get(group, {})
        options = sorted([*builtin, *group_options(group)])
        print(f"{group}:")
        if not options:
            print("  (none)")
        width = max((len(o) for o in options), default=0)
        for option in options:
            marker = "*" if chosen.get(group) == option else " "
            text = builtin.get(option) or describe(root / group / f"{option}.yaml")
            print(f" {marker}{option:<{width}}  {text}")
            training = model_training(option) if group == "model" else ""
            if training:
                print(f"  {'':<{width}}  (trains with {training})")
        if group == "model":
            print("(a model without `trains with` trains with train.yaml's train and optim; a dataset, method, "
                  "experiment or key=value replaces either)")
        if len(groups) > 1:
            print()
    if len(groups) > 1:
        print("(* = default; pick with group=option, e.g. runner train method=imp)")
    if groups == ("hardware",):
        from overparam import hardware

        print(f"\nthis machine: {hardware.describe_cpu()}")
        fixed, _ = hardware.default_threads(adaptive=False)
        free, why = hardware.default_threads(adaptive=True)
        print(f"\ndefault threads here: {fixed} (allowed cores; tiny models 1), {free} with "
              f"hardware.deterministic=false ({why}); hardware.threads=N fixes the count")
        print("\n".join(hardware.describe_measurements()))
    return 0
