"""`method=self_distill`: born-again networks (Furlanello et al. 2018).

Generation 0 is the model trained on the labels; generation g is a fresh model of the same
architecture distilled (kd.alpha, kd.temperature) from generation g-1. One row per generation.
"""

from __future__ import annotations

import copy

from overparam.engine import fit
from overparam.recipes.common import model_summary
from overparam.recipes.distill.kd import distill
from overparam.recipes.shared.source import frozen


def run(params, context) -> dict:
    """Train generation 0, then distill each generation into the next; the last one is the result."""
    settings, run = context.settings, context.run
    setup = context.prepare()
    generations = params["self_distill.generations"]
    seed = context.seed
    model = setup.new_model(seed)
    # Each generation is its own phase (level=g, tag generation_<g>): a killed run resumes inside it.
    result = fit(model, setup.data, run, tag="generation_0", label="generation 0", level=0, **setup.fit_kwargs())
    rows = [{"generation": 0, **_row(result)}]
    for generation in range(1, generations + 1):
        teacher = frozen(copy.deepcopy(model))
        model = setup.new_model(seed + generation)
        result = distill(model, teacher, setup, run, alpha=params["kd.alpha"], temperature=params["kd.temperature"],
                         tag=f"generation_{generation}", level=generation)
        rows.append({"generation": generation, **_row(result)})
    run.save_checkpoint("model", model.state_dict())
    return {**result.flat(), **model_summary(model), "generations": generations,
            "generation_0_test_accuracy": rows[0]["test_accuracy"], "rows": rows}


def _row(result) -> dict:
    return {k: v for k, v in result.flat().items() if not k.endswith("_seconds")}
