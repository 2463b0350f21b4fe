"""`method=self_distill`: born-again networks (Furlanello et al. 2018).

Generation 0 is the model trained on the labels; generation g is a fresh model of the same
architecture distilled (kd.alpha, kd.temperature) from generation g-1. One row per generation.
"""

from __future__ import annotations

import copy

from overparam.checks import number
from overparam.engine import fit
from overparam.recipes.common import model_summary, prepare
from overparam.recipes.distill.kd import distill
from overparam.recipes.tune.source import frozen


def validate(cfg: dict) -> None:
    """self_distill.generations >= 1, kd.temperature > 0, 0 <= kd.alpha <= 1."""
    number(cfg, "self_distill.generations", low=1, integer=True)
    number(cfg, "kd.temperature", low=0.0, low_open=True)
    number(cfg, "kd.alpha", low=0.0, high=1.0)


def run(cfg, run) -> dict:
    """Train generation 0, then distill each generation into the next; the last one is the result."""
    setup = prepare(cfg)
    generations = int(cfg.self_distill.generations)
    seed = int(cfg.seed)
    model = setup.new_model(seed)
    # Each generation is its own phase (level=g, tag generation_<g>): a killed run resumes inside it.
    result = fit(model, setup.data, run, tag="generation_0", label="generation 0", level=0, **setup.fit_kwargs())
    rows = [{"generation": 0, **_row(result)}]
    for generation in range(1, generations + 1):
        teacher = frozen(copy.deepcopy(model))
        model = setup.new_model(seed + generation)
        result = distill(model, teacher, setup, run, alpha=float(cfg.kd.alpha), temperature=float(cfg.kd.temperature),
                         tag=f"generation_{generation}", level=generation)
        rows.append({"generation": generation, **_row(result)})
    run.save_checkpoint("model", model.state_dict())
    return {**result.flat(), **model_summary(model), "generations": generations,
            "generation_0_test_accuracy": rows[0]["test_accuracy"], "rows": rows}


def _row(result) -> dict:
    return {k: v for k, v in result.flat().items() if not k.endswith("_seconds")}
