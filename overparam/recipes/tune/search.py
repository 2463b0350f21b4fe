"""Hyperparameter search with separate tuning and evaluation seeds.

`runner train -m hparams_search=lr_wd` runs an Optuna study (configs/hparams_search/lr_wd.yaml).
Each trial is one job whose recipe is `run` below: it trains the chosen method once per
`search.tuning_seeds` entry (sub-runs `<job>/seed_<s>/`) and returns the mean of the objective
over those seeds, so the search only ever sees its tuning seeds. Afterwards

    python -m overparam.recipes.tune.search <sweep dir>

re-runs the best configuration (optimization_results.yaml) on `search.eval_seeds`, which never
took part in the search, into `<sweep dir>/eval/seed_<s>/`, and writes `<sweep dir>/eval_results.yaml`
with the per-seed and mean figures: the numbers to report.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from overparam.errors import UserError


def inner_target(cfg) -> str:
    """The searched method's own recipe path, looked up by `method.name` in the method registry."""
    from overparam.components import REGISTRIES, dotted

    name = (cfg.get("method") or {}).get("name")
    if name == "search":
        raise UserError("hparams_search: the searched method cannot be the search itself")
    if name not in REGISTRIES["method"]:
        raise UserError(f"hparams_search: method {name!r} is not registered; choose one of: "
                        f"{', '.join(sorted(REGISTRIES['method']))}")
    return dotted(REGISTRIES["method"][name])


def inner_recipe(cfg):
    """The searched method's recipe (a registered callable)."""
    from overparam.components import resolve

    return resolve("method", {"_target_": inner_target(cfg)}, trust=False)


def _seeds(cfg, key: str) -> list[int]:
    seeds = (cfg.get("search") or {}).get(key)
    if not isinstance(seeds, (list, tuple)) and not hasattr(seeds, "__len__") or not seeds:
        raise UserError(f"search.{key} must be a non-empty list of seeds")
    return [int(s) for s in seeds]


def validate(cfg: dict) -> None:
    """Tuning and evaluation seeds are disjoint lists; the searched method's own checks pass."""
    tuning, evaluation = _seeds(cfg, "tuning_seeds"), _seeds(cfg, "eval_seeds")
    overlap = sorted(set(tuning) & set(evaluation))
    if overlap:
        raise UserError(f"search.tuning_seeds and search.eval_seeds share {overlap}: evaluate on unseen seeds")
    module = sys.modules[inner_recipe(cfg).__module__]
    if hasattr(module, "validate"):
        module.validate(cfg)


def run(cfg, run) -> dict:
    """One trial: the method on every tuning seed; the summary holds the means (the objective among them)."""
    from omegaconf import OmegaConf

    from overparam.store import Run
    from overparam.store.atomic import atomic_write_text

    recipe = inner_recipe(cfg)
    rows = []
    for seed in _seeds(cfg, "tuning_seeds"):
        container = OmegaConf.to_container(cfg, resolve=True)
        container["seed"] = seed
        container["method"]["_target_"] = inner_target(cfg)
        seed_cfg = OmegaConf.create(container)
        sub_dir = Path(run.root) / f"seed_{seed}"
        sub = Run(sub_dir, container, device=str(cfg.hardware.device), precision=str(cfg.hardware.precision)).start()
        atomic_write_text(sub_dir / ".hydra" / "config.yaml", OmegaConf.to_yaml(seed_cfg))
        if sub.done:
            summary = sub.read_summary() or {}
        else:
            summary = recipe(seed_cfg, sub) or {}
            summary.setdefault("method", cfg.method.name)
            sub.finish("done", summary=summary)
        rows.append({"seed": seed, **{k: v for k, v in summary.items() if isinstance(v, (int, float))}})
    keys = set.intersection(*(set(row) for row in rows)) - {"seed"}
    means = {key: statistics.fmean(row[key] for row in rows) for key in sorted(keys)}
    return {**means, "tuning_seeds": ",".join(str(r["seed"]) for r in rows), "rows": rows}


def evaluate_best(sweep_dir: str | Path) -> dict:
    """Re-run the sweep's best configuration on its eval seeds; write and return eval_results.yaml."""
    from omegaconf import OmegaConf

    from overparam.cli.train import train_in_process

    sweep_dir = Path(sweep_dir)
    results_path = sweep_dir / "optimization_results.yaml"
    from overparam.store.discover import sweep_jobs

    trials = sweep_jobs(sweep_dir)
    if not results_path.is_file() or not trials:
        raise UserError(f"{sweep_dir} is not a finished Optuna sweep (no optimization_results.yaml or trial dirs)")
    from overparam.store.load import check_saved_overrides, read_yaml, saved_config, saved_overrides

    best = read_yaml(results_path)
    if not isinstance(best, dict) or not isinstance(best.get("best_params"), dict):
        raise UserError(f"{results_path}: not an Optuna result (no best_params mapping)")
    # The best parameters become overrides: checked like any saved override.
    check_saved_overrides([f"{key}={value}" for key, value in best["best_params"].items()], source=str(results_path))
    # Any trial's saved config and command-line overrides: they differ only in the searched keys.
    trial_cfg = saved_config(trials[0])
    trial_overrides = saved_overrides(trials[0])
    eval_seeds = [int(s) for s in trial_cfg.search.eval_seeds]
    searched = set(best["best_params"])
    # Drop what the search itself set: its preset (and the search.* keys only it defines), the seed.
    def kept(override: str) -> bool:
        key = override.split("=")[0].lstrip("+~")
        return key not in searched | {"hparams_search", "seed"} and not key.startswith(("search.", "hydra."))

    base = [o for o in trial_overrides if kept(o)]
    chosen = [f"{key}={value}" for key, value in best["best_params"].items()]
    rows = []
    for seed in eval_seeds:
        summary = train_in_process([*base, *chosen, f"seed={seed}"], sweep_dir / "eval" / f"seed_{seed}")
        rows.append({"seed": seed, **{k: summary[k] for k in ("val_accuracy", "test_accuracy") if k in summary}})
    out = {"best_params": best["best_params"], "best_tuning_value": best["best_value"], "eval_seeds": eval_seeds,
           "rows": rows}
    for key in ("val_accuracy", "test_accuracy"):
        values = [row[key] for row in rows if key in row]
        if values:
            out[f"{key}_mean"] = statistics.fmean(values)
            out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    OmegaConf.save(OmegaConf.create(out), sweep_dir / "eval_results.yaml")
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m overparam.recipes.tune.search <sweep dir>`."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m overparam.recipes.tune.search <optuna sweep dir>", file=sys.stderr)
        return 2
    try:
        out = evaluate_best(argv[0])
    except UserError as exc:
        print(f"search: error: {exc}", file=sys.stderr)
        return 2
    print(f"best {out['best_params']} (tuning {out['best_tuning_value']:.4f}) on eval seeds {out['eval_seeds']}: "
          f"test_accuracy {out.get('test_accuracy_mean', float('nan')):.4f} +- {out.get('test_accuracy_std', 0):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
