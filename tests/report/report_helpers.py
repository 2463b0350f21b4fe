"""Hand-made run directories: the files `runner train` writes, with numbers the tests choose."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def base_config(**changes) -> dict:
    """A config shaped like a composed train.yaml (only the keys the report reads)."""
    config = {
        "seed": 0,
        "sparsity": 0.0,
        "train": {"epochs": 2, "steps": None, "batch_size": 128},
        "optim": {"name": "sgd", "lr": 0.1},
        "paths": {"output_dir": "outputs", "data_dir": "${oc.env:HOME}/data"},
        "model": {"name": "mlp", "_target_": "overparam.models.zoo.mlp", "widths": [256, 256]},
        "dataset": {"name": "mnist1d", "_target_": "overparam.data.mnist1d.load"},
        "method": {"name": "dense", "_target_": "overparam.recipes.dense.run"},
        "hardware": {"name": "cpu", "device": "cpu", "deterministic": True},
    }
    for dotted, value in changes.items():
        node = config
        parts = dotted.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return config


def make_run(path: Path, config: dict, summary: dict | None, *, status: str = "done", reason: str | None = None,
             overrides: list[str] | None = None, config_in_run_json: bool = True) -> Path:
    """Write .hydra/config.yaml, .hydra/overrides.yaml, run.json and (when given) summary.json.

    `config_in_run_json`: run.json holds the config as the store writes it; False gives a run from
    before it did (the index then reads .hydra/config.yaml).
    """
    path.mkdir(parents=True, exist_ok=True)
    (path / ".hydra").mkdir(exist_ok=True)
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides or []))
    info = {"status": status, "config_hash": "0" * 16}
    if config_in_run_json:
        info["config"] = config
    if reason:
        info["reason"] = reason
    (path / "run.json").write_text(json.dumps(info))
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    return path


def method_config(name: str, **changes) -> dict:
    """base_config with another method."""
    config = base_config(**changes)
    config["method"] = {"name": name, "_target_": f"overparam.recipes.prune.{name}.run"}
    return config
