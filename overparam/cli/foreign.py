"""A run from elsewhere as `runner reproduce` and `runner search` reopen it: its saved overrides, checked
with Hydra's own override parser against the installed launcher and sweeper plugins, and the user's own
places; and which launcher and sweeper classes a config's `hydra:` section may name (`plugin_allowed`).
The store (overparam/store/load.py) opens the run's files; what Hydra would do with them is checked here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overparam.errors import UserError
from overparam.store.load import one_line, check_finished, resolve_saved, saved_summary, saved_tree
from overparam.store.readers import read_yaml

# Hydra settings a saved run's overrides may carry: the launcher/sweeper choice and their plain knobs.
# Anything else in `hydra` (callbacks, logging, search path, output_subdir, sweeper storage, a launcher's
# `setup` commands) would let the run directory decide what runs or where files are written.
SAFE_HYDRA_GROUPS = ("hydra/launcher", "hydra/sweeper")
SAFE_HYDRA_KNOBS = {
    "hydra.launcher": ("n_jobs", "backend", "prefer", "verbose", "timeout", "pre_dispatch", "batch_size",
                       "timeout_min", "cpus_per_task", "gpus_per_node", "tasks_per_node", "mem_gb", "nodes", "name",
                       "partition", "qos", "comment", "constraint", "exclude", "gres", "cpus_per_gpu",
                       "gpus_per_task", "mem_per_gpu", "mem_per_cpu", "account", "max_num_timeout",
                       "array_parallelism"),
    "hydra.sweeper": ("direction", "study_name", "n_trials", "n_jobs", "max_failure_rate", "sampler.seed",
                      "sampler.n_startup_trials", "params.*"),
}
# Where a run ran and what observed it, not what it computed: a reproduction writes only where the
# user's own config says (a foreign `paths.output_dir` would put the level cache, a foreign logger
# its database or event files, anywhere on this machine).
PLACE_KEYS = ("hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir", "hydra.mode", "paths", "logger",
              "dataset.root", "dataset.cache_dir")
PLACE_PREFIXES = ("paths.", "logger.", "logger/")


def local_places() -> dict:
    """The user's own `paths` (configs/train.yaml's, unresolved) and no logger: what a reproduction runs with."""
    from overparam.configtree import config_dir

    train = read_yaml(config_dir() / "train.yaml") or {}
    return {"paths": dict(train.get("paths") or {}), "logger": None}


def _override_key(override: str) -> str:
    return override.partition("=")[0].strip().lstrip("+~").split("@")[0].strip()


def check_saved_overrides(overrides: Any, *, source: str, trust: bool | None = None) -> list[str]:
    """Saved command-line overrides (`.hydra/overrides.yaml`, multirun.yaml) as a checked list of strings.

    Place keys (PLACE_KEYS) are dropped: the reproduction decides where it writes.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from overparam.components import INSTANTIATE_KEYS, check_resolvers, trusted

    trust = trusted() if trust is None else trust
    if overrides is None:
        return []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise UserError(f"{source}: saved overrides must be a list of key=value strings")
    parser = OverridesParser.create()
    kept = []
    for override in overrides:
        key = _override_key(override)
        if key in PLACE_KEYS or key.startswith(PLACE_PREFIXES):
            continue
        try:
            parsed = parser.parse_override(override)
        except Exception as exc:  # noqa: BLE001 - Hydra's parser errors are long: one line
            raise UserError(f"{source}: {override!r} is not an override ({one_line(exc)[:200]})") from None
        if any(part in ("_target_", *INSTANTIATE_KEYS) for part in key.replace("/", ".").split(".")) and not trust:
            raise UserError(f"{source}: {override!r} is refused (a saved override may not name code); "
                            f"pass --trust if you trust where this run came from")
        # Mapping and list values, quoted or escaped text and every value of a sweep: any `_target_` in the value.
        if "_target_" in override.partition("=")[2] and not trust:
            raise UserError(f"{source}: {override!r} is refused (a saved override may not name code); "
                            f"pass --trust if you trust where this run came from")
        check_resolvers({"value": override.partition("=")[2]}, source=f"{source}: {key}")
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            _check_hydra_override(key, parsed, override, source)
        kept.append(override)
    return kept


