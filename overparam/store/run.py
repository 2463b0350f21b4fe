"""The `Run` handle: one run directory, its status, metrics, checkpoints and summary.

Recipes receive a `Run` and never touch the filesystem directly. Layout (DESIGN.md):

    run.json        status, config hash, the resolved config (for the run index), environment,
                    timings, checkpoint hashes
    metrics.jsonl   one JSON object per evaluation: step, level, split, metric, value
    checkpoints/    safetensors files
    summary.json    final metrics the table reads
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Iterable

from overparam.errors import UserError
from overparam.store.atomic import atomic_write_json, atomic_write_text, read_json
from overparam.store.checkpoint import file_sha256, load_state, save_state
from overparam.store.identity import config_hash  # the one identity rule (re-exported for callers)
from overparam.store.metrics import end_torn_line, read_metric_rows

__all__ = ["Run", "config_hash", "environment_info"]

def new_run_id() -> str:
    """A fresh run id (48 random bits as hex): names one training lineage."""
    import uuid

    return uuid.uuid4().hex[:12]


def lineage_id(lineage: dict | None) -> str | None:
    """`<run_id>/<phase>`: the one string two records share exactly when their weights are one training."""
    if not isinstance(lineage, dict) or not lineage.get("run_id"):
        return None
    return f"{lineage['run_id']}/{lineage.get('phase', '')}"


def config_for_index(config: dict) -> dict:
    """run.json's `config` entry: the resolved config, so the run index reads JSON, not `.hydra/config.yaml`.

    Written each time the run opens (once per run, again on a resume, like Hydra's own config.yaml);
    `config_hash` beside it is the run's identity.
    """
    return {"config": config}


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def environment_info(device: str = "cpu", precision: str = "fp32") -> dict:
    """Where a run ran: results drift across environments, so every run records this."""
    from importlib import metadata

    versions = {}
    for dist in ("overparam", "torch", "torchvision", "triton", "hydra-core", "numpy", "mnist1d", "datasets"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    device_name = platform.processor() or platform.machine()
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            device_name = torch.cuda.get_device_name(torch.device(device))
    return {
        "versions": versions,
        "python": sys.version.split()[0],
        "os": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "device": device,
        "device_name": device_name,
        "precision": precision,
        "hostname": platform.node(),
        # PyTorch's intra-op threads (a parallel launcher gives each job its share of the cores).
        "threads": _torch_threads(),
    }


class Run:
    """A run directory and everything a recipe may write into it."""

    def __init__(self, root: str | os.PathLike, config: dict, *, device: str = "cpu", precision: str = "fp32",
                 loggers: Iterable[Any] = ()):
        self.root = Path(root)
        self.config = config
        self.device = device
        self.precision = precision
        self.hash = config_hash(config)
        self.loggers = list(loggers)
        self.resumed = False
        self._metrics_handle = None
        self._t0 = time.time()
        self.info: dict = {}
        # Resume point name -> the slot holding its newest good checkpoint (see save_resume_point).
        self._newest_resume_slot: dict[str, str] = {}

    # --- lifecycle -------------------------------------------------------------------
    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def start(self) -> "Run":
        """Open the run: a fresh directory, or resume one started with the same config."""
        self.root.mkdir(parents=True, exist_ok=True)
        previous = read_json(self.run_json)
        if previous is not None:
            if previous.get("config_hash") != self.hash:
                raise UserError(
                    f"{self.root} holds a run with another config (hash {previous.get('config_hash')}, "
                    f"this one {self.hash}); choose another hydra.run.dir"
                )
            self.resumed = True
            self.info = previous
            self._remove_debris()
            self.info["resumes"] = int(previous.get("resumes", 0)) + (previous.get("status") != "done")
            self.info.setdefault("run_id", new_run_id())
        else:
            self.info = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "checkpoints": {}, "resumes": 0,
                         "run_id": new_run_id()}
        self.info.update(
            {
                "status": "running",
                "config_hash": self.hash,
                "method": (self.config.get("method") or {}).get("name"),
                "environment": environment_info(self.device, self.precision),
                "pid": os.getpid(),
            }
        )
        self.info.update(config_for_index(self.config))
        self.info.pop("reason", None)
        self._write_info()
        return self

    def finish(self, status: str = "done", reason: str | None = None, summary: dict | None = None) -> None:
        """Close the run with its final status (`done` or `failed`) and summary."""
        if summary is not None:
            self.write_summary(summary)
        self.info["status"] = status
        if reason:
            self.info["reason"] = reason
        timings = self.info.setdefault("timings", {})
        timings["last_session_seconds"] = round(time.time() - self._t0, 3)
        timings["total_seconds"] = round(timings.get("total_seconds", 0.0) + time.time() - self._t0, 3)
        self.info["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        try:
            self._write_info()
        finally:
            self.close_handles()

    def close_handles(self) -> None:
        """Close metrics.jsonl and the loggers; rows a full disk did not take are dropped (a resume logs them)."""
        handles = ([self._metrics_handle] if self._metrics_handle is not None else []) + self.loggers
        self._metrics_handle, self.loggers = None, []
        for handle in handles:
            try:
                handle.close()
            except OSError:
                pass

    @property
    def run_id(self) -> str:
        """This run's lineage name: unique per directory, kept across resumes (run.json's `run_id`)."""
        return str(self.info.get("run_id") or "")

    def trained_here(self, phase: str) -> dict:
        """The lineage of weights a phase of this run trains: which run, where, which phase."""
        return {"run_id": self.run_id, "run_dir": str(self.root.resolve()), "phase": phase}

    def record_lineage(self, lineage: dict[str, dict]) -> None:
        """Record in run.json where every phase's weights came from (`origin`: trained | reused)."""
        self.info["lineage"] = lineage
        self._write_info()

    @property
    def done(self) -> bool:
        return self.info.get("status") == "done" and (self.root / "summary.json").exists()

    def _write_info(self) -> None:
        atomic_write_json(self.run_json, self.info)

    def record(self, key: str, value: Any) -> None:
        """Store a small JSON value in run.json (timings, early-stop step, cache keys...)."""
        self.info[key] = value
        self._write_info()

    # --- phases and the level cache -------------------------------------------------------
    def phase(self, name: str, level: int | None = None):
        """The handle of phase `name` (`level_3`): its folder, resume point, metric truncation and commit."""
        from overparam.store.levels import Phase

        return Phase(self, name, level)

    def level(self, level: int):
        """The phase of IMP level `level` (`<run>/level_<L>/`)."""
        return self.phase(f"level_{level}", level)

    def sub_run(self, name: str, config: dict | None = None) -> "Run":
        """A run nested in this one (`<run>/<name>/`, its own metrics and resume points), opened: a fresh one,
        or the one an earlier attempt left. IMP's controls keep their ticket lineage in one (this run's
        config); a search trial runs each tuning seed in one with its own `config`, saved as the sub-run's
        `.hydra/config.yaml` so it can be listed and reproduced like any run."""
        sub = Run(self.root / name, self.config if config is None else config, device=self.device,
                  precision=self.precision).start()
        if config is not None:
            import yaml

            # A plain resolved container, written as plain YAML (no Hydra below the CLI).
            atomic_write_text(sub.root / ".hydra" / "config.yaml",
                              yaml.safe_dump(config, default_flow_style=False, allow_unicode=True, sort_keys=False))
        return sub

    def level_cache(self, kind: str, drop: tuple[str, ...] = ()):
        """The shared level cache of this run's lineage (`<paths.cache_dir>/<kind>/<identity key>`)."""
        from overparam.store.identity import level_cache_key
        from overparam.store.levels import level_cache

        return level_cache(self, kind, level_cache_key(self.config, drop=drop))

    # --- metrics ---------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    def log(self, step: int, split: str, metrics: dict, level: int | None = None) -> None:
        """Append one row per metric to metrics.jsonl and forward them to the loggers."""
        if self._metrics_handle is None:
            end_torn_line(self.metrics_path)
            self._metrics_handle = open(self.metrics_path, "a", encoding="utf-8")
        lines = []
        for name, value in metrics.items():
            value = float(value)
            row = {"step": int(step), "level": level, "split": split, "metric": name,
                   "value": value if math.isfinite(value) else str(value)}
            lines.append(json.dumps(row))
        try:
            self._metrics_handle.write("\n".join(lines) + "\n")
            self._metrics_handle.flush()
        except OSError as exc:  # a write error names no file: say which
            raise OSError(exc.errno, exc.strerror, str(self.metrics_path)) from exc
        for logger in self.loggers:
            prefix = f"level_{level}/" if level is not None else ""
            logger.log_metrics({f"{prefix}{split}/{k}": float(v) for k, v in metrics.items()}, step)

    def read_metrics(self) -> list[dict]:
        """All rows of metrics.jsonl (a torn last line from a kill is left out: `store.metrics`)."""
        return read_metric_rows(self.metrics_path)

    def truncate_metrics(self, level: int | None, step: int) -> None:
        """Drop rows logged after (level, step): a resumed phase logs them again."""
        if self._metrics_handle is not None:
            self._metrics_handle.close()
            self._metrics_handle = None
        level_key = -1 if level is None else level
        kept = [
            row for row in self.read_metrics()
            if ((-1 if row["level"] is None else row["level"]), row["step"]) <= (level_key, step)
        ]
        atomic_write_text(self.metrics_path, "".join(json.dumps(row) + "\n" for row in kept))

    # --- checkpoints -----------------------------------------------------------------
    def save_checkpoint(self, name: str, state: Any, record: dict | None = None) -> Path:
        """Atomically save nested state as checkpoints/<name>.safetensors; hash kept in run.json.

        `record`: small JSON values stored beside the hash in run.json (e.g. a resume point's sequence).
        """
        path = self.checkpoints / f"{name}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = save_state(path, state)
        self.info.setdefault("checkpoints", {})[name] = {"sha256": digest, "bytes": path.stat().st_size,
                                                         **(record or {})}
        self._write_info()
        return path

    def checkpoint_path(self, name: str) -> Path:
        return self.checkpoints / f"{name}.safetensors"

    def has_checkpoint(self, name: str) -> bool:
        return self.checkpoint_is_good(name)

    def checkpoint_is_good(self, name: str) -> bool:
        """True when the checkpoint exists and matches the size and hash recorded at save time."""
        path = self.checkpoint_path(name)
        recorded = self.info.get("checkpoints", {}).get(name)
        if not path.is_file() or recorded is None:
            return False
        if path.stat().st_size != recorded["bytes"]:
            return False
        return file_sha256(path) == recorded["sha256"]

    def load_checkpoint(self, name: str, device: str = "cpu") -> Any:
        """Load a checkpoint saved by this run; a damaged one is a UserError."""
        if not self.checkpoint_is_good(name):
            raise UserError(f"checkpoint {self.checkpoint_path(name)} is missing or corrupt")
        return load_state(self.checkpoint_path(name), device=device)

    def drop_checkpoint(self, name: str) -> None:
        """Delete a checkpoint that is no longer needed; a resume point goes with both its slots."""
        names = (name,) if name.endswith(".alt") else self.resume_slots(name)
        for each in names:
            self.info.get("checkpoints", {}).pop(each, None)
        self._write_info()
        for each in names:
            try:
                self.checkpoint_path(each).unlink()
            except FileNotFoundError:
                pass

    # --- resume points ---------------------------------------------------------------
    @staticmethod
    def resume_slots(name: str) -> tuple[str, str]:
        """The two checkpoint names a resume point alternates between."""
        return name, f"{name}.alt"

    def save_resume_point(self, name: str, state: Any) -> Path:
        """Save a resume checkpoint into whichever of its two slots does not hold the newest good one.

        A save cut short (SIGKILL between the file's rename and run.json's update, a full disk)
        then damages at most the slot being written, and the previous resume point is still there
        to fall back to. run.json numbers the saves so loading knows which slot is newer.
        """
        slots = self.resume_slots(name)
        recorded = self.info.get("checkpoints", {})
        sequence = {slot: int((recorded.get(slot) or {}).get("sequence", 0)) for slot in slots}
        if name in self._newest_resume_slot:
            newest = self._newest_resume_slot[name]
        elif any(sequence.values()):
            newest = max(slots, key=lambda slot: sequence[slot])
        else:  # nothing saved yet: the first save goes to the first slot
            newest = slots[1]
        target = slots[1] if newest == slots[0] else slots[0]
        path = self.save_checkpoint(target, state, record={"sequence": max(sequence.values()) + 1})
        self._newest_resume_slot[name] = target
        return path

    def load_resume_point(self, name: str, device: str = "cpu") -> Any:
        """State of the newest intact resume checkpoint of `name`, or None when there is none.

        A slot whose file does not match the size and sha256 recorded in run.json (truncated,
        corrupt, or written by a save that was killed before run.json recorded it) is reported
        in one line on stderr and in run.json's `warnings`, and the other slot is used.
        """
        slots = self.resume_slots(name)
        recorded = self.info.get("checkpoints", {})
        self._remove_torn_temporaries(slots)
        good, damaged = [], []
        for slot in slots:
            path = self.checkpoint_path(slot)
            if not path.exists() and slot not in recorded:
                continue
            problem = self._checkpoint_problem(slot)
            if problem is None:
                good.append((int(recorded[slot].get("sequence", 0)), slot))
            else:
                damaged.append((slot, problem))
        good.sort(reverse=True)
        state, chosen = None, None
        for _, slot in good:
            try:
                state, chosen = self.load_checkpoint(slot, device=device), slot
                break
            except UserError as exc:  # hash matched but the file does not decode: treat as damaged
                damaged.append((slot, str(exc)))
        for slot, problem in damaged:
            fallback = (f"resuming from {self.checkpoint_path(chosen)}" if chosen
                        else "no intact resume checkpoint left: this phase starts again from its beginning")
            line = f"checkpoint {self.checkpoint_path(slot)} {problem}; {fallback}"
            print(f"runner: {line}", file=sys.stderr)
            self.info.setdefault("warnings", []).append(line)
        if damaged:
            self._write_info()
        if chosen is not None:
            self._newest_resume_slot[name] = chosen
        return state

    def _checkpoint_problem(self, name: str) -> str | None:
        """Why a checkpoint cannot be trusted (one phrase), or None when it matches run.json."""
        path = self.checkpoint_path(name)
        recorded = self.info.get("checkpoints", {}).get(name)
        if recorded is None:
            return "is not recorded in run.json (its save was interrupted)"
        if not path.is_file():
            return "is missing"
        size = path.stat().st_size
        if size != recorded["bytes"]:
            return f"has {size} bytes where run.json records {recorded['bytes']} (truncated or overwritten)"
        if file_sha256(path) != recorded["sha256"]:
            return "is corrupt (its sha256 differs from run.json's)"
        return None

    def _remove_debris(self) -> None:
        """Delete what killed writes left in this run's directory: `.<name>.<random>.tmp` of atomic writes and
        `.<name>.incoming` of level copies, in the run, its checkpoints, its level/phase folders and sub-runs.

        Only this run writes into its directory, so any left when it starts again are debris. Hidden
        folders (`.hydra`, a cache a reproduction keeps beside its run) are not entered.
        """
        stack = [self.root]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    if not entry.name.startswith("."):
                        stack.append(Path(entry.path))
                elif entry.name.startswith(".") and entry.name.endswith((".tmp", ".incoming")):
                    Path(entry.path).unlink(missing_ok=True)

    def has_resume_point(self, name: str) -> bool:
        """True when either slot of resume point `name` holds an intact checkpoint (see save_resume_point)."""
        return any(self._checkpoint_problem(slot) is None for slot in self.resume_slots(name))

    def _remove_torn_temporaries(self, names: Iterable[str]) -> None:
        # A save killed before its rename leaves `.<name>.safetensors.<random>.tmp` behind; only
        # this run writes into its directory, so any such file is debris from an earlier session.
        for name in names:
            for leftover in self.checkpoints.glob(f".{name}.safetensors.*.tmp"):
                try:
                    leftover.unlink()
                except FileNotFoundError:
                    pass

    # --- summary ---------------------------------------------------------------------
    def write_summary(self, summary: dict) -> None:
        """Final metrics that `runner table` reads."""
        atomic_write_json(self.root / "summary.json", summary)

    def read_summary(self) -> dict | None:
        return read_json(self.root / "summary.json")
