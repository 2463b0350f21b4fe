"""Where the config tree lives and which options its groups have (the repository's `configs/`, or a copy packaged with overparam)."""

from __future__ import annotations

import os
from pathlib import Path


def config_dir() -> Path:
    """Absolute path of the config tree (`OVERPARAM_CONFIG_DIR` overrides it)."""
    override = os.environ.get("OVERPARAM_CONFIG_DIR")
    if override:
        return Path(override).resolve()
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / "configs", package / "configs"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError("overparam's configs/ folder was not found beside the package")


GROUPS = ("method", "model", "dataset", "hardware", "experiment", "logger", "hparams_search", "prune")


def group_options(group: str) -> list[str]:
    """Options of a config group: the YAML file names in configs/<group>/."""
    folder = config_dir() / group
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml"))


def group_config(group: str, name: str) -> dict:
    """The config of option `name` of `group` (configs/<group>/<name>.yaml), read as data: a name of the
    tree, never a path (an unknown name is one clear line listing the options)."""
    from overparam.errors import UserError
    from overparam.store.readers import read_yaml

    options = group_options(group)
    if name not in options:
        raise UserError(f"{group} {name!r} is not in configs/{group}; choose one of: {', '.join(options)}")
    return read_yaml(config_dir() / group / f"{name}.yaml")
