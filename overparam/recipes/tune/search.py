"""Hyperparameter search with separate tuning and evaluation seeds.

`runner train -m hparams_search=lr_wd` runs an Optuna study (configs/hparams_search/lr_wd.yaml).
Each trial is one job whose recipe is `run` below: it trains the chosen method once per
`search.tuning_seeds` entry (sub-runs `<job>/seed_<s>/`, run by the CLI through `context.run_method`) and
returns the mean of every figure over those seeds, so the search only ever sees its tuning seeds.
Afterwards `runner search <sweep dir>` (overparam/cli/search.py) re-runs the best configuration on
`search.eval_seeds`.
"""

from __future__ import annotations

import statistics


def run(params, context) -> dict:
    """One trial: the method on every tuning seed; the summary holds the means (the objective among them)."""
    rows = []
    for seed in params["search.tuning_seeds"]:
        config = {**context.settings.to_dict(), "seed": int(seed)}
        summary = context.run_method(config, f"seed_{seed}")
        rows.append({"seed": seed, **{k: v for k, v in summary.items() if isinstance(v, (int, float))}})
    keys = set.intersection(*(set(row) for row in rows)) - {"seed"}
    means = {key: statistics.fmean(row[key] for row in rows) for key in sorted(keys)}
    return {**means, "tuning_seeds": ",".join(str(r["seed"]) for r in rows), "rows": rows}
