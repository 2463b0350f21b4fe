"""`runner ls runs` on many synthetic run directories vs the bare cost of reading their files.

    python bench/ls_runs.py [--runs 1000] [--repeat 5]

Writes `--runs` run directories shaped like real ones (a full composed `.hydra/config.yaml` of
`runner train method=imp`, overrides, run.json, a summary with 5 pruning levels), then times,
interleaved and repeated:
- baseline: open and read every run's four small files (os.scandir walk, json.loads of run.json and
  summary.json, the YAML texts read but not parsed): what any listing must at least do;
- `list_runs` + `render` in this process (the work of `runner ls runs`);
- `runner ls runs DIR` as a subprocess, start-up included (what a user waits for).
Prints the medians, min-max spreads, and ls / baseline. Single-threaded Python throughout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_runs(root: Path, count: int) -> None:
    """`count` run directories of a sweep over method, sparsity and seed, a few failed or running."""
    from omegaconf import OmegaConf

    from overparam.cli.train import compose_checked

    config = compose_checked(["method=imp", "sparsity=0.9"])
    methods = ("imp", "random_prune", "snip", "synflow")
    for job in range(count):
        method, sparsity, seed = methods[job % 4], (0.5, 0.8, 0.9, 0.95)[(job // 4) % 4], job // 16
        run = root / str(job)
        (run / ".hydra").mkdir(parents=True)
        config["method"]["name"], config["sparsity"], config["seed"] = method, sparsity, seed
        (run / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
        overrides = [f"method={method}", f"sparsity={sparsity}", f"seed={seed}", "train.epochs=30"]
        (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        status = "failed" if job % 97 == 5 else "running" if job % 211 == 7 else "done"
        info = {"status": status, "config_hash": f"{job:016x}", "method": method, "pid": 1,
                "environment": {"hostname": "elsewhere"}, "reason": "FloatingPointError: nan" if status == "failed"
                else None}
        (run / "run.json").write_text(json.dumps(info))
        if status == "done":
            levels = [{"level": level, "sparsity": 1 - 0.8 ** level, "test_accuracy": 0.9 - 0.01 * level,
                       "val_accuracy": 0.89, "test_loss": 0.3} for level in range(5)]
            (run / "summary.json").write_text(json.dumps({"levels": levels, "test_accuracy": 0.86, "method": method}))


def baseline(root: Path) -> int:
    """Read every run's files without interpreting the YAML: the floor for any listing."""
    count = 0
    for entry in os.scandir(root):
        if not entry.is_dir():
            continue
        run = Path(entry.path)
        json.loads((run / "run.json").read_bytes())
        try:
            json.loads((run / "summary.json").read_bytes())
        except FileNotFoundError:
            pass
        (run / ".hydra" / "config.yaml").read_text()
        (run / ".hydra" / "overrides.yaml").read_text()
        count += 1
    return count


def listing(root: Path) -> int:
    from overparam.cli.runs import common_overrides, drop_common, list_runs, render

    rows = list_runs([str(root)])
    render(drop_common(rows, common_overrides(rows)))
    return len(rows)


def subprocess_listing(root: Path) -> int:
    out = subprocess.run([sys.executable, "-m", "overparam.cli.main", "ls", "runs", str(root)], capture_output=True,
                         text=True, check=True)
    return len([line for line in out.stdout.splitlines() if not line.lstrip().startswith("reason:")])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sweep"
        start = time.perf_counter()
        make_runs(root, args.runs)
        print(f"wrote {args.runs} runs in {time.perf_counter() - start:.1f} s")
        times: dict[str, list[float]] = {"baseline": [], "ls runs (in process)": [], "runner ls runs (subprocess)": []}
        for _ in range(args.repeat):  # interleaved, so load on the machine hits all three alike
            for name, function in (("baseline", baseline), ("ls runs (in process)", listing),
                                   ("runner ls runs (subprocess)", subprocess_listing)):
                start = time.perf_counter()
                count = function(root)
                times[name].append(time.perf_counter() - start)
                assert count == args.runs, (name, count)
        print(f"{args.runs} runs, {args.repeat} repeats, 1 thread, cpu count {os.cpu_count()}, "
              f"load average {os.getloadavg()[0]:.1f}")
        for name, values in times.items():
            print(f"  {name:<30} median {statistics.median(values):.3f} s  (min {min(values):.3f}, "
                  f"max {max(values):.3f})")
        ratio = statistics.median(times["ls runs (in process)"]) / statistics.median(times["baseline"])
        print(f"  ls runs / baseline: {ratio:.1f}x")


if __name__ == "__main__":
    main()
