"""Fixed cost of one `runner train` run: where the seconds of a 1-step run go (not a test).

    python bench/startup.py               # 3 interleaved rounds
    python bench/startup.py --rounds 5

Each row is a fresh Python process, timed from outside (wall seconds, median and min over rounds,
rounds interleaved so a burst of load hits every row alike; `CPU s` = its user+system seconds, median):
- `python`            the interpreter alone;
- `import torch`      torch;
- `+ torch._dynamo`   torch, then torch._dynamo: torch.optim's optimizers import it at their first
                      add_param_group/step; the runner's optimizers skip that (`engine.optim.without_dynamo`),
                      so this row only shows what that saves;
- `+ hydra compose`   torch and Hydra's compose API with this project's config tree;
- `runner train`      a 1-step run (default model and dataset, hardware.threads=1).
`run - imports` = what a run costs beyond torch and Hydra. A last run under `python -X importtime`
says whether a run imported torch._dynamo. The machine may be shared: the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ROWS = {
    "python": ["-c", "pass"],
    "import torch": ["-c", "import torch"],
    "+ torch._dynamo": ["-c", "import torch, torch._dynamo"],
    "+ hydra compose": ["-c", "import torch\n"
                              "from hydra import compose, initialize_config_dir\n"
                              f"with initialize_config_dir(config_dir={str(ROOT / 'configs')!r}, version_base='1.3'):\n"
                              "    compose('train')"],
    "runner train": ["-m", "overparam.cli.main", "train", "train.epochs=null", "train.steps=1",
                     "train.eval_every=1", "hardware.threads=1"],
}


def _children_cpu() -> float:
    """User+system seconds of the finished child processes: less moved by other people's load than wall time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    times = {name: [] for name in ROWS}
    cpu = {name: [] for name in ROWS}
    shuffler = random.Random(0)
    with tempfile.TemporaryDirectory() as work:
        env.setdefault("OVERPARAM_CACHE_DIR", os.path.join(work, "cache"))
        for _ in range(args.rounds):
            for name in shuffler.sample(list(ROWS), len(ROWS)):
                tick, used = time.perf_counter(), _children_cpu()
                subprocess.run([sys.executable, *ROWS[name]], cwd=work, env=env, check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                times[name].append(time.perf_counter() - tick)
                cpu[name].append(_children_cpu() - used)
        traced = subprocess.run([sys.executable, "-X", "importtime", *ROWS["runner train"]], cwd=work, env=env,
                                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True).stderr
    dynamo = any(line.rstrip().endswith("| torch._dynamo") for line in traced.splitlines())
    sys.path.insert(0, str(ROOT))
    from overparam.hardware import describe_cpu

    print(describe_cpu())
    print(f"wall seconds per fresh process ({args.rounds} interleaved rounds); load average "
          f"{open('/proc/loadavg').read().split()[0]}; torch._dynamo imported by a run: {'yes' if dynamo else 'no'}")
    print(f"{'':<18} {'median':>7} {'min':>7} {'CPU s':>7}")
    for name, values in times.items():
        print(f"{name:<18} {statistics.median(values):>7.2f} {min(values):>7.2f} {statistics.median(cpu[name]):>7.2f}")
    beyond = statistics.median(times["runner train"]) - statistics.median(times["+ hydra compose"])
    beyond_cpu = statistics.median(cpu["runner train"]) - statistics.median(cpu["+ hydra compose"])
    print(f"{'run - imports':<18} {beyond:>7.2f} {'':>7} {beyond_cpu:>7.2f}  (goal: <= 1 s)")


if __name__ == "__main__":
    main()