def _check_hydra_override(key: str, parsed, override: str, source: str) -> None:
    if key in SAFE_HYDRA_GROUPS:
        options = installed_group_options(key)
        value = parsed.value()
        if isinstance(value, str) and value in options:
            return
        raise UserError(f"{source}: {override!r} is refused ({key} must be one of: {', '.join(sorted(options))})")
    for prefix, knobs in SAFE_HYDRA_KNOBS.items():
        if key.startswith(prefix + "."):
            rest = key[len(prefix) + 1:]
            value = parsed.value() if not parsed.is_sweep_override() else None
            if (rest in knobs or any(k.endswith(".*") and rest.startswith(k[:-1]) for k in knobs)) \
                    and not isinstance(value, dict):
                return
    raise UserError(f"{source}: {override!r} is refused (a saved run may set only the launcher and sweeper "
                    f"and their plain options in hydra; callbacks, logging, paths and search paths are not data)")


def saved_overrides(run_dir: str | Path, *, trust: bool | None = None) -> list[str]:
    """A run's `.hydra/overrides.yaml`, checked (see `check_saved_overrides`)."""
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    return check_saved_overrides(read_yaml(path), source=str(path), trust=trust)


def installed_group_options(group: str) -> set[str]:
    """Options of `hydra/launcher` or `hydra/sweeper`: the installed plugins' and the project's own config files."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    Plugins.instance().discover(Launcher)  # importing the plugins registers their configs
    node: Any = ConfigStore.instance().repo
    for part in group.split("/"):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    options = {name[: -len(".yaml")] for name in node if isinstance(name, str) and name.endswith(".yaml")}
    try:
        from overparam.configtree import config_dir

        options |= {p.stem for p in (config_dir() / group).glob("*.yaml")}
    except FileNotFoundError:
        pass
    return options


@dataclass
class ForeignRun:
    """A finished run directory opened as data: its record, checked config and overrides, and summary."""

    root: Path
    info: dict
    config: Any
    resolved: dict
    overrides: list[str]
    summary: dict | None


def open_run(run_dir: str | Path, *, trust: bool | None = None) -> ForeignRun:
    """Open a finished run from anywhere through every check of this module."""
    root = Path(run_dir)
    info = check_finished(root)
    config = saved_tree(root, trust=trust)
    return ForeignRun(root=root, info=info, config=config,
                      resolved=resolve_saved(config, source=str(root / ".hydra" / "config.yaml")),
                      overrides=saved_overrides(root, trust=trust), summary=saved_summary(root))


def _installed_plugin_targets(kind: str) -> set[str]:
    """Dotted class paths of the installed Hydra launcher or sweeper plugins (discovered by Hydra itself)."""
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher
    from hydra.plugins.sweeper import Sweeper

    base = Launcher if kind == "launcher" else Sweeper
    found = set()
    for cls in Plugins.instance().discover(base):
        found.add(f"{cls.__module__}.{cls.__qualname__}")
    return found


# Hydra callbacks a config may name (hydra.callbacks.<name>._target_): the CLI's own, exact strings.
CALLBACKS = ("overparam.cli.launch.FailureSummary",)


def plugin_allowed(kind: str, target: Any) -> bool:
    """A callback `_target_` is one of the CLI's own (CALLBACKS); a launcher/sweeper `_target_` names an
    installed plugin class: checked by resolving it to that class."""
    if kind == "callback":
        return isinstance(target, str) and target in CALLBACKS
    if not isinstance(target, str) or target not in _installed_plugin_targets(kind):
        return False
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher
    from hydra.plugins.sweeper import Sweeper
    from hydra.utils import get_class

    base = Launcher if kind == "launcher" else Sweeper
    return any(get_class(target) is cls for cls in Plugins.instance().discover(base))
