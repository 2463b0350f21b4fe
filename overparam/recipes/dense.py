"""`method=dense`: train one dense model, the baseline every other method is compared with."""

from __future__ import annotations

from overparam.engine import fit
from overparam.recipes.common import model_summary, prepare


def run(cfg, run) -> dict:
    """Train `cfg.model` on `cfg.dataset`; save the final weights as checkpoints/model.safetensors."""
    setup = prepare(cfg)
    model = setup.new_model()
    if cfg.get("init"):
        # Fine-tuning: start from a finished run's weights instead of a fresh initialization.
        from overparam.store.load import load_run_model

        model, _ = load_run_model(str(cfg.init), device=setup.device, data=setup.data)
    result = fit(model, setup.data, run, tag="dense", label="dense", **setup.fit_kwargs())
    run.save_checkpoint("model", model.state_dict())
    return {**result.flat(), **model_summary(model), "steps": result.steps}
