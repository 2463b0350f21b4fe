"""`runner reproduce`: re-run a saved run or sweep and compare every summary metric; or run a paper preset
and check its claims.

    runner reproduce <run dir | multirun dir> [--tolerance T] [--out DIR] [--trust] [--reuse-cache]
    runner reproduce experiment=<preset> [key=value ...] [--out DIR] [--trust]

A saved run is recomposed from its `.hydra/overrides.yaml` with today's config tree. When that gives
the run's saved `.hydra/config.yaml` (same identity hash), it is re-run with those overrides; otherwise
(defaults changed since) the saved config itself is run, and the keys that differ are printed.
Jobs run as `runner train` subprocesses, so a sweep goes through its configured launcher; each re-run
job is paired with the original of the same identity (config hash, `overparam/store/identity.py`).
A reproduction retrains everything it compares: its jobs share a fresh cache folder of their own
(`paths.cache_dir=<out>/.cache`) and never read the original's level cache. `--reuse-cache` opts in
to the original's cache; the report then lists every level whose weights were reused, not
reproduced (from each run.json's `lineage`).
Exit codes: 0 all metrics agree / all claims pass; 1 a metric differs, a job failed or a claim fails;
2 bad input (not a finished run, a foreign `_target_` without --trust, a claim that does not parse).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from overparam.cli.rerun import new_out as _new_out
from overparam.cli.rerun import runner_train as _runner_train
from overparam.errors import UserError

EPILOG = """examples:
  runner reproduce outputs/2026-11-22/10-00-00
  runner reproduce outputs/multirun/2026-11-22/10-00-00 --tolerance 0.002
  runner reproduce experiment=cnn_vs_mlp
  runner reproduce experiment=cnn_vs_mlp train.epochs=5 --out /tmp/quick
Comparisons are exact for CPU runs with hardware.deterministic=true, else within --tolerance
(absolute; default 0.01). Timings (keys ending in `seconds`) are shown, not compared.
Every level is retrained in a fresh cache; --reuse-cache takes levels from the original's cache
and lists them as not reproduced."""

DEFAULT_TOLERANCE = 0.01


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of `runner reproduce`."""
    parser = argparse.ArgumentParser(prog="runner reproduce", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Re-run saved runs and compare every summary metric, or run a "
                                                 "paper preset and check its claims.")
    parser.add_argument("target", help="a run directory, a multirun directory, or experiment=<preset>")
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides (experiment=<preset> only)")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="largest absolute difference allowed (default: exact for deterministic CPU runs, "
                             f"else {DEFAULT_TOLERANCE})")
    parser.add_argument("--out", help="directory for the new run(s) (default outputs/reproduce/<date>/<time>)")
    parser.add_argument("--trust", action="store_true", help="let the saved config name components that are not registered "
                             "(only for run directories you trust)")
    parser.add_argument("--reuse-cache", action="store_true",
                        help="take levels from the original's level cache instead of retraining them (they are "
                             "listed as not reproduced)")
    return parser


def main(argv: list[str]) -> int:
    """Dispatch on the target: a preset, a multirun directory, or a run directory."""
    args = build_parser().parse_args(argv)
    if args.tolerance is not None and (args.tolerance < 0 or args.tolerance != args.tolerance):
        raise UserError("--tolerance must be a number >= 0")
    if args.target.startswith("experiment="):
        from overparam.cli.presets import reproduce_preset

        return reproduce_preset(args.target.partition("=")[2], args.overrides, out=args.out, trust=args.trust)
    if args.overrides:
        raise UserError(f"extra overrides ({' '.join(args.overrides)}) apply to experiment=<preset> only; a saved run "
                        f"is reproduced as it was")
    target = Path(args.target)
    if not target.exists():
        raise UserError(f"{target} does not exist (give a run dir, a multirun dir, or experiment=<preset>)")
    if is_multirun_dir(target):
        return reproduce_multirun(target, out=args.out, tolerance=args.tolerance, trust=args.trust,
                                  reuse_cache=args.reuse_cache)
    return reproduce_run(target, out=args.out, tolerance=args.tolerance, trust=args.trust,
                         reuse_cache=args.reuse_cache)


# --- helpers ---------------------------------------------------------------------------------------
def is_multirun_dir(path: Path) -> bool:
    """A Hydra sweep directory: multirun.yaml, or job subdirectories and no run of its own."""
    from overparam.report.index import is_run_dir

    if is_run_dir(path):
        return False
    if (path / "multirun.yaml").is_file():
        return True
    return any(is_run_dir(child) for child in path.iterdir() if child.is_dir())


