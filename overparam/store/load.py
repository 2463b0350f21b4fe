"""Open a run directory from anywhere: the one validated loader, and rebuilding a finished run's model.

A run directory may come from elsewhere, so everything in it is data. Every route that opens one (`runner
reproduce`, `table`, `from=`, `ingredients=`, `base=`, `teacher.from`, `student.from`) reads it here:

- YAML and JSON through `read_yaml` / `read_json_file` (store/readers.py): PyYAML's safe loader, no tags, no anchors or
  aliases, bounded size and nesting; anything malformed is one clear line (UserError, exit 2);
- the saved config through `saved_config`: a mapping of names and values whose interpolations call
  only value-reading resolvers and whose components are all registered (`overparam.components`);
- saved overrides are Hydra's: the CLI checks them (overparam/cli/foreign.py); a saved run's places
  (`paths`, `logger`, `dataset.root`, `dataset.cache_dir`) are never used;
- weights through `load_run_model`: safetensors only, built by registered names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overparam.errors import UserError
from overparam.settings import Settings
from overparam.store.readers import read_json_file, read_yaml


def _json_object(path: Path, what: str) -> dict | None:
    """A JSON file that must hold an object (None when absent); UserError naming `what` it should be."""
    value = read_json_file(path)
    if value is not None and not isinstance(value, dict):
        raise UserError(f"{path}: not {what} (a JSON object)")
    return value


def one_line(exc: BaseException) -> str:
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


def resolve_saved(tree: dict, *, source: str) -> dict:
    """A checked saved config (plain tree) resolved to a plain dict (`overparam.interpolation`); UserError if
    it does not resolve."""
    from overparam.interpolation import resolve

    try:
        return resolve(tree)
    except (ValueError, TypeError, RecursionError) as exc:  # an unresolvable saved config is bad input
        raise UserError(f"{source}: the saved config does not resolve: {one_line(exc)}") from None


def saved_tree(run_dir: str | Path, *, trust: bool | None = None) -> dict:
    """The composed config saved for a run (.hydra/config.yaml) as written, interpolations unresolved, checked
    as data (`saved_config` resolves it). `trust` (default: the `--trust` flag) lets it name unregistered
    components."""
    path = Path(run_dir) / ".hydra" / "config.yaml"
    tree = read_yaml(path)  # a FIFO or device there is refused as such
    if tree is None and not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no .hydra/config.yaml)")
    check_saved_config(tree, source=str(path), trust=trust)
    if any(not isinstance(key, str) for key in tree):
        raise UserError(f"{path}: not a config (its keys must be names)")
    # The resolved values are checked too: a reference may bring a mapping from another key.
    from overparam.components import check_config

    resolved = resolve_saved(tree, source=str(path))
    check_config(resolved, trust=trust, source=str(path))
    check_saved_values(resolved, source=str(path))
    return _without_dataset_places(tree)


def saved_config(run_dir: str | Path, *, trust: bool | None = None) -> Settings:
    """The config a run was made with, resolved and read-only (`settings.dataset`, `.get("seed")`), checked as
    data; its dataset places are this machine's (null)."""
    path = Path(run_dir) / ".hydra" / "config.yaml"
    return Settings(resolve_saved(saved_tree(run_dir, trust=trust), source=str(path)))


def _without_dataset_places(config: dict) -> dict:
    """The config reading from this machine's data folder, never where the run's machine kept its files."""
    dataset = config.get("dataset")
    for key in [k for k in ("root", "cache_dir") if isinstance(dataset, dict) and dataset.get(k) is not None]:
        dataset[key] = None
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


def weights_config(run_dir: str | Path, info: dict | None = None, *, trust: bool | None = None) -> Settings:
    """A run's saved config with the architecture its weights really have (run.json `weights_config`), checked,
    resolved and read-only.

    A run whose weights have another architecture than its own config names (a merge of other runs)
    records theirs in run.json: `weights_config` = {"model": ..., "dataset": ...}.
    """
    from overparam.components import check_config

    tree = saved_tree(run_dir, trust=trust)
    info = run_info(run_dir) if info is None else info
    extra = (info or {}).get("weights_config") or {}
    source = f"{Path(run_dir) / 'run.json'} weights_config"
    if not isinstance(extra, dict) or not set(extra) <= {"model", "dataset"} or \
            not all(isinstance(v, dict) for v in extra.values()):
        raise UserError(f"{source}: must map model/dataset to their configs")
    check_saved_config(dict(extra), source=source, trust=trust)
    for key, value in extra.items():
        tree[key] = value
    resolved = resolve_saved(tree, source=source)
    check_config(resolved, trust=trust, source=source)
    return Settings(_without_dataset_places(resolved))


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


def local_data_dir() -> str:
    """Where this machine keeps datasets (train.yaml's default): never the directory a foreign config names."""
    return os.environ.get("OVERPARAM_DATA_DIR") or str(Path.home() / ".cache" / "overparam")


def load_run_model(ref: str | Path | RunRef, device: str = "cpu", data=None, data_dir: str | None = None):
    """(model, saved config as Settings) of a finished run; masks in the weights make a sparsified model.

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
    from overparam.models.quantized import dequantize_state, is_packed

    if is_packed(state):  # a quantized run: packed integers back to the float weights it evaluated
        state = dequantize_state(state)
    if data is None:
        from overparam.data import load_dataset

        data = load_dataset(cfg.dataset.to_dict(), data_dir or local_data_dir(), seed=int(cfg.seed), device="cpu")
    model = build_model(cfg.model.to_dict(), data.input_shape, data.num_classes, seed=int(cfg.seed))
    if any(key.endswith(".weight_mask") for key in state):
        masked_layers = [key[: -len(".weight_mask")] for key in state if key.endswith(".weight_mask")]
        sparsify(model, include=masked_layers)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"weights in {ref.weights} do not fit model {cfg.model.name}: "
                        f"{str(exc).splitlines()[0]}") from None
    return model.to(device), cfg
