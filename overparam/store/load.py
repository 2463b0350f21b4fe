"""Rebuild a finished run's model from its directory (its saved config and weights)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from overparam.errors import UserError
from overparam.store.atomic import read_json


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


def saved_config(run_dir: str | Path):
    """The composed config Hydra saved for a run (.hydra/config.yaml) as a DictConfig."""
    from omegaconf import OmegaConf

    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no .hydra/config.yaml)")
    return OmegaConf.load(path)


def check_finished(run_dir: str | Path) -> dict:
    """run.json of a finished run, or a UserError saying what is wrong with it."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UserError(f"run directory {run_dir} does not exist")
    info = read_json(run_dir / "run.json")
    if info is None:
        raise UserError(f"{run_dir} is not a run directory (no run.json)")
    if info.get("status") != "done":
        raise UserError(f"run {run_dir} has not finished (status {info.get('status')})")
    return info


def load_run_model(ref: str | Path | RunRef, device: str = "cpu", data=None):
    """(model, saved config) of a finished run; masks in the weights make a sparsified model.

    `data` (a DataBundle) gives input shape and class count; without it the run's dataset is loaded.
    """
    import torch

    from overparam.models import build_model
    from overparam.models.masked import sparsify
    from overparam.store.checkpoint import load_state

    ref = ref if isinstance(ref, RunRef) else RunRef.parse(str(ref))
    info = check_finished(ref.root)
    cfg = saved_config(ref.root)
    # A run whose weights have another architecture than its own config names (a merge of other
    # runs) records theirs in run.json: `weights_config` = {"model": ..., "dataset": ...}.
    for key, value in (info.get("weights_config") or {}).items():
        cfg[key] = value
    if not ref.weights.is_file():
        raise UserError(f"{ref.root} has no weights at {ref.weights.relative_to(ref.root)}")
    state = load_state(ref.weights)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{ref.weights} is not a model state_dict")
    if data is None:
        from overparam.data import load_dataset

        data = load_dataset(cfg.dataset, cfg.paths.data_dir, seed=int(cfg.seed), device="cpu")
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
