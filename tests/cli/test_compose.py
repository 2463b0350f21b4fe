"""Every YAML file under configs/ composes (a preset that stops composing is found here, fast)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from overparam.cli.paths import config_dir

ROOT = config_dir()


def _override_for(path: Path) -> str | None:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = relative.parts
    if parts == ("train",):
        return None
    group = "/".join(parts[:-1])
    if group == "model/train":  # a model's training defaults compose with model=<it>; a shared recipe through
        name = parts[-1]        # a model whose defaults name it
        if not (ROOT / "model" / f"{name}.yaml").is_file():
            name = next(p.stem for p in sorted(path.parent.glob("*.yaml"))
                        if name in (yaml.safe_load(p.read_text()) or {}).get("defaults", []))
        return f"model={name}"
    # Groups outside train.yaml's defaults list (e.g. prune, for method=kd +prune=imp) are appended.
    prefix = "" if group in DEFAULT_GROUPS or group.startswith("hydra/") else "+"
    return f"{prefix}{group}={parts[-1]}"


DEFAULT_GROUPS = {next(iter(entry)) for entry in yaml.safe_load((ROOT / "train.yaml").read_text())["defaults"]
                  if isinstance(entry, dict)}
CONFIG_FILES = sorted(p for p in ROOT.rglob("*.yaml"))


def test_the_tree_has_the_groups_the_design_names():
    for group in ("model", "dataset", "method", "hardware", "experiment"):
        assert list((ROOT / group).glob("*.yaml")), f"configs/{group}/ is empty"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_file_composes_and_resolves(path):
    override = _override_for(path)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT), version_base="1.3", job_name="compose_test"):
        cfg = compose(config_name="train", overrides=[override] if override else [],
                      return_hydra_config=override is not None and override.startswith("hydra/"))
        job = {k: v for k, v in cfg.items() if k != "hydra"}
        resolved = OmegaConf.to_container(OmegaConf.create(job), resolve=True)
    GlobalHydra.instance().clear()
    assert resolved["method"]["_target_"].startswith("overparam.")
    assert resolved["model"]["_target_"]
    if override and override.startswith("+prune"):
        assert resolved["prune"]["with"]
    if override and override.split("=")[0] in ("model", "dataset", "method", "hardware"):
        group, option = override.split("=")
        assert resolved[group]["name"] == option, f"{path} must set name: {option}"


def test_every_config_file_starts_with_a_description():
    from overparam.cli.ls import describe

    for path in CONFIG_FILES:
        if path.parent.name == "launcher" or path.name == "train.yaml":
            continue
        assert describe(path), f"{path} lacks a first-line comment describing it"