def _flat_identity(config: dict) -> dict[str, Any]:
    from overparam.report.index import flatten, is_identity_key

    return {k: v for k, v in flatten(config).items() if is_identity_key(k)}


def config_differences(recomposed: dict, saved: dict) -> list[str]:
    """Identity keys whose value differs (a null and a missing key are the same: no effect)."""
    left, right = _flat_identity(recomposed), _flat_identity(saved)
    out = []
    for key in sorted(set(left) | set(right)):
        if left.get(key) != right.get(key):
            out.append(f"{key}: saved {right.get(key)!r}, today {left.get(key)!r}")
    return out


class SavedRun:
    """A finished run directory prepared for re-running: its checked config and how to re-run it."""

    def __init__(self, path: Path, trust: bool):
        from overparam.cli.foreign import open_run
        from overparam.store.run import config_hash

        # The one validated loader for a run from elsewhere: safe YAML/JSON, registered components only,
        # no hydra settings beyond the launcher's and sweeper's (see overparam.store.load).
        run = open_run(path, trust=trust)
        self.path = path
        self.trust = trust
        self.info = run.info
        self.summary = run.summary
        if self.summary is None:
            raise UserError(f"{path} has no summary.json")
        self.saved = run.config
        self.overrides = run.overrides
        self.saved_resolved = run.resolved
        self.identity = config_hash(self.saved_resolved)
        self.differences: list[str] = []
        self.recompose_error: str | None = None
        try:
            from overparam.cli.train import compose_checked

            recomposed = compose_checked(self.overrides, trust=trust)
            if config_hash(recomposed) != config_hash(self.saved_resolved):
                self.differences = config_differences(recomposed, self.saved_resolved) or ["(identity hash differs)"]
        except UserError as exc:
            self.recompose_error = str(exc)
        hardware = self.saved_resolved.get("hardware") or {}
        self.exact = bool(hardware.get("deterministic")) and str(hardware.get("device", "cpu")) == "cpu"

    @property
    def from_overrides(self) -> bool:
        """True when today's config tree + the saved overrides give the saved config."""
        return not self.differences and self.recompose_error is None

    def explain(self) -> str | None:
        """Why the saved config is used instead of the overrides (None when the overrides suffice)."""
        if self.recompose_error:
            return f"the saved overrides no longer compose ({self.recompose_error}); running the saved config.yaml"
        if self.differences:
            return ("recomposing the saved overrides gives another config (defaults changed since); running the "
                    "saved config.yaml. Differences:\n    " + "\n    ".join(self.differences))
        return None

    def tolerance(self, given: float | None) -> float:
        if given is not None:
            return given
        return 0.0 if self.exact else DEFAULT_TOLERANCE

    @property
    def cache_dir(self) -> Path:
        """The shared-artifact folder the original run used (its level cache lives below it), when that folder
        lies beside the run here (`<a folder above the run>/.cache`): a saved path elsewhere is where the run
        ran, not a place on this machine to read or write."""
        from overparam.store.cache import shared_cache_dir

        saved = shared_cache_dir(self.saved_resolved.get("paths"))
        run = self.path.resolve()
        for folder in run.parents:
            beside = folder / ".cache"
            if beside.is_dir() and not beside.is_symlink() and saved.resolve() == beside:
                return beside
        raise UserError(f"--reuse-cache: {self.path}'s saved cache folder {saved} is not a .cache folder above the "
                        f"run on this machine; reproduce without --reuse-cache")

    def launch(self, new_dir: Path, cache_dir: Path) -> int:
        """Re-run this run into `new_dir` with `cache_dir` as its shared cache (overrides when they reproduce
        the config, else the saved config)."""
        if self.from_overrides:
            return _runner_train([*self.overrides, f"++paths.cache_dir={cache_dir}", f"hydra.run.dir={new_dir}"],
                                 trust=self.trust)
        return _launch_saved_config(self.saved, self.saved_resolved, new_dir, cache_dir, trust=self.trust)


