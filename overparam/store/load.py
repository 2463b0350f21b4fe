"""Open a run directory from anywhere: the one validated loader, and rebuilding a finished run's model.

A run directory may come from elsewhere (downloaded to reproduce a paper's table), so everything in it
is data. Every route that opens one - `runner reproduce`, `runner table`, `from=`, `ingredients=`,
`base=`, `teacher.from`, `student.from` - reads it through this module:

- YAML and JSON through `read_yaml` / `read_json_file` (store/readers.py): PyYAML's safe loader, no tags, no anchors or
  aliases, bounded size and nesting; anything malformed is one clear line (UserError, exit 2);
- the saved config through `saved_config`: a mapping of names and values whose interpolations call
  only value-reading resolvers and whose components are all registered (`overparam.components`);
- saved overrides through `saved_overrides`: no `hydra` setting beyond the launcher/sweeper choice
  and their plain knobs;
- weights through `load_run_model`: safetensors only, built by registered names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overparam.errors import UserError
from overparam.store.readers import read_json_file, read_yaml


def _json_object(path: Path, what: str) -> dict | None:
    """A JSON file that must hold an object (None when absent); UserError naming `what` it should be."""
    value = read_json_file(path)
    if value is not None and not isinstance(value, dict):
        raise UserError(f"{path}: not {what} (a JSON object)")
    return value


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


@dataclass
class RunRef:
    """A run directory and, optionally, one artifact inside it (`<dir>@level_3`, `<dir>@step_100`)."""

    root: Path
    tag: str | None = None

    @classmethod
    def parse(cls, text: str) -> "RunRef":
        path, _, tag = str(text).partition("@")
        return cls(Path(path).expanduser(), tag or None)

    @property
    def weights(self) -> Path:
        """The safetensors file this reference names."""
        if self.tag is None:
            return self.root / "checkpoints" / "model.safetensors"
        if self.tag.startswith("level_"):
            return self.root / self.tag / "model.safetensors"
        return self.root / "checkpoints" / f"{self.tag}.safetensors"

    def has_weights(self) -> bool:
        """True when the safetensors file this reference names exists."""
        return self.weights.is_file()


def check_saved_config(tree: Any, *, source: str, trust: bool | None = None) -> None:
    """A saved config is names and values: a mapping, safe resolvers only, registered components only."""
    from overparam.components import check_config, check_resolvers

    if not isinstance(tree, dict):
        raise UserError(f"{source}: a saved config must be a mapping, got {type(tree).__name__}")
    if "defaults" in tree:
        # Hydra saves composed configs; a defaults list would pull more config files in when re-run.
        raise UserError(f"{source}: a saved config has no defaults list; refusing to compose it")
    check_resolvers(tree, source=source)
    check_config(tree, trust=trust, source=source)


def resolve_saved(config, *, source: str) -> dict:
    """A checked saved config (DictConfig) resolved to a plain dict; UserError if it does not resolve."""
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(config, resolve=True)
    except Exception as exc:  # noqa: BLE001 - an unresolvable saved config is bad input
        raise UserError(f"{source}: the saved config does not resolve: {_one_line(exc)}") from None


def saved_config(run_dir: str | Path, *, trust: bool | None = None):
    """The composed config Hydra saved for a run (.hydra/config.yaml) as a DictConfig, checked as data.

    `trust` (default: the `--trust` flag) lets it name unregistered components.
    """
    from omegaconf import OmegaConf

    path = Path(run_dir) / ".hydra" / "config.yaml"
    tree = read_yaml(path)  # a FIFO or device there is refused as such
    if tree is None and not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no .hydra/config.yaml)")
    check_saved_config(tree, source=str(path), trust=trust)
    try:
        config = OmegaConf.create(tree)
    except Exception as exc:  # noqa: BLE001 - keys or values OmegaConf does not take
        raise UserError(f"{path}: not a config ({_one_line(exc)})") from None
    # The resolved values are checked too: a reference may bring a mapping from another key.
    from overparam.components import check_config

    resolved = resolve_saved(config, source=str(path))
    check_config(resolved, trust=trust, source=str(path))
    check_saved_values(resolved, source=str(path))
    return config


# Saved values every route that opens a run uses as numbers: checked by their declarations (overparam.specs).
SAVED_VALUE_KEYS = ("seed", "model.widths")


def check_saved_values(resolved: dict, *, source: str) -> None:
    """The saved values a loader uses (the seed, an MLP's widths) have the types and ranges a run allows."""
    from overparam.specs import SHARED

    declared = {param.key: param for param in SHARED}
    for key in SAVED_VALUE_KEYS:
        try:
            declared[key].check(resolved)
        except UserError as exc:
            raise UserError(f"{source}: {exc}") from None


def run_info(run_dir: str | Path) -> dict | None:
    """run.json of a run directory as a mapping (None when absent); UserError when malformed."""
    return _json_object(Path(run_dir) / "run.json", "a run record")


def check_finished(run_dir: str | Path) -> dict:
    """run.json of a finished run, or a UserError saying what is wrong with it."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UserError(f"run directory {run_dir} does not exist")
    info = run_info(run_dir)
    if info is None:
        raise UserError(f"{run_dir} is not a run directory (no run.json)")
    if info.get("status") != "done":
        raise UserError(f"run {run_dir} has not finished (status {info.get('status')})")
    return info


def weights_config(run_dir: str | Path, info: dict | None = None, *, trust: bool | None = None):
    """A run's saved config with the architecture its weights really have (run.json `weights_config`), checked.

    A run whose weights have another architecture than its own config names (a merge of other runs)
    records theirs in run.json: `weights_config` = {"model": ..., "dataset": ...}.
    """
    from omegaconf import OmegaConf

    from overparam.components import check_config

    cfg = saved_config(run_dir, trust=trust)
    info = run_info(run_dir) if info is None else info
    extra = (info or {}).get("weights_config") or {}
    source = f"{Path(run_dir) / 'run.json'} weights_config"
    if not isinstance(extra, dict) or not set(extra) <= {"model", "dataset"} or \
            not all(isinstance(v, dict) for v in extra.values()):
        raise UserError(f"{source}: must map model/dataset to their configs")
    check_saved_config(dict(extra), source=source, trust=trust)
    for key, value in extra.items():
        cfg[key] = OmegaConf.create(value)
    check_config(resolve_saved(cfg, source=source), trust=trust, source=source)
    return cfg


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
PLACE_KEYS = ("hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir", "hydra.mode", "paths", "logger")
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
            raise UserError(f"{source}: {override!r} is not an override ({_one_line(exc)[:200]})") from None
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
        from overparam.components import installed_group_options

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


def saved_summary(run_dir: str | Path) -> dict | None:
    """summary.json of a run as a mapping (None when absent)."""
    return _json_object(Path(run_dir) / "summary.json", "a summary")


# Keys of a composed config that name one run to start from: opened (and checked) before anything runs.
RUN_KEYS = ("from", "teacher.from", "student.from")


def check_run_ref(value: Any, key: str, *, trust: bool | None = None) -> "RunRef":
    """A `<run dir>[@tag]` a config names, opened through the checks above (finished, config is data)."""
    if not isinstance(value, (str, os.PathLike)):
        raise UserError(f"{key} must be a run directory (<dir> or <dir>@level_<L>), got {value!r}")
    ref = RunRef.parse(str(value))
    info = check_finished(ref.root)
    weights_config(ref.root, info, trust=trust)
    if ref.has_weights():  # a damaged file is refused here, before the run that would read it exists
        from overparam.store.checkpoint import check_weights_file

        check_weights_file(ref.weights)
    return ref


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
    config = saved_config(root, trust=trust)
    return ForeignRun(root=root, info=info, config=config,
                      resolved=resolve_saved(config, source=str(root / ".hydra" / "config.yaml")),
                      overrides=saved_overrides(root, trust=trust), summary=saved_summary(root))


def local_data_dir() -> str:
    """Where this machine keeps datasets (train.yaml's default): never the directory a foreign config names."""
    return os.environ.get("OVERPARAM_DATA_DIR") or str(Path.home() / ".cache" / "overparam")


def load_run_model(ref: str | Path | RunRef, device: str = "cpu", data=None, data_dir: str | None = None):
    """(model, saved config) of a finished run; masks in the weights make a sparsified model.

    `data` (a DataBundle) gives input shape and class count; without it the run's dataset is loaded
    from `data_dir` (default: this machine's, `local_data_dir()`; never the saved config's paths).
    """
    import torch

    from overparam.models import build_model
    from overparam.models.masked import sparsify
    from overparam.store.checkpoint import check_weights_file, load_state

    ref = ref if isinstance(ref, RunRef) else RunRef.parse(str(ref))
    info = check_finished(ref.root)
    cfg = weights_config(ref.root, info)
    if not ref.weights.is_file():
        raise UserError(f"{ref.root} has no weights at {ref.weights.relative_to(ref.root)}")
    check_weights_file(ref.weights)
    state = load_state(ref.weights)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{ref.weights} is not a model state_dict")
    if data is None:
        from overparam.data import load_dataset

        data = load_dataset(cfg.dataset, data_dir or local_data_dir(), seed=int(cfg.seed), device="cpu")
    model = build_model(cfg.model, data.input_shape, data.num_classes, seed=int(cfg.seed))
    if any(key.endswith(".weight_mask") for key in state):
        masked_layers = [key[: -len(".weight_mask")] for key in state if key.endswith(".weight_mask")]
        sparsify(model, include=masked_layers)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"weights in {ref.weights} do not fit model {cfg.model.name}: "
                        f"{str(exc).splitlines()[0]}") from None
    return model.to(device), cfg
