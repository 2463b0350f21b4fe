"""Wall time of one 4-job sweep with Hydra's basic launcher (jobs one after another) vs joblib (in parallel).

    python bench/sweep_parallel.py [--steps 200] [--n-jobs 2]

Each sweep is a `runner train -m` subprocess (start-up included, as a user sees it) with its own
output folder; both train the same four seeds. Prints both times and basic / joblib.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def sweep(launcher_args: list[str], steps: int, out: Path) -> float:
    """Seconds one 4-job sweep takes; fails loudly if a job did not finish."""
    args = [sys.executable, "-m", "overparam.cli.main", "train", "-m", *launcher_args, "seed=0,1,2,3",
            "train.epochs=null", f"train.steps={steps}", f"train.eval_every={max(1, steps // 4)}",
            f"paths.output_dir={out}"]
    start = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"sweep failed ({result.returncode}): {result.stderr[-2000:]}")
    jobs = list(out.glob("multirun/*/*/[0-9]*/summary.json"))
    if len(jobs) != 4:
        raise SystemExit(f"expected 4 finished jobs under {out}, found {len(jobs)}")
    return seconds


def accuracies(out: Path) -> list[float]:
    files = sorted(out.glob("multirun/*/*/[0-9]*/summary.json"), key=lambda p: int(p.parent.name))
    return [json.loads(p.read_text())["test_accuracy"] for p in files]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps per job")
    parser.add_argument("--n-jobs", type=int, default=2, help="joblib jobs at once")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        basic_out, joblib_out = Path(tmp) / "basic", Path(tmp) / "joblib"
        basic = sweep([], args.steps, basic_out)
        parallel = sweep(["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.n_jobs}"], args.steps, joblib_out)
        same = accuracies(basic_out) == accuracies(joblib_out)
    print(f"cores: {len(os.sched_getaffinity(0))}, 4 jobs x {args.steps} steps (mnist1d, mlp)")
    print(f"basic launcher: {basic:.1f} s")
    print(f"joblib n_jobs={args.n_jobs}: {parallel:.1f} s")
    print(f"ratio basic / joblib: {basic / parallel:.2f}x")
    print(f"same test accuracies in both sweeps: {same}")


if __name__ == "__main__":
    main()
