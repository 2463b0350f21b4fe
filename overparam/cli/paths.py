"""The config tree's location for the CLI (see overparam.configtree)."""

from overparam.configtree import GROUPS, config_dir, group_options  # noqa: F401
