"""What this machine offers a run: free cores, the user's cache folder, and the kernels measured here.

Kept free of torch (and of everything heavy): `runner ls hardware` reads the measurements through
it, and the CLI calls `quiet_openmp()` before torch is imported.

Threads (`default_threads`): a run gets the cores it may use (CPU affinity, `SLURM_CPUS_PER_TASK`);
with `adaptive` (hardware.deterministic=false) less the ones other processes keep busy right now
(from /proc/stat: idle time of those cores over the last moments, plus the time this process
itself used), at least one. On a shared workstation or a cluster node this keeps a run from
starting one thread per core and then waiting on the busiest one at every step. OpenMP waits are
passive (`quiet_openmp`), and tiny models train on one thread (`threads_for_model`).

Measurements (`calibration_path`): `auto` measures the crossover between dense and sparse kernels
briefly at first use on a machine it has not seen (`overparam.kernels.calibrate`) and keeps the
result under `<cache>/hardware/<machine key>.json`, where <cache> is `$OVERPARAM_CACHE_DIR`, else
`$XDG_CACHE_HOME/overparam`, else `~/.cache/overparam`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path

# Bump when what the calibration measures changes: old files are then ignored.
CALIBRATION_VERSION = 1


def quiet_openmp() -> None:
    """Passive OpenMP waits (no spinning between parallel regions) unless the user chose a policy.

    Must run before torch (or any OpenMP runtime) loads: the runtime reads it once at start-up.
    A spinning worker holds a core at 100% between every two ops, which costs nothing on an idle
    machine and everything on a busy one.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def allowed_cores() -> int:
    """Cores this process may run on: CPU affinity (taskset, cgroups), capped by SLURM_CPUS_PER_TASK."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm.isdigit() and int(slurm) > 0:
        cores = min(cores, int(slurm))
    return max(1, cores)


def check_threads(value) -> None:
    """`hardware.threads` at most this machine's CPUs: far above it PyTorch's thread pool crashes the process."""
    most = os.cpu_count() or 1
    if isinstance(value, int) and not isinstance(value, bool) and value > most:
        from overparam.errors import UserError

        raise UserError(f"hardware.threads={value} is more than this machine's {most} CPUs; "
                        f"give 1..{most}, or null for the allowed cores")


def _affinity() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:
        return None


def _cpu_times() -> tuple[float, float, float] | None:
    """(monotonic seconds, idle+iowait seconds over our cores, this process's CPU seconds), or None."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    allowed = _affinity()
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    idle = 0
    for line in lines:
        if not line.startswith("cpu") or line.startswith("cpu "):
            continue
        fields = line.split()
        index = int(fields[0][3:])
        if allowed is not None and index not in allowed:
            continue
        idle += int(fields[4]) + int(fields[5])
    own = os.times()
    return time.monotonic(), idle / ticks, own.user + own.system


_FIRST_SAMPLE = _cpu_times()


def free_cores(min_window: float = 0.05) -> float | None:
    """Cores (of those this process may use) not used by other processes lately; None where unknown.

    Measured from the import of this module (or over `min_window` seconds when that was too
    recent): idle time of our cores, plus the CPU time this process used meanwhile (it is ours).
    """
    start = _FIRST_SAMPLE
    if start is None:
        return None
    now = _cpu_times()
    if now is None:
        return None
    if now[0] - start[0] < min_window:
        time.sleep(min_window)
        start, now = now, _cpu_times()
    elapsed = now[0] - start[0]
    if elapsed <= 0:
        return None
    free = (now[1] - start[1] + now[2] - start[2]) / elapsed
    cores = len(_affinity() or ()) or (os.cpu_count() or 1)
    return max(0.0, min(float(cores), free))


def default_threads(explicit: int | None = None, adaptive: bool = True) -> tuple[int, str]:
    """(intra-op threads, why) for a run: `explicit` when given, else the allowed cores (that are free now).

    `adaptive=False` leaves the load out: the count then depends only on the allocation, so a run
    and its resumption (or a rerun) use the same count and get bit-identical numbers
    (`hardware.deterministic`; PyTorch's reductions split work by thread count).
    """
    if explicit:
        return int(explicit), "hardware.threads"
    cores = allowed_cores()
    if not adaptive:
        return cores, f"{cores} allowed cores"
    free = free_cores()
    if free is None:
        return cores, f"{cores} allowed cores"
    # A core counts as free when other processes left more than 60% of it idle.
    threads = max(1, min(cores, int(free + 0.4)))
    return threads, f"{cores} allowed cores, {free:.1f} free"


# Below this many multiply-adds per training step (forward), one thread beats several: the work
# per op is too small to split, and waking a second thread costs more than it saves (bench/threads.py).
TINY_STEP_MACS = 30_000_000


def threads_for_model(threads: int, step_macs: float) -> int:
    """One thread for tiny models (fewer than TINY_STEP_MACS multiply-adds a step), else `threads`."""
    return 1 if step_macs < TINY_STEP_MACS else threads


def cache_dir() -> Path:
    """The user's cache folder for overparam (OVERPARAM_CACHE_DIR, XDG_CACHE_HOME/overparam, ~/.cache/overparam)."""
    explicit = os.environ.get("OVERPARAM_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "overparam" if xdg else Path.home() / ".cache" / "overparam"


def cpu_model() -> str:
    """The processor's model name (Linux: /proc/cpuinfo), else what platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _torch_version() -> str:
    try:
        from importlib.metadata import version

        return version("torch")
    except Exception:  # pragma: no cover - torch is a dependency
        return "unknown"


def machine_key(device: str = "cpu", threads: int | None = None) -> str:
    """Names one machine's measurements: processor, allowed cores, threads, torch, device."""
    parts = [str(CALIBRATION_VERSION), device, cpu_model(), platform.machine(), str(allowed_cores()), str(threads),
             _torch_version()]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]
    return f"{device}-{threads}t-{digest}"


def calibration_path(device: str = "cpu", threads: int | None = None) -> Path:
    """Where the measurements for this machine (and thread count) are kept."""
    return cache_dir() / "hardware" / f"{machine_key(device, threads)}.json"


def measured_here() -> list[dict]:
    """Every measurement file under the cache folder (newest first), as read; unreadable files are skipped."""
    folder = cache_dir() / "hardware"
    found = []
    for path in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("version") == CALIBRATION_VERSION:
            data["path"] = str(path)
            found.append(data)
    return found


def describe_measurements() -> list[str]:
    """Lines for `runner ls hardware`: what `auto` measured on this machine and decided from it."""
    found = measured_here()
    if not found:
        return [f"kernel crossover measured here: none yet (measured at the first `hardware.kernel=auto` run; "
                f"kept in {cache_dir() / 'hardware'})"]
    lines = ["kernel crossover measured here (sparsity from which `sparse` beats `torch`; - = never):"]
    for data in found:
        info = data.get("measured_on", {})
        lines.append(f"  {data['path']}")
        lines.append(f"    {info.get('cpu', '?')}, {info.get('threads', '?')} threads, torch {info.get('torch', '?')}, "
                     f"{info.get('date', '?')}, {info.get('seconds', '?')} s")
        for entry in data.get("entries", []):
            crossover = entry.get("sparse_from")
            shape = f"{entry['batch']}x{entry['in_features']}->{entry['out_features']}"
            lines.append(f"    {entry.get('op', 'linear'):>6} {entry['mode']:>7} {entry['shape']:<14} {shape:<18} "
                         f"{'-' if crossover is None else f'{crossover:.2f}'}")
    return lines
