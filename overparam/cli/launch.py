"""What `runner train` adds around Hydra's launchers: unique run directories, per-job threads, failure summary.

- `unique_dir` (an OmegaConf resolver used by `hydra.run.dir` and `hydra.sweep.dir` in train.yaml)
  claims a directory with `os.mkdir`, which is atomic: of two runs started in the same second one
  gets `outputs/<date>/<time>`, the other `outputs/<date>/<time>-1`.
- `job_threads` gives each job of a parallel launcher its share of the CPU cores, so N jobs
  running at once do not each start a thread per core.
- `FailureSummary` (a Hydra callback registered in train.yaml) reads every job's run.json when a
  sweep ends, so failures of jobs that ran in other processes (joblib, submitit) are reported too.

Kept free of heavy imports: `overparam.cli.train` imports this module at start-up.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

RESOLVER = "unique_dir"

# configs/hydra/launcher/{joblib,submitit_*}.yaml keep the names users type and set documented
# defaults on top of the plugins' schemas of the same name. Hydra merges the two and warns that
# this matching is deprecated; each file also lists `_target_` and every key the launcher needs,
# so it stands alone once Hydra stops merging. The warning would print once per job: silence it.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/[^']+' is validated against ConfigStore schema")


def claim_unique_dir(path: str) -> str:
    """Create and return `path`, or `path-1`, `path-2`, ... when it exists: the first name this process created.

    `os.mkdir` fails when the name exists, also when another process created it a moment ago,
    so no two callers ever get the same directory. An existing run is resumed by naming its
    directory explicitly (`hydra.run.dir=...`), which bypasses this resolver.
    """
    base = Path(path)
    parents = [p for p in base.parents if not p.exists()]
    base.parent.mkdir(parents=True, exist_ok=True)
    suffix = 0
    while True:
        candidate = base if suffix == 0 else base.with_name(f"{base.name}-{suffix}")
        try:
            os.mkdir(candidate)
        except FileExistsError:
            suffix += 1
            continue
        CREATED.extend(p.absolute() for p in [candidate, *parents])
        return str(candidate)


# Directories this process created for its runs (deepest first per run): a refused run removes them
# again when empty, and no directory that existed before the command.
CREATED: list[Path] = []


def plan_run_dir(value: str) -> None:
    """Before Hydra creates `hydra.run.dir=value`: note which of its folders do not exist yet."""
    if "${" in value:  # known only once resolved: treated as existing (never removed)
        return
    path = Path(os.path.abspath(value))
    CREATED.extend(p for p in (path, *path.parents) if not p.exists())


def created_for(run_dir: str | os.PathLike) -> tuple[Path, ...]:
    """The directories this process created for `run_dir`: itself and its new parents, deepest first."""
    run_dir = Path(os.path.abspath(run_dir))
    if run_dir not in CREATED:
        return ()
    mine = {p for p in CREATED if p == run_dir or p in run_dir.parents}
    return tuple(sorted(mine, key=lambda p: len(p.parts), reverse=True))


SWEEP_PID_ENV = "OVERPARAM_SWEEP_PID"


def watch_sweep_process() -> None:
    """In a worker process of a parallel launcher (joblib): stop when the sweep's process dies.

    The sweep's process is the worker's parent; when it is killed (kill -9 included) the worker is
    given to another parent, and a thread that sees that sends this process SIGTERM: the job stops at
    a step boundary as `interrupted`, resumable by the sweep's command, and no orphan trains on.
    """
    import threading

    sweep = os.environ.get(SWEEP_PID_ENV, "")
    if not sweep.isdigit() or int(sweep) == os.getpid() or os.getppid() != int(sweep):
        return
    if any(thread.name == "overparam-sweep-watch" for thread in threading.enumerate()):
        return
    threading.Thread(target=_watch_parent, args=(int(sweep),), name="overparam-sweep-watch", daemon=True).start()


# Set once the sweep's process is gone: the job that ends then ends its worker too (`leave_if_orphaned`).
ORPHANED: list[bool] = []
# A job that has not ended this long after the SIGTERM is stopped without its resume point.
ORPHAN_GRACE_SECONDS = 300


def _watch_parent(parent: int) -> None:
    import signal
    import time

    while os.getppid() == parent:
        time.sleep(0.5)
    ORPHANED.append(True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(ORPHAN_GRACE_SECONDS)
    os._exit(128 + signal.SIGTERM)


def leave_if_orphaned(code: int) -> None:
    """End this worker process (a launcher would otherwise keep it waiting for work) once its sweep is gone."""
    if ORPHANED:
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def register_resolvers() -> None:
    """Register `${unique_dir:...}`; cached, so one config resolves it to one directory however often it is read.

    Hydra copies the resolver cache from the sweep's config into each job's config (also when
    the job runs in another process), so every job of a sweep sees the same sweep directory.
    """
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, claim_unique_dir, use_cache=True)


def available_cores() -> int:
    """CPU cores this process may run on (respects taskset/cgroup affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parallel_jobs(launcher: Any, cores: int) -> int | None:
    """How many jobs a launcher config runs at once on this machine, or None for an in-process launcher."""
    if launcher is None:
        return None
    target = str(launcher.get("_target_", ""))
    if target.endswith("JoblibLauncher"):
        n_jobs = int(launcher.get("n_jobs", -1) or -1)
        # joblib's convention: -1 = every core, -2 = every core but one, ...
        running = cores + 1 + n_jobs if n_jobs < 0 else n_jobs
        return max(1, min(running, cores))
    return None


def job_threads(hardware: Any, launcher: Any) -> int | None:
    """Intra-op threads for one job: `hardware.threads` when set, else the job's share of the cores.

    joblib runs `n_jobs` jobs at once on this machine: each gets cores // n_jobs threads.
    submitit jobs get `cpus_per_task` (what Slurm reserved for them; 1 when unset, Slurm's default).
    None for the basic launcher: one job at a time keeps PyTorch's default.
    """
    explicit = hardware.get("threads") if hardware is not None else None
    if explicit:
        return int(explicit)
    if launcher is None:
        return None
    target = str(launcher.get("_target_", ""))
    if "submitit_launcher" in target:
        return int(launcher.get("cpus_per_task") or 1)
    cores = available_cores()
    running = parallel_jobs(launcher, cores)
    if running is None:
        return None
    return max(1, cores // running)


def apply_job_threads(hardware: Any, launcher: Any) -> int | None:
    """Set PyTorch's intra-op threads for this job (see `job_threads`); returns the count set, if any."""
    threads = job_threads(hardware, launcher)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return threads


def failed_jobs(sweep_dir: str | os.PathLike) -> list[tuple[str, str]]:
    """(run dir, reason) for every job under `sweep_dir` whose run.json does not say `done`."""
    from overparam.store.atomic import read_json

    failures = []
    for run_json in sorted(Path(sweep_dir).rglob("run.json")):
        try:
            info = read_json(run_json) or {}
        except ValueError:
            failures.append((str(run_json.parent), "run.json is not valid JSON"))
            continue
        status = info.get("status")
        if status == "done":
            continue
        if status == "failed":
            reason = info.get("reason") or "failed (no reason recorded)"
        else:
            # A job still `running` after its sweep ended was killed (SIGKILL, out of memory, time limit).
            reason = f"did not finish (status {status}); it resumes when the sweep is started again"
        failures.append((str(run_json.parent), reason))
    return failures


# Jobs of this process that failed (the basic launcher runs a sweep's jobs in-process; `runner train` adds
# them, FailureSummary those its launcher ran in other processes).
FAILED_JOBS: list[tuple[str, str]] = []

try:
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover - hydra is a dependency; keeps this module importable without it
    _HydraCallback = object  # type: ignore[assignment,misc]


class FailureSummary(_HydraCallback):  # type: ignore[misc,valid-type]
    """Hydra callback: at the end of a multirun, collect the failed jobs of the sweep directory.

    Jobs run by the basic launcher report their failures in-process; jobs run by joblib or
    submitit run in other processes, so their run.json files are the only record. The
    failures are merged into `FAILED_JOBS`; `runner train` prints them
    and exits non-zero.
    """

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        known = {str(Path(where).resolve()) for where, _ in FAILED_JOBS}
        for where, reason in failed_jobs(sweep_dir):
            if str(Path(where).resolve()) not in known:
                FAILED_JOBS.append((where, reason))
