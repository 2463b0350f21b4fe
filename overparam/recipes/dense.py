"""`method=dense`: train one dense model, the baseline every other method is compared with."""

from __future__ import annotations

from overparam.engine import fit
from overparam.recipes.common import model_summary


def run(params, context) -> dict:
    """Train `settings.model` on `settings.dataset`; save the final weights as checkpoints/model.safetensors."""
    settings, run = context.settings, context.run
    setup = context.prepare()
    model = setup.new_model()
    result = fit(model, setup.data, run, tag="dense", label="dense", **setup.fit_kwargs())
    run.save_checkpoint("model", model.state_dict())
    return {**result.flat(), **model_summary(model), "steps": result.steps, **setup.data.notes}
