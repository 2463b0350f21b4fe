"""Thread default under contention: the default vs fixed thread counts with 0, 1, 2 busy cores (not a test).

    python bench/threads.py                       # lenet300_100 and conv4, 0/1/2 busy cores, 3 rounds
    python bench/threads.py --models lenet --rounds 5

Each cell trains a model for a few SGD steps (synthetic batch, same work) in a fresh Python process,
so the OpenMP runtime starts with that setting's environment:
- `default`   what `runner train` does now with the CPU default (hardware.deterministic=true):
              passive OpenMP waits, the allowed cores, tiny models on one thread;
- `adaptive`  the same with hardware.deterministic=false: the cores free now (threads column);
- `old`       PyTorch's own default: one thread per core, OpenMP workers spinning between ops;
- `1`, `2`    fixed counts (passive waits, as `hardware.threads=N` now runs).
Busy cores are Python processes spinning in a loop, started before and stopped after each block.
Rounds are interleaved (every setting once per round, fresh order); a cell is the median over
rounds of seconds per step, and `default/best` divides the default's by the best fixed count's.
The machine is shared: the load average printed with each block says how busy it was besides.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})
setting, model_name, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
from overparam import hardware
if setting != "old":
    hardware.quiet_openmp()
import torch
import torch.nn.functional as F
if model_name == "lenet":
    from overparam.models.zoo import mlp
    build = lambda shape, classes: mlp(shape, classes, widths=(300, 100))
    shape = (1, 28, 28)
else:
    from overparam.models.conv import conv4 as build
    shape = (3, 32, 32)
torch.manual_seed(0)
model = build(shape, 10)
batch = 60
if setting in ("default", "adaptive"):
    threads, why = hardware.default_threads(None, adaptive=setting == "adaptive")
    from overparam.engine.fit import forward_macs
    threads = hardware.threads_for_model(threads, forward_macs(model, shape) * batch)
    torch.set_num_threads(threads)
elif setting != "old":
    torch.set_num_threads(int(setting))
x = torch.randn(batch, *shape)
y = torch.randint(0, 10, (batch,))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
def step():
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
step()
tick = time.perf_counter()
for _ in range(steps):
    step()
print(json.dumps({{"seconds": (time.perf_counter() - tick) / steps, "threads": torch.get_num_threads()}}))
"""

STEPS = {"lenet": 100, "conv4": 2}


def spin() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run_child(setting: str, model: str, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), setting, model, str(steps)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="lenet,conv4")
    parser.add_argument("--busy", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    settings = ["default", "adaptive", "old", *[str(n) for n in range(1, cores + 1)]]
    print(f"{cores} cores; seconds per SGD step (median of {args.rounds} interleaved rounds), batch 60")
    print(f"{'model':<6} {'busy':>4} " + " ".join(f"{s:>9}" for s in settings)
          + f" {'adaptive threads':>16} {'default/best':>12} {'adaptive/best':>13} {'old/best':>8}  load")
    shuffler = random.Random(0)
    for model in args.models.split(","):
        for busy in (int(b) for b in args.busy.split(",")):
            spinners = [spin() for _ in range(busy)]
            try:
                time.sleep(0.5)
                times = {s: [] for s in settings}
                chosen = []
                for _ in range(args.rounds):
                    for setting in shuffler.sample(settings, len(settings)):
                        result = run_child(setting, model, STEPS[model])
                        times[setting].append(result["seconds"])
                        if setting == "adaptive":
                            chosen.append(result["threads"])
            finally:
                for process in spinners:
                    process.kill()
                    process.wait()
            load = open("/proc/loadavg").read().split()[0]
            median = {s: statistics.median(v) for s, v in times.items()}
            best = min(median[s] for s in settings if s.isdigit())
            print(f"{model:<6} {busy:>4} " + " ".join(f"{1e3 * median[s]:>7.1f}ms" for s in settings)
                  + f" {'/'.join(map(str, chosen)):>16} {median['default'] / best:>12.2f}"
                  f" {median['adaptive'] / best:>13.2f} {median['old'] / best:>8.2f}"
                  f"  {load}", flush=True)


if __name__ == "__main__":
    main()
