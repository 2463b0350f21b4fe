"""Thread count and OpenMP wait policy under contention: settings side by side, 0/1/2 busy cores (not a test).

    python bench/threads.py                                   # lenet (batch 128) and conv4, 0/1/2 busy cores
    python bench/threads.py --models lenet --rounds 7 --busy 0,1
    python bench/threads.py --settings default,1,passive,spin10k

Each cell trains a model for a few SGD steps (synthetic batch, same work) in a fresh Python process,
so the OpenMP runtime starts with that setting's environment. Settings (threads, environment):
- `default`   what `runner train` does (hardware.deterministic=true): `hardware.openmp_defaults()`,
              the allowed cores, tiny models on one thread;
- `1`         one thread (no parallel regions: the wait policy does not matter);
- `passive`   all cores, OMP_WAIT_POLICY=PASSIVE (idle workers sleep at once);
- `torch`     all cores, nothing set: libgomp spins 300,000 times, ~3 ms, before sleeping;
- `active`    all cores, OMP_WAIT_POLICY=ACTIVE (workers spin for minutes);
- `spinN`     all cores, GOMP_SPINCOUNT=N (libgomp; KMP_BLOCKTIME plays that part in Intel's runtime).
Busy cores are Python processes spinning in a loop (`--pin` pins them to the last cores), started before
and stopped after each block. Rounds are interleaved (every setting once per round, fresh order); a
cell is the median over rounds of milliseconds per step, and `spread` the (max-min)/median of the
worst cell. `default/best` divides the default's median by the best setting's. The machine may be
shared: the load average is printed before and after each block.
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
sys.path.insert(0, str(ROOT))

from overparam import hardware  # noqa: E402  (torch-free)

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {root!r})
setting, model_name, steps, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
from overparam import hardware
if setting == "default":
    hardware.openmp_defaults()
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
if setting == "default":
    threads, why = hardware.default_threads(None, adaptive=False)
    from overparam.engine.fit import forward_macs
    threads = hardware.threads_for_model(threads, forward_macs(model, shape) * batch)
    torch.set_num_threads(threads)
elif setting == "1":
    torch.set_num_threads(1)
x = torch.randn(batch, *shape)
y = torch.randint(0, 10, (batch,))
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
def step():
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
for _ in range(3):
    step()
tick = time.perf_counter()
for _ in range(steps):
    step()
print(json.dumps({{"seconds": (time.perf_counter() - tick) / steps, "threads": torch.get_num_threads(),
                  "env": {{k: v for k, v in os.environ.items() if k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}}}}))
"""

STEPS = {"lenet": 150, "conv4": 3}
OPENMP_KEYS = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def setting_env(setting: str) -> dict:
    """The OpenMP variables a setting starts its process with (on top of a clean environment)."""
    if setting in ("default", "torch", "1"):
        return {}
    if setting == "passive":
        return {"OMP_WAIT_POLICY": "PASSIVE"}
    if setting == "active":
        return {"OMP_WAIT_POLICY": "ACTIVE"}
    if setting.startswith("spin"):
        count = setting[4:].replace("k", "000")
        return {"GOMP_SPINCOUNT": count}
    raise SystemExit(f"unknown setting {setting!r}")


def spin(core: int | None) -> subprocess.Popen:
    command = [sys.executable, "-c", "while True: pass"]
    if core is not None:
        command = ["taskset", "-c", str(core), *command]
    return subprocess.Popen(command)


def run_child(setting: str, model: str, steps: int, batch: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_KEYS}
    env.update(setting_env(setting))
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), setting, model, str(steps), str(batch)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def load() -> str:
    return open("/proc/loadavg").read().split()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="lenet,conv4")
    parser.add_argument("--busy", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--pin", action="store_true", help="pin each busy process to one core (the last ones)")
    parser.add_argument("--settings", default="default,1,passive,torch,active,spin1k,spin10k,spin100k")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    settings = args.settings.split(",")
    print(hardware.describe_cpu())
    print(f"ms per SGD step (momentum), batch {args.batch}; median of {args.rounds} interleaved rounds; "
          f"busy cores {'pinned' if args.pin else 'not pinned'}")
    print(f"{'model':<6} {'busy':>4} " + " ".join(f"{s:>9}" for s in settings)
          + f" {'default/best':>12} {'best':>9} {'spread':>6}  load before/after")
    shuffler = random.Random(0)
    for model in args.models.split(","):
        for busy in (int(b) for b in args.busy.split(",")):
            before = load()
            spinners = [spin(cores[-1 - i] if args.pin else None) for i in range(busy)]
            try:
                time.sleep(0.5)
                times = {s: [] for s in settings}
                for _ in range(args.rounds):
                    for setting in shuffler.sample(settings, len(settings)):
                        times[setting].append(run_child(setting, model, STEPS[model], args.batch)["seconds"])
            finally:
                for process in spinners:
                    process.kill()
                    process.wait()
            median = {s: statistics.median(v) for s, v in times.items()}
            spread = max((max(v) - min(v)) / statistics.median(v) for v in times.values())
            best = min(settings, key=median.get)
            ratio = f"{median['default'] / median[best]:>12.2f}" if "default" in median else f"{'-':>12}"
            print(f"{model:<6} {busy:>4} " + " ".join(f"{1e3 * median[s]:>7.2f}ms" for s in settings)
                  + f" {ratio} {best:>9} {100 * spread:>5.0f}%  {before}/{load()}", flush=True)


if __name__ == "__main__":
    main()
