"""What every recipe starts with: the device, the data and a freshly initialized model."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from overparam.data import DataBundle, load_dataset
from overparam.errors import UserError
from overparam.engine import setup_hardware
from overparam.kernels import set_default_backend
from overparam.models import build_model, count_parameters


@dataclass
class Setup:
    """Device, data, and a factory for models of the configured architecture."""

    cfg: object
    device: str
    data: DataBundle

    def new_model(self, seed: int | None = None) -> torch.nn.Module:
        """A model of `cfg.model`, initialized from `seed` (default: the run's seed), on the device."""
        seed = int(self.cfg.seed if seed is None else seed)
        model = build_model(self.cfg.model, self.data.input_shape, self.data.num_classes, seed=seed)
        return model.to(self.device)

    def fit_kwargs(self, **overrides) -> dict:
        """Keyword arguments of `engine.fit` taken from the config."""
        kwargs = dict(train=self.cfg.train, optim=self.cfg.optim, hardware=self.cfg.hardware, seed=int(self.cfg.seed))
        kwargs.update(overrides)
        return kwargs


def prepare(cfg) -> Setup:
    """Apply the hardware settings and load the dataset onto the device."""
    device = setup_hardware(cfg.hardware)
    # hardware.kernel picks the masked-matmul backend of every masked layer in this run.
    set_default_backend(str(cfg.hardware.get("kernel") or "auto"), device_type=device.split(":")[0])
    data = load_dataset(cfg.dataset, cfg.paths.data_dir, seed=int(cfg.seed), device=device)
    if data.bytes_per_token:
        from overparam.components import resolve

        # Token ids into a classifier would fail deep inside its first layer: say what fits instead.
        if not getattr(resolve("model", cfg.model), "language_model", False):
            raise UserError(f"model={cfg.model.get('name')} is not a language model; dataset=text needs one "
                            f"(model=gpt, or model=hf model.path=<folder>)")
    return Setup(cfg=cfg, device=device, data=data)


def model_summary(model: torch.nn.Module) -> dict:
    """Parameter count of a model, for summaries."""
    return {"parameters": count_parameters(model)}
