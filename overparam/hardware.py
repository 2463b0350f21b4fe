"""What this machine offers a run: free cores, the user's cache folder, and the kernels measured here.

Kept free of torch (and of everything heavy): `runner ls hardware` reads the measurements through
it, and the CLI calls `openmp_defaults()` before torch is imported.

Threads (`default_threads`): a run gets the cores it may use (CPU affinity, `SLURM_CPUS_PER_TASK`);
with `adaptive` (hardware.deterministic=false) less the ones other processes keep busy right now
(from /proc/stat: idle time of those cores over the last moments, plus the time this process
itself used), at least one. On a shared workstation or a cluster node this keeps a run from
starting one thread per core and then waiting on the busiest one at every step. OpenMP workers spin
briefly, then sleep (`openmp_defaults`), and tiny models train on one thread (`threads_for_model`).

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


# libgomp (the OpenMP runtime in PyTorch's Linux wheels) spins this many times, one `pause` each
# (~35 ns on this project's Xeons), before an idle worker sleeps: ~35 us, enough to bridge the gaps
# between the ops of a training step, short enough that a worker on a core other processes need
# gives it back at once. libgomp's own default (300,000 spins, ~10 ms after every parallel region)
# is what collapsed under contention; OMP_WAIT_POLICY=PASSIVE (no spin) made every op wake its
# workers, 1.5x slower on a quiet machine (bench/threads.py compares them).
SPIN_COUNT = 1000


def _openmp_runtime() -> str | None:
    """'gomp', 'iomp' or 'omp' for the OpenMP library torch ships, found without importing torch; None if unknown."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        names = [path.name for path in (Path(folder) / "lib").glob("lib*omp*")]
        for runtime in ("gomp", "iomp", "omp"):
            if any(name.startswith(f"lib{runtime}") for name in names):
                return runtime
    return None


def openmp_defaults() -> None:
    """A bounded OpenMP spin (libgomp: GOMP_SPINCOUNT=SPIN_COUNT) unless the user chose a wait policy.

    Must run before torch (or any OpenMP runtime) loads: the runtime reads it once at start-up.
    For another runtime (Intel's or LLVM's, not measured here) waits stay passive, as before.
    """
    if any(key in os.environ for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")):
        return
    if _openmp_runtime() in ("gomp", None):
        os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    else:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


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


# The flags that decide which kernels a machine runs fast (vector width, FMA, matrix units).
NOTABLE_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                 "avx512_fp16", "amx_tile", "amx_bf16", "neon", "asimd", "sve")


def cpu_flags() -> list[str]:
    """Of NOTABLE_FLAGS, those this processor reports (Linux: /proc/cpuinfo), in that order; [] where unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            present = set(line.split(":", 1)[1].split())
            return [flag for flag in NOTABLE_FLAGS if flag in present]
    return []


def _cpuinfo_field(name: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == name:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def describe_cpu() -> str:
    """One line naming this machine for a measurement: model (and family/model number, which a
    virtual machine's generic name hides), cores allowed, notable flags."""
    flags = " ".join(cpu_flags()) or "flags unknown"
    family, model = _cpuinfo_field("cpu family"), _cpuinfo_field("model")
    number = f" (family {family} model {model})" if family and model else ""
    return (f"{cpu_model()}{number}, {allowed_cores()} of {os.cpu_count()} cores allowed, {platform.machine()}: "
            f"{flags}")


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


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _fraction_or_none(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1)


def calibration_problem(data) -> str | None:
    """Why a measurement file's content is not one `measure()` writes (None when it is): every field that the
    decisions and `runner ls hardware` use, with its type and range."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if data.get("version") != CALIBRATION_VERSION:
        return f"version {data.get('version')!r} is not {CALIBRATION_VERSION}"
    entries = data.get("entries")
    if not isinstance(entries, list) or not isinstance(data.get("measured_on", {}), dict):
        return "entries must be a list and measured_on a mapping"
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("op", "linear") not in ("linear", "conv") or \
                entry.get("mode") not in ("train", "forward") or \
                not all(isinstance(entry.get(k), str) for k in ("device", "dtype", "implementation", "shape")) or \
                not all(_count(entry.get(k)) for k in ("batch", "in_features", "out_features")) or \
                not _fraction_or_none(entry.get("sparse_from")):
            return f"entries[{index}] is not a measurement (op, mode, device, dtype, implementation, shape, sizes, " \
                   f"sparse_from)"
    return None


def read_calibration(path: Path) -> tuple[dict | None, str | None]:
    """(data, None) of a valid measurement file; (None, why) when it is absent or not one (never blocks: a FIFO
    or device there is refused, not opened for reading)."""
    from overparam.errors import UserError
    from overparam.regular import read_text

    try:
        text = read_text(path, 1024 * 1024)
    except UserError as exc:  # the message names the path; the caller does too
        return None, str(exc).removeprefix(f"{path}: ")
    if text is None:
        return None, None
    try:
        data = json.loads(text)
    except ValueError:
        return None, "not JSON"
    problem = calibration_problem(data)
    return (None, problem) if problem else (data, None)


def measured_here() -> list[dict]:
    """Every measurement file under the cache folder (newest first), as read; unreadable files are skipped."""
    folder = cache_dir() / "hardware"
    found = []
    for path in sorted(folder.glob("*.json"), key=lambda p: p.lstat().st_mtime, reverse=True) if folder.is_dir() else []:
        data, _ = read_calibration(path)
        if data is not None:
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