def _launch_saved_config(saved, saved_resolved: dict, new_dir: Path, cache_dir: Path, trust: bool = False) -> int:
    """Run a saved config.yaml as the primary config (no defaults list), validated first."""
    from omegaconf import OmegaConf

    from overparam.cli.validate import validate

    validate(saved_resolved, trust=trust)
    with tempfile.TemporaryDirectory(prefix="overparam-reproduce-") as folder:
        from overparam.cli.foreign import local_places

        config = OmegaConf.to_container(saved, resolve=False)
        # Where it writes and what observes it are this machine's, not the saved run's.
        config.update(local_places())
        # The run needs the same Hydra settings as train.yaml's (no chdir, quiet logging).
        config["hydra"] = {"job": {"chdir": False}, "job_logging": {"root": {"level": "WARNING"}}}
        config.setdefault("paths", {})["cache_dir"] = str(cache_dir)
        Path(folder, "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)), encoding="utf-8")
        return _runner_train([f"--config-path={folder}", "--config-name=config", f"hydra.run.dir={new_dir}"],
                             trust=trust)


def _compare(original: "SavedRun", new_dir: Path, tolerance: float, title: str) -> bool:
    """Print the side-by-side table of one job; True when every judged metric agrees."""
    from overparam.report.compare import compare_summaries, format_comparison
    from overparam.report.index import read_run

    new = read_run(new_dir)
    if not new.finished:
        print(f"{title}\n  the reproduced run did not finish: status {new.status}"
              + (f" ({new.reason})" if new.reason else ""))
        return False
    differences = compare_summaries(original.summary, new.summary, tolerance)
    print(format_comparison(differences, title))
    new_hash = _read_run_json(new_dir).get("config_hash")
    same_hash = new_hash == original.info.get("config_hash")
    print(f"config hash: original {original.info.get('config_hash')}, reproduced {new_hash}"
          + ("" if same_hash else "  (differs: the configs are not identical)"))
    judged = [d for d in differences if d.judged]
    bad = [d for d in judged if not d.agrees]
    rule = "exactly" if tolerance == 0 else f"within {tolerance:g}"
    print(f"{len(judged) - len(bad)}/{len(judged)} metrics agree {rule}" + (f"; DIFFER: {', '.join(d.name for d in bad)}"
                                                                           if bad else ""))
    return not bad


def _read_run_json(path: Path) -> dict:
    from overparam.store.atomic import read_json

    return read_json(path / "run.json") or {}


def not_reproduced(new_dir: Path, root: Path) -> list[str]:
    """Phases of the reproduced run whose weights were not trained under `root` (reused from a cache or a
    run outside the reproduction), from run.json's `lineage`: `level_3 (trained by <dir>, from <cache>)`."""
    root = root.resolve()
    out = []
    for phase, entry in (_read_run_json(new_dir).get("lineage") or {}).items():
        trained_in = Path(str(entry.get("run_dir") or "")).resolve() if entry.get("run_dir") else None
        if trained_in is not None and (trained_in == root or root in trained_in.parents):
            continue
        where = f"trained by {trained_in}" if trained_in else "origin unknown"
        if entry.get("reused_from"):
            where += f", from {entry['reused_from']}"
        out.append(f"{phase} ({where})")
    return out


def _report_lineage(new_dir: Path, root: Path) -> list[str]:
    missing = not_reproduced(new_dir, root)
    if missing:
        print(f"NOT REPRODUCED ({len(missing)} reused, not retrained; their metrics only check the cache):")
        for line in missing:
            print(f"  {line}")
    return missing


# --- one run ---------------------------------------------------------------------------------------
def reproduce_run(path: Path, *, out: str | None, tolerance: float | None, trust: bool,
                  reuse_cache: bool = False) -> int:
    """Re-run one saved run into a new directory and compare every summary metric."""
    saved = SavedRun(path, trust)
    new_dir = _new_out(out)
    note = saved.explain()
    if note:
        print(f"note: {note}")
    code = saved.launch(new_dir, saved.cache_dir if reuse_cache else new_dir / ".cache")
    if code != 0 and not (new_dir / "run.json").is_file():
        print(f"runner reproduce: the re-run exited with code {code} before creating a run", file=sys.stderr)
        return 1
    tol = saved.tolerance(tolerance)
    print()
    agrees = _compare(saved, new_dir, tol, f"original   {path}\nreproduced {new_dir}\n")
    _report_lineage(new_dir, new_dir)
    return 0 if agrees else 1


# --- a sweep ---------------------------------------------------------------------------------------
def _identity_of(run_dir: Path) -> str | None:
    """The run's identity hash as its run.json records it (the store's one identity rule)."""
    return _read_run_json(run_dir).get("config_hash")


def pair_jobs(jobs: list["SavedRun"], new_dirs: list[Path]) -> list[tuple["SavedRun", Path | None]]:
    """Each original job with the re-run job of the same identity (config hash), not the same override strings:
    the re-run adds its own places (`paths.cache_dir`, the sweep dir) that are no part of what a job computes.
    Jobs of one identity (a sweep over a non-identity key such as `hardware.threads`) pair in job order."""
    by_identity: dict[str | None, list[Path]] = {}
    for new_dir in new_dirs:
        by_identity.setdefault(_identity_of(new_dir), []).append(new_dir)
    pairs: list[tuple[SavedRun, Path | None]] = []
    for job in jobs:
        candidates = by_identity.get(job.identity) or []
        pairs.append((job, candidates.pop(0) if candidates else None))
    return pairs


def reproduce_multirun(path: Path, *, out: str | None, tolerance: float | None, trust: bool,
                       reuse_cache: bool = False) -> int:
    """Re-run every job of a sweep (through its launcher when the overrides still compose) and compare."""
    from overparam.report.index import find_runs, load_yaml
    from overparam.cli.foreign import check_saved_overrides

    jobs, damaged = [], []
    for job_dir in find_runs([path]):
        try:
            jobs.append(SavedRun(job_dir, trust))
        except UserError as exc:  # one damaged or refused job does not keep the others from being checked
            damaged.append((job_dir, str(exc).splitlines()[0]))
    if not jobs:
        if damaged:
            raise UserError(f"no job of {path} can be reproduced: {damaged[0][0].name}: {damaged[0][1]}")
        raise UserError(f"{path} holds no job directories")
    for job_dir, reason in damaged:
        print(f"job {job_dir.name}: NOT REPRODUCED: {reason}")
    multirun = load_yaml(path / "multirun.yaml") or {}
    if not isinstance(multirun, dict):
        raise UserError(f"{path}/multirun.yaml: not a saved sweep (a mapping)")
    saved_overrides = ((multirun.get("hydra") or {}).get("overrides") or {})
    if not isinstance(saved_overrides, dict):
        raise UserError(f"{path}/multirun.yaml: hydra.overrides is not a mapping")
    # Place overrides (run/sweep dirs, mode) are dropped by the check: the reproduction picks its own.
    task = check_saved_overrides(saved_overrides.get("task") or [], source=f"{path}/multirun.yaml", trust=trust)
    hydra_overrides = check_saved_overrides(saved_overrides.get("hydra") or [], source=f"{path}/multirun.yaml",
                                            trust=trust)
    new_root = _new_out(out)
    relaunch = bool(multirun) and all(job.from_overrides for job in jobs)
    # The jobs share a fresh cache of their own: every level they compare is trained in this reproduction.
    cache_for = (lambda job: job.cache_dir) if reuse_cache else (lambda job: new_root / ".cache")
    pairs: list[tuple[SavedRun, Path | None]] = []
    if relaunch:
        print(f"re-running the sweep of {len(jobs)} job(s) through its launcher into {new_root}")
        _runner_train(["-m", *task, *hydra_overrides, f"++paths.cache_dir={cache_for(jobs[0])}",
                       f"hydra.sweep.dir={new_root}"], trust=trust)
        pairs = pair_jobs(jobs, find_runs([new_root]) if new_root.exists() else [])
    else:
        for job in jobs:
            note = job.explain()
            if note:
                print(f"note: {job.path.name}: {note}")
        print(f"re-running {len(jobs)} job(s) one by one into {new_root}")
        for job in jobs:
            new_dir = new_root / job.path.name
            job.launch(new_dir, cache_for(job))
            pairs.append((job, new_dir))
    results = []
    for job, new_dir in pairs:
        print()
        if new_dir is None or not new_dir.exists():
            print(f"job {job.path}: the sweep made no job of its identity (config hash {job.identity}; "
                  f"overrides {' '.join(job.overrides)})")
            results.append(False)
            continue
        results.append(_compare(job, new_dir, job.tolerance(tolerance),
                                f"job {job.path.name}: {' '.join(job.overrides)}\n"
                                f"original   {job.path}\nreproduced {new_dir}\n"))
        _report_lineage(new_dir, new_root)
    agreeing, total = sum(results), len(results) + len(damaged)
    print(f"\n{agreeing}/{total} job(s) reproduced" + ("" if all(results) else "; some DIFFER")
          + (f"; {len(damaged)} NOT REPRODUCED (unreadable)" if damaged else ""))
    return 0 if agreeing == total else 1


# --- a paper preset --------------------------------------------------------------------------------
