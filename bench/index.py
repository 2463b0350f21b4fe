"""Run index: `runner table` over 1,000 run directories, config from run.json vs the .hydra/config.yaml fallback.

    python bench/index.py [--runs 1000] [--repeat 5] [--keep DIR]

Builds `--runs` synthetic run directories in the on-disk format `runner train` writes today
(run.json with the resolved config and its hash, .hydra/config.yaml and overrides.yaml, summary.json;
pruning runs with a row per level), and a copy in the format of runs written before run.json held the
config (the index then parses .hydra/config.yaml with PyYAML's C loader). Each measurement is a fresh
process, as a user's `runner table` is, so imports count; the rounds interleave the three modes:

    read     open and read the files the index reads, parse nothing: the floor the disk sets
    table    `runner table <runs> --format json` on today's format (target: under 4 s)
    fallback the same on the older format

and print min / median / max seconds, the ratios against `read` and against `table`, and whether
torch was imported (it must not be). The machine is shared and noisy: compare the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, os, sys, time
start = time.perf_counter()
mode, root = sys.argv[1], sys.argv[2]
if mode == "read":
    files = 0
    for name in sorted(os.listdir(root)):
        run = os.path.join(root, name)
        for part in ("run.json", "summary.json", ".hydra/overrides.yaml") + ((".hydra/config.yaml",) if sys.argv[3] == "1" else ()):
            with open(os.path.join(run, part), "rb") as handle:
                handle.read()
            files += 1
    code = 0
else:
    import contextlib, io
    from overparam.cli.main import main
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = main(["table", root, "--format", "json"])
    table = json.loads(out.getvalue())
print(json.dumps({"seconds": time.perf_counter() - start, "code": code, "torch": "torch" in sys.modules,
                  "yaml": "yaml" in sys.modules}))
"""

# A sweep as `runner train -m` makes one: method x sparsity x seed.
SETTINGS = [
    ["method=dense"],
    *[["method=imp", f"sparsity={s}", "prune.rate=0.5"] for s in (0.5, 0.8, 0.9)],
    *[["method=random_prune", f"sparsity={s}"] for s in (0.5, 0.8, 0.9)],
]


def build_runs(root: Path, count: int) -> tuple[Path, Path]:
    """`count` run directories in today's format under root/current and the older format under root/older."""
    from omegaconf import OmegaConf

    from overparam.cli.train import compose_checked
    from overparam.store.atomic import atomic_write_json, atomic_write_text
    from overparam.store.run import config_for_index, config_hash, environment_info

    environment = environment_info()
    composed = [(overrides, compose_checked(overrides)) for overrides in SETTINGS]
    current, older = root / "current", root / "older"
    for job in range(count):
        overrides, config = composed[job % len(composed)]
        seed = job // len(composed)
        config = {**config, "seed": seed}
        overrides = [*overrides, f"seed={seed}"]
        if config["method"]["name"] == "imp":
            levels = [{"level": level, "sparsity": 1 - 0.5 ** level, "test_accuracy": 0.9 - 0.01 * level + seed * 1e-4,
                       "val_accuracy": 0.91 - 0.01 * level} for level in range(5)]
            summary = {"method": "imp", "test_accuracy": levels[-1]["test_accuracy"], "levels": levels}
        else:
            summary = {"method": config["method"]["name"], "test_accuracy": 0.8 + seed * 1e-4, "val_accuracy": 0.81,
                       "test_loss": 0.5, "steps": 870, "train_seconds": 12.5}
        info = {"created": "2026-12-01T10:00:00+0000", "checkpoints": {"model": {"sha256": "0" * 64, "bytes": 27000}},
                "resumes": 0, "status": "done", "config_hash": config_hash(config), "method": config["method"]["name"],
                "environment": environment, "pid": 1000 + job, "completed_hash": config_hash(config),
                "timings": {"last_session_seconds": 13.0, "total_seconds": 13.0},
                "finished": "2026-12-01T10:00:13+0000"}
        yaml_text = OmegaConf.to_yaml(OmegaConf.create(config))
        for folder, with_config in ((current, True), (older, False)):
            run = folder / str(job)
            atomic_write_json(run / "run.json", {**info, **config_for_index(config)} if with_config else info)
            atomic_write_json(run / "summary.json", summary)
            atomic_write_text(run / ".hydra" / "config.yaml", yaml_text)
            atomic_write_text(run / ".hydra" / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(overrides)))
    return current, older


def measure(mode: str, root: Path) -> dict:
    """One fresh process: its own timing (imports included) and the parent's wall time."""
    args = [sys.executable, "-c", CHILD, "read" if mode == "read" else "table", str(root), "1"]
    start = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{result.stderr[-2000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    if report["code"] != 0:
        raise SystemExit(f"{mode}: runner table exited {report['code']}:\n{result.stderr[-2000:]}")
    report["wall"] = wall
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", help="build the runs in this folder and keep them (default: a temporary folder)")
    args = parser.parse_args()

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="overparam-bench-index-"))
    try:
        start = time.perf_counter()
        current, older = build_runs(root, args.runs)
        print(f"built {args.runs} runs x 2 formats in {time.perf_counter() - start:.1f} s under {root}")
        sizes = [os.path.getsize(current / "0" / "run.json"), os.path.getsize(current / "0" / ".hydra" / "config.yaml")]
        print(f"  run.json {sizes[0]} bytes (with the config), .hydra/config.yaml {sizes[1]} bytes")
        modes = {"read": older, "table": current, "fallback": older}
        for mode, folder in modes.items():  # warm the page cache and the bytecode caches
            measure(mode, folder)
        results: dict[str, list[dict]] = {mode: [] for mode in modes}
        for _ in range(args.repeat):
            for mode, folder in modes.items():
                results[mode].append(measure(mode, folder))
        print(f"{args.runs} runs, {args.repeat} interleaved rounds, one process each; cores {os.cpu_count()}, "
              f"load average {os.getloadavg()[0]:.2f} (the index is single-threaded)")
        print(f"  {'mode':<9} {'min s':>7} {'median s':>9} {'max s':>7} {'process wall':>13}  imports torch")
        medians = {}
        for mode, rows in results.items():
            seconds = [row["seconds"] for row in rows]
            medians[mode] = statistics.median(seconds)
            walls = statistics.median(row["wall"] for row in rows)
            print(f"  {mode:<9} {min(seconds):7.3f} {medians[mode]:9.3f} {max(seconds):7.3f} {walls:13.3f}  "
                  f"{any(row['torch'] for row in rows)}")
        per_run = 1000 * medians["table"] / args.runs
        print(f"  table / read = {medians['table'] / medians['read']:.2f}x   "
              f"fallback / table = {medians['fallback'] / medians['table']:.2f}x   ({per_run:.2f} ms per run)")
        verdict = "yes" if max(row["wall"] for row in results["table"]) < 4.0 else "NO"
        print(f"  runner table on {args.runs} runs under 4 s in every round (process wall time): {verdict}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
