"""`auto` on a machine it has not seen: measure the dense/sparse crossover briefly, keep it per machine.

At the first `auto` decision on a CPU, a few small layer shapes (linear and convolution, the ones
small runs train) are timed with `torch` and `sparse` at a handful of sparsities, training step and
forward, interleaved: one to two seconds on a quiet machine, and shapes not reached within
`BUDGET_SECONDS` on a busy one are skipped. The crossover points go to
`overparam.hardware.calibration_path()` (one file per processor, core count, thread count and
torch version), and every later run on that machine reads them instead of measuring again. Larger
shapes keep the shipped measurements (`crossover.json`). `OVERPARAM_CALIBRATE=0` turns measuring
off (the shipped file alone decides); the tests do that, and point the cache at a temporary folder.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import sys
import time
from datetime import date

import torch
import torch.nn.functional as F

from overparam import hardware

# name: (op, batch, in_features, out_features, conv spec (channels, size, kernel) or None)
SHAPES = {
    "lenet": ("linear", 128, 784, 300, None),
    "lenet_hidden": ("linear", 128, 300, 100, None),
    "conv64_16x16": ("conv", 16, 64 * 9, 64, (64, 16, 3)),
    "conv16_32x32": ("conv", 8, 16 * 9, 16, (16, 32, 3)),
}
SPARSITIES = (0.5, 0.8, 0.9, 0.95, 0.98)
ROUNDS = 3
# On a busy machine a measurement can take far longer than planned: shapes not reached within this
# many seconds are left to the shipped measurements rather than holding up the run.
BUDGET_SECONDS = 3.0


def enabled() -> bool:
    """False when OVERPARAM_CALIBRATE=0 (use the shipped measurements only)."""
    return os.environ.get("OVERPARAM_CALIBRATE", "1") != "0"


def crossover(points: list[tuple[float, float]]) -> float | None:
    """Sparsity from which sparse/torch stays below 1 (log-linear between measured points); None if never."""
    first_win = None
    for index in range(len(points) - 1, -1, -1):
        if points[index][1] < 1.0:
            first_win = index
        else:
            break
    if first_win is None:
        return None
    if first_win == 0:
        return points[0][0]
    (s0, r0), (s1, r1) = points[first_win - 1], points[first_win]
    fraction = math.log(r0) / (math.log(r0) - math.log(r1))
    return round(s0 + (s1 - s0) * fraction, 4)


def _mask(shape, sparsity: float, generator: torch.Generator) -> torch.Tensor:
    numel = math.prod(shape)
    flat = torch.zeros(numel)
    flat[torch.randperm(numel, generator=generator)[:numel - int(round(sparsity * numel))]] = 1
    return flat.view(shape)


def _time(contenders: dict, rounds: int) -> dict[str, float]:
    for fn in contenders.values():
        fn()
    best = {name: math.inf for name in contenders}
    for round_index in range(rounds):
        names = list(contenders) if round_index % 2 == 0 else list(reversed(contenders))
        for name in names:
            tick = time.perf_counter()
            contenders[name]()
            best[name] = min(best[name], time.perf_counter() - tick)
    return best


def _contenders(name: str, sparsity: float, mode: str, generator: torch.Generator) -> dict:
    from overparam.kernels import masked_matmul
    from overparam.kernels.conv import masked_conv

    op, batch, in_features, out_features, conv = SHAPES[name]
    if op == "linear":
        x = torch.randn(batch, in_features, generator=generator)
        weight = torch.randn(out_features, in_features, generator=generator) / math.sqrt(in_features)
        mask = _mask(weight.shape, sparsity, generator)
        run = {b: (lambda b=b, x=x, w=weight: masked_matmul(x, w, mask, None, backend=b)) for b in ("torch", "sparse")}
    else:
        channels, size, kernel = conv
        x = torch.randn(batch, channels, size, size, generator=generator)
        weight = torch.randn(out_features, channels, kernel, kernel, generator=generator) / math.sqrt(in_features)
        mask = _mask(weight.shape, sparsity, generator)
        run = {b: (lambda b=b, x=x, w=weight: masked_conv(x, w, mask, None, 1, kernel // 2, 1, 1, backend=b))
               for b in ("torch", "sparse")}
    if mode == "forward":
        def forward(fn):
            def call():
                with torch.no_grad():
                    fn()
            return call
        return {b: forward(fn) for b, fn in run.items()}
    x.requires_grad_(True)
    weight.requires_grad_(True)

    def train(fn):
        def call():
            x.grad = weight.grad = None
            fn().sum().backward()
        return call
    return {b: train(fn) for b, fn in run.items()}


def measure() -> dict:
    """Crossover entries for SHAPES on this CPU at the current thread count (the format of crossover.json)."""
    from overparam.kernels import native

    implementation = "native" if native.library() is not None else "torch_sparse"
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    entries = []
    # First use may come inside evaluation (no_grad) or autocast: measure plain float32 training steps.
    with torch.enable_grad(), torch.autocast("cpu", enabled=False):
        for name, (op, batch, in_features, out_features, conv) in SHAPES.items():
            if entries and time.perf_counter() - started > BUDGET_SECONDS:
                break
            rows = batch * (conv[1] ** 2 if conv else 1)
            for mode in ("train", "forward"):
                points = []
                for sparsity in SPARSITIES:
                    seconds = _time(_contenders(name, sparsity, mode, generator), ROUNDS)
                    points.append((sparsity, seconds["sparse"] / seconds["torch"]))
                entries.append({"op": op, "device": "cpu", "dtype": "float32", "implementation": implementation,
                                "mode": mode, "shape": name, "batch": rows, "in_features": in_features,
                                "out_features": out_features, "sparse_from": crossover(points),
                                "sparse_over_torch": {str(s): round(r, 4) for s, r in points}})
    return {"version": hardware.CALIBRATION_VERSION,
            "about": "crossover points measured on this machine at first use of hardware.kernel=auto",
            "measured_on": {"date": date.today().isoformat(), "cpu": hardware.cpu_model(),
                            "machine": platform.machine(), "cores": hardware.allowed_cores(),
                            "threads": torch.get_num_threads(), "torch": torch.__version__,
                            "seconds": round(time.perf_counter() - started, 2)},
            "entries": entries}


def _write(path, data: dict) -> None:
    """Replace `path` by one rename (a link or special file there is replaced, never written through)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


@functools.lru_cache(maxsize=None)
def _machine_crossover(threads: int) -> dict | None:
    path = hardware.calibration_path("cpu", threads)
    data, problem = hardware.read_calibration(path)
    if data is not None:
        return {**data, "path": str(path)}
    if problem:  # an older format, a damaged or hand-edited file: measured again, the file replaced
        print(f"warning: {path}: {problem}; measuring this machine again and replacing it", file=sys.stderr)
    data = measure()
    try:
        _write(path, data)
    except OSError:
        pass  # a read-only home still gets this process's measurements
    return {**data, "path": str(path)}


def machine_crossover() -> dict | None:
    """This machine's measurements at the current thread count (measured now if never before); None when off."""
    if not enabled():
        return None
    return _machine_crossover(torch.get_num_threads())
