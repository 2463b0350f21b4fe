"""What every recipe starts with: the device, the data and a freshly initialized model."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from overparam.data import DataBundle, load_dataset
from overparam.errors import UserError
from overparam.engine import setup_hardware
from overparam.kernels import set_default_backend
from overparam.models import build_model, count_parameters
from overparam.settings import Settings


@dataclass
class Setup:
    """Device, data, and a factory for models of the configured architecture."""

    settings: Settings
    device: str
    data: DataBundle

    def new_model(self, seed: int | None = None) -> torch.nn.Module:
        """A model of `settings.model`, initialized from `seed` (default: the run's seed), on the device."""
        seed = int(self.settings.seed if seed is None else seed)
        model = build_model(self.settings.model.to_dict(), self.data.input_shape, self.data.num_classes, seed=seed)
        return model.to(self.device)

    def fit_kwargs(self, **overrides) -> dict:
        """Keyword arguments of `engine.fit` from the settings (plain dicts; `overrides` replace them)."""
        settings = self.settings
        kwargs = dict(train=settings.train.to_dict(), optim=settings.optim.to_dict(),
                      hardware=settings.hardware.to_dict(), seed=int(settings.seed))
        kwargs.update(overrides)
        return kwargs


def prepare(settings: Settings | dict) -> Setup:
    """Apply the hardware settings and load the dataset onto the device."""
    settings = settings if isinstance(settings, Settings) else Settings.from_dict(settings)
    hardware = settings.hardware.to_dict()
    device = setup_hardware(hardware)
    # hardware.kernel picks the masked-matmul backend of every masked layer in this run.
    set_default_backend(str(hardware.get("kernel") or "auto"), device_type=device.split(":")[0])
    data = load_dataset(settings.dataset.to_dict(), settings.paths.data_dir, seed=int(settings.seed), device=device)
    if data.bytes_per_token:
        from overparam.components import resolve

        # Token ids into a classifier would fail deep inside its first layer: say what fits instead.
        if not getattr(resolve("model", settings.model.to_dict()), "language_model", False):
            raise UserError(f"model={settings.model.get('name')} is not a language model; dataset=text needs one "
                            f"(model=gpt, or model=hf model.path=<folder>)")
    return Setup(settings=settings, device=device, data=data)


def model_summary(model: torch.nn.Module) -> dict:
    """Parameter count of a model, for summaries."""
    return {"parameters": count_parameters(model)}
