"""`runner search <sweep dir>`: the best configuration of an Optuna sweep, re-run on its eval seeds.

The search (`runner train -m hparams_search=lr_wd`) only ever
sees `search.tuning_seeds`. This re-runs the best configuration (optimization_results.yaml) on
`search.eval_seeds`, which never took part in the search, into `<sweep dir>/eval/seed_<s>/`, and
writes `<sweep dir>/eval_results.yaml` with the per-seed and mean figures: the numbers to report.
A trial that cannot be read is named on stderr and skipped (exit code 0): the result does not depend on it.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from overparam.errors import UserError


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
    from overparam.cli.foreign import check_saved_overrides, saved_overrides
    from overparam.store.load import saved_config
    from overparam.store.readers import read_yaml

    best = read_yaml(results_path)
    if not isinstance(best, dict) or not isinstance(best.get("best_params"), dict):
        raise UserError(f"{results_path}: not an Optuna result (no best_params mapping)")
    # The best parameters become overrides: checked like any saved override.
    check_saved_overrides([f"{key}={value}" for key, value in best["best_params"].items()], source=str(results_path))
    # Any readable trial's saved config and command-line overrides: they differ only in the searched keys.
    trial_cfg, trial_overrides = readable_trial(trials, saved_config, saved_overrides)
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


def readable_trial(trials: list[Path], config_of, overrides_of) -> tuple:
    """(config, overrides) of the first trial that reads whole; each damaged trial is a line on stderr, skipped.

    The best parameters come from optimization_results.yaml and the trials share every other key, so a
    damaged trial changes nothing in the result: the exit code stays 0 unless no trial can be read.
    """
    from overparam.report.index import read_run_or_unreadable, unreadable_reason

    chosen = None
    for trial in trials:
        run = read_run_or_unreadable(trial)
        try:
            if run.status == "unreadable":
                raise UserError(run.reason)
            if chosen is None:
                chosen = (config_of(trial), overrides_of(trial))
        except UserError as exc:
            print(f"runner search: unreadable trial {trial}: {unreadable_reason(trial, exc)} (skipped)",
                  file=sys.stderr)
    if chosen is None:
        raise UserError(f"no trial of {trials[0].parent} can be read (each one is listed above)")
    return chosen


def main(argv: list[str] | None = None) -> int:
    """`runner search <sweep dir>`."""
    argv = sys.argv[1:] if argv is None else argv
    if argv in (["-h"], ["--help"]):
        print(f"usage: runner search <optuna sweep dir>\n\n{__doc__.strip()}")
        return 0
    if len(argv) != 1:
        print("usage: runner search <optuna sweep dir>", file=sys.stderr)
        return 2
    try:
        out = evaluate_best(argv[0])
    except UserError as exc:
        print(f"runner search: error: {exc}", file=sys.stderr)
        return 2
    print(f"best {out['best_params']} (tuning {out['best_tuning_value']:.4f}) on eval seeds {out['eval_seeds']}: "
          f"test_accuracy {out.get('test_accuracy_mean', float('nan')):.4f} +- {out.get('test_accuracy_std', 0):.4f}")
    return 0


