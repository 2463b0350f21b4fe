"""`method=measures`: generalization measures of every run of a sweep, ranked by how well they predict
its generalization gap (Jiang et al. 2020, "Fantastic Generalization Measures and Where to Find Them").

For each finished run of `ingredients` (a sweep directory, run dirs or a glob, found as the merges find
theirs) the recipe loads the run's own data (its label noise included) and weights, measures the gap
(train accuracy - test accuracy, on the labels it trained on) and every measure of
`generalization.MEASURES`, then reports for each measure:

- `kendall_tau`: the rank correlation with the gap over all runs (Jiang et al. eq. 4);
- `granulated_<key>`: for each swept key, the mean tau over groups of runs where only that key
  varies (eq. 5), and `granulated_tau`, their mean (Psi, eq. 6).

The swept keys are the config keys whose values differ between the runs (paths, loggers and the seed
excepted). Distance from initialization needs each run's initial weights: a run started from another
(`from=`) began at that run's weights; any other run began at `build_model(model, seed)`, which is
deterministic, so it is rebuilt from the saved config and seed.
"""

from __future__ import annotations

import json
from typing import Any

from overparam.errors import UserError
from overparam.recipes.shared import merging as common
from overparam.recipes.shared.ingredients import ref_text
from overparam.store.identity import flatten
from overparam.store.load import check_finished

NON_HYPERPARAMETERS = ("paths.", "logger.", "hydra.", "claims", "report.", "seed", "train.checkpoint_seconds")


def check(params, cfg: dict) -> None:
    """Ingredients resolve to at least two finished runs with weights (the values: analysis/params.py)."""
    refs = common.resolve_ingredients(params.ingredients)
    if len(refs) < 2:
        raise UserError(f"ingredients: a rank correlation needs at least 2 runs, got {len(refs)}")
    for ref in refs:
        check_finished(ref.root)
        if not ref.has_weights():
            raise UserError(f"ingredients: {ref_text(ref)} has no weights at {ref.weights}")


def swept_keys(configs: list[dict]) -> list[str]:
    """Config keys whose values differ between runs (hyperparameters), a group kept over its sub-keys."""
    keys: dict[str, None] = {}
    for cfg in configs:
        keys.update(dict.fromkeys(cfg))
    varying = [k for k in keys if not any(k == p.rstrip(".") or k.startswith(p) for p in NON_HYPERPARAMETERS)
               and len({json.dumps(c.get(k), sort_keys=True, default=str) for c in configs}) > 1]
    return [k for k in varying if not any(k.startswith(f"{other}.") for other in varying)]


def initial_weights(ref, cfg, data, device: str) -> dict:
    """The weights the run started from: its `from` run's, else its model rebuilt from config and seed."""
    from overparam.models import build_model

    start = cfg.get("from")
    if start:
        model, _ = common_load(start, data, device)
        return {k: v.detach() for k, v in model.named_parameters()}
    model = build_model(cfg.model.to_dict(), data.input_shape, data.num_classes, seed=int(cfg.seed))
    return {k: v.detach().to(device) for k, v in model.named_parameters()}


def common_load(ref, data, device: str):
    """(model, saved config) of a finished run, on `data`'s shapes."""
    from overparam.store.load import load_run_model

    return load_run_model(ref, device=device, data=data)


def measure_run(ref, seed: int, device: str, data_dir: str, settings: dict, cache: dict) -> dict:
    """Gap, accuracies and every measure of one run (its dataset loaded once per distinct config); `seed`:
    the measuring run's, which draws the examples measured and the measures' own randomness."""
    from overparam.data import load_dataset
    from overparam.recipes.analysis import generalization

    run_cfg = common.weights_config(ref.root)
    key = json.dumps([run_cfg.dataset.to_dict(), int(run_cfg.get("seed", 0))], sort_keys=True)
    if key not in cache:
        cache.clear()  # one dataset held at a time
        cache[key] = load_dataset(run_cfg.dataset.to_dict(), data_dir, seed=int(run_cfg.get("seed", 0)), device=device)
    data = cache[key]
    model, _ = common_load(ref, data, device)
    init = initial_weights(ref, run_cfg, data, device)
    x, y = data.train_x, data.train_y
    limit = settings.get("max_examples")
    if limit and len(x) > int(limit):
        import torch

        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(int(seed)))[: int(limit)]
        x, y = x[order.to(x.device)], y[order.to(y.device)]
    model.eval()
    train_accuracy = generalization.accuracy(model, data.train_x, data.train_y)
    test_accuracy = generalization.accuracy(model, data.test_x, data.test_y)
    values = generalization.all_measures(
        model, init, x, y, seed=int(seed), percentile=float(settings["margin_percentile"]),
        samples=int(settings["pacbayes_samples"]), target=float(settings["pacbayes_target"]),
        depth=int(settings["pacbayes_depth"]), magnitude_eps=float(settings["magnitude_eps"]))
    return {"name": ref_text(ref), "train_accuracy": train_accuracy, "test_accuracy": test_accuracy,
            "gap": train_accuracy - test_accuracy, **values}


def rank(runs: list[dict], settings: list[dict], keys: list[str]) -> list[dict]:
    """One row per measure: Kendall tau with the gap, granulated taus per swept key and their mean; best first."""
    from overparam.recipes.analysis.generalization import MEASURES, granulated_tau, kendall_tau

    gaps = [r["gap"] for r in runs]
    rows = []
    for measure in MEASURES:
        values = [r[measure] for r in runs]
        row: dict[str, Any] = {"measure": measure, "kendall_tau": kendall_tau(values, gaps)}
        granulated = {}
        for key in keys:
            granulated[key] = granulated_tau(values, gaps, settings, key)
            row[f"granulated_{key}"] = granulated[key]
        found = [v for v in granulated.values() if v is not None]
        row["granulated_tau"] = sum(found) / len(found) if found else None
        rows.append(row)
    rows.sort(key=lambda r: -(r["kendall_tau"] if r["kendall_tau"] is not None else -2))
    for position, row in enumerate(rows, start=1):
        row["rank"] = position  # `runner table DIR --rows rank,measure --metric kendall_tau` lists them in order
    return rows


def run(params, context) -> dict:
    """Measure every run of the sweep, rank the measures by Kendall tau with the gap, save the table."""
    from overparam.engine import setup_hardware

    shared, run = context.settings, context.run
    device = setup_hardware(shared.hardware.to_dict())
    refs = common.resolve_ingredients(params.ingredients)
    settings = params["measures"].as_dict()
    configs = [flatten(common.weights_config(ref.root).to_dict()) for ref in refs]
    keys = swept_keys(configs)
    hyperparameters = [{k: c.get(k) for k in keys} for c in configs]
    cache: dict = {}
    runs = []
    for ref, hyper in zip(refs, hyperparameters):
        runs.append({**measure_run(ref, context.seed, device, str(shared.paths.data_dir), settings, cache), **hyper})
    rows = rank(runs, hyperparameters, keys)
    best = rows[0]
    summary = {"runs_measured": len(runs), "swept": ",".join(keys) or "(none)", "best_measure": best["measure"],
               "best_kendall_tau": best["kendall_tau"], "mean_gap": sum(r["gap"] for r in runs) / len(runs),
               "rows": rows, "runs": runs}
    if not keys:
        # `runner table --metric granulated_tau` says why there is no such number instead of listing others.
        summary["missing_metrics"] = {"granulated_tau": "it needs a swept key other than seed (a granulated tau "
                                      "compares runs where only that key varies) and these ingredients differ "
                                      "in seed only; sweep a hyperparameter too, e.g. optim.lr=0.05,0.1"}
    return summary
