"""Levels and phases of a run directory, and the level cache that shares them between the jobs of a sweep.

A *phase* is one trained piece of a run (`level_3` of IMP, `dense`/`pruned` of N:M): `Run.phase(name)`
gives its handle, which owns the folder `<run>/<name>/`, the phase's two resume slots, the truncation
of metric rows of an interrupted attempt, the atomic commit of the trained weights (summary.json
last, with the phase's lineage) and the adoption of a phase trained elsewhere (a cache entry). The
level cache (`<paths.cache_dir>/<kind>/<identity key>/level_<L>/`) and its per-level lock live here
too, so recipes never build a path. Layout of a stored level:

    level_<L>/model.safetensors   weights with their masks
              mask.safetensors    masks alone
              metrics.jsonl       the level's metric rows
              rewind.safetensors  (level 0 with late rewinding) the rewind point's weights
              summary.json        written last: the level is complete once it exists; holds `lineage`
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from overparam.store.metrics import read_metric_rows  # noqa: F401 - the one metrics.jsonl reader, used below

if TYPE_CHECKING:
    import torch
    from torch import nn

# --- levels on disk -------------------------------------------------------------------------------

LEVEL_FILES = ("model.safetensors", "mask.safetensors", "metrics.jsonl", "rewind.safetensors")


def level_dir(root: Path, level: int) -> Path:
    return Path(root) / f"level_{level}"


def level_complete(path: Path) -> bool:
    """A level directory is complete once its summary.json exists (written last)."""
    return (Path(path) / "summary.json").is_file()


def read_level_summary(path: Path) -> dict:
    from overparam.store.atomic import read_json

    return read_json(Path(path) / "summary.json") or {}


def write_level(path: Path, model: nn.Module, summary: dict, metric_rows: list[dict]) -> None:
    """Store one level: weights with masks, masks alone, its metric rows, then summary.json (the marker)."""
    from overparam.models.masked import masks_of
    from overparam.store.atomic import atomic_write_json, atomic_write_text
    from overparam.store.checkpoint import save_state

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_state(path / "model.safetensors", {k: v.detach().cpu() for k, v in model.state_dict().items()})
    save_state(path / "mask.safetensors", masks_of(model))
    atomic_write_text(path / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in metric_rows))
    atomic_write_json(path / "summary.json", summary)


def load_level_state(path: Path) -> dict[str, torch.Tensor]:
    """The state_dict (weights and `*.weight_mask`) a level stored."""
    from overparam.store.checkpoint import load_state

    return load_state(Path(path) / "model.safetensors")


def load_level_masks(path: Path) -> dict[str, torch.Tensor]:
    from overparam.store.checkpoint import load_state

    return load_state(Path(path) / "mask.safetensors")


def _link_or_copy(source: Path, target: Path) -> None:
    # Level files are written once and never modified, so a hard link is as safe as a copy.
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def copy_level(source: Path, target: Path, *, reused_from: str | None = None) -> None:
    """Link (or copy) a complete level directory's files into `target`; summary.json last.

    `reused_from` (the cache entry or run the level is taken from) is added to the copy's
    `lineage`, whose `run_id`/`run_dir`/`phase` keep naming the run that trained the weights.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    for name in LEVEL_FILES:
        if (source / name).is_file():
            staging = target / f".{name}.incoming"
            if staging.exists():
                staging.unlink()
            _link_or_copy(source / name, staging)
            os.replace(staging, target / name)
    staging = target / ".summary.json.incoming"
    shutil.copy2(source / "summary.json", staging)
    if reused_from is not None:
        from overparam.store.atomic import read_json

        summary = read_json(staging) or {}
        summary["lineage"] = {**(summary.get("lineage") or {}), "reused_from": str(reused_from)}
        staging.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(staging, target / "summary.json")


def replay_metrics(run, rows: list[dict], level: int) -> None:
    """Log a stored level's metric rows into `run` (so a level taken from the cache has its curves)."""
    grouped: dict[tuple[int, str], dict] = {}
    for row in rows:
        grouped.setdefault((int(row["step"]), row["split"]), {})[row["metric"]] = row["value"]
    for (step, split), metrics in grouped.items():
        run.log(step, split, {k: float(v) for k, v in metrics.items()}, level=level)


# --- the level cache (and its per-level lock) ------------------------------------------------------------------------------

class LevelCache:
    """Levels shared by the jobs of a sweep: `<root>/level_<L>/`, produced under a per-level file lock.

    A job that needs level L takes the lock of L; if the level is there it links it, otherwise it
    trains it and publishes it before releasing the lock, so concurrent jobs wait and reuse instead
    of training the same level twice. Publication is a directory rename: a reader sees a complete
    level or none. `root=None` disables sharing (every call says "absent" and locks nothing).
    """

    def __init__(self, root: str | os.PathLike | None):
        self.root = Path(root) if root is not None else None

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def path(self, level: int) -> Path:
        assert self.root is not None
        return level_dir(self.root, level)

    def has(self, level: int) -> bool:
        return self.root is not None and level_complete(_not_a_link(self.path(level)))

    def lock(self, level: int):
        """An exclusive inter-process lock for producing `level` (a no-op when disabled)."""
        if self.root is None:
            return contextlib.nullcontext()
        from filelock import FileLock

        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / f"level_{level}.lock"))

    def obtain(self, level: int, phase: "Phase", produce: Callable[[], Any], *, shared: bool = True,
               announce: Callable[[Path], None] | None = None) -> str:
        """Make `phase` (a run's level `level`) complete: adopted from the cache when the level is there,
        else `produce()` trains it and it is published for the next job. Returns "cache" or "trained".

        The level's lock is held throughout, so concurrent jobs wait and reuse instead of training the
        same level twice. `shared=False` (a level the sweep does not share, or no cache) just produces.
        `announce(cache_path)` is called before a level is taken from the cache (a progress line)."""
        if not shared or self.root is None:
            produce()
            return "trained"
        with self.lock(level):
            if self.has(level):
                if announce is not None:
                    announce(self.path(level))
                phase.adopt(self.path(level))
                return "cache"
            produce()
            self.publish(level, phase.path)
            return "trained"

    def publish(self, level: int, source: Path) -> None:
        """Copy a complete level directory into the cache (atomically; a level already there is kept)."""
        if self.root is None or self.has(level):
            return
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".level_{level}.", dir=self.root))
        try:
            copy_level(Path(source), staging)
            target = self.path(level)
            if target.exists():  # a torn earlier attempt (no summary.json): replace it
                shutil.rmtree(target)
            os.rename(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)



def record_level_lineage(run, root: Path, levels: int) -> dict[str, dict]:
    """run.json's `lineage`: for each level, trained by this run or reused (from which cache entry / run)."""
    lineage = {}
    for level in range(levels):
        stored = read_level_summary(level_dir(root, level)).get("lineage") or {}
        origin = "trained" if stored.get("run_id") == run.run_id and "reused_from" not in stored else "reused"
        lineage[f"level_{level}"] = {"origin": origin if stored else "unknown", **stored}
    run.record_lineage(lineage)
    return lineage


# --- the phase handle -----------------------------------------------------------------------------

class Phase:
    """One phase of a run (`Run.phase("level_3", level=3)`): its folder, resume point, metrics and commit.

    A recipe trains a phase through `engine.fit(..., run, tag=phase.name, level=phase.level)` (fit saves
    and loads the resume point `resume_<name>` through the run) and then `commit`s it; or it `adopt`s a
    complete phase trained elsewhere (a level cache entry, a sibling run). It never builds a path.

    A phase whose result is one state of the run rather than a level folder (a dense model, one copy
    of a soup, scores) `save`s it as the run's checkpoint `<name>`; a resumed run finds it `saved`
    and `load`s it instead of computing it again.
    """

    def __init__(self, run, name: str, level: int | None = None, folder: Path | None = None):
        self.run = run
        self.name = name
        self.level = level
        self.path = Path(folder) if folder is not None else Path(run.root) / name

    @property
    def resume_name(self) -> str:
        return f"resume_{self.name}"

    @property
    def complete(self) -> bool:
        """True once the phase was committed (its summary.json exists)."""
        return level_complete(self.path)

    def summary(self) -> dict:
        return read_level_summary(self.path)

    def state(self) -> dict[str, torch.Tensor]:
        """The committed phase's weights (with masks)."""
        return load_level_state(self.path)

    @property
    def saved(self) -> bool:
        """True once the phase's result was `save`d (the run's checkpoint `<name>`, intact)."""
        return self.run.has_checkpoint(self.name)

    def load(self, device: str = "cpu") -> dict[str, torch.Tensor]:
        """The state the phase `save`d."""
        return self.run.load_checkpoint(self.name, device=device)

    def save(self, state: dict[str, torch.Tensor]) -> None:
        """Store the phase's result as the run's checkpoint `<name>` (atomic; a resume finds it `saved`)."""
        self.run.save_checkpoint(self.name, state)

    def save_rewind_point(self, state: dict[str, torch.Tensor]) -> None:
        """Store the weights of the late-rewinding point in the phase's folder (`rewind.safetensors`,
        kept with the level when it is committed, cached or adopted)."""
        from overparam.store.checkpoint import save_state

        self.path.mkdir(parents=True, exist_ok=True)
        save_state(self.path / "rewind.safetensors", {k: v.detach().cpu() for k, v in state.items()})

    def rewind_point(self) -> dict[str, torch.Tensor]:
        """The weights `save_rewind_point` stored."""
        from overparam.store.checkpoint import load_state

        return load_state(self.path / "rewind.safetensors")

    def has_resume_point(self) -> bool:
        """True when either slot of the phase's resume point is intact (fit will resume from it)."""
        return self.run.has_resume_point(self.resume_name)

    def begin(self) -> None:
        """Before training: without a resume point, drop the metric rows an interrupted attempt logged.

        With one, `fit` truncates the rows to exactly the resume point's step when it loads it.
        """
        if not self.has_resume_point():
            self.run.truncate_metrics(None if self.level is None else self.level - 1, _ALL_STEPS)

    def commit(self, model: "nn.Module", summary: dict, rows: list[dict] | None = None) -> dict:
        """Store the trained phase (weights, masks, its metric rows, summary.json last with its lineage) and
        drop its resume point. `rows`: the level's own rows instead of the run's rows of this level.
        Returns the summary as stored."""
        summary = {**summary, "lineage": self.run.trained_here(self.name)}
        if rows is None:
            rows = [row for row in self.run.read_metrics() if row.get("level") == self.level]
        write_level(self.path, model, summary, rows)
        self.run.drop_checkpoint(self.resume_name)
        return summary

    def adopt(self, source: Path) -> None:
        """Take a complete phase stored elsewhere: its curves are replayed into this run's metrics and its files
        linked in, its lineage kept (naming the run that trained it) with `reused_from` added."""
        self.run.truncate_metrics(None if self.level is None else self.level - 1, _ALL_STEPS)
        replay_metrics(self.run, read_metric_rows(source), self.level)
        copy_level(Path(source), self.path, reused_from=str(source))


# Big enough to mean "every step of a level" when truncating metric rows.
_ALL_STEPS = 1 << 60


def level_cache(run, kind: str, key: str) -> LevelCache:
    """The level cache of lineage `key` for `run` (`<paths.cache_dir>/<kind>/<key>`)."""
    from overparam.store.cache import shared_cache_dir

    root = shared_cache_dir(run.config.get("paths"))
    _not_a_link(root / kind)
    return LevelCache(_not_a_link(root / kind / key))


def _not_a_link(path: Path) -> Path:
    """`path`, refused when it is a symlink: a level read or published through it would land outside the cache
    (`runner cache clean` refuses the same links)."""
    if path.is_symlink():
        from overparam.errors import UserError

        raise UserError(f"{path} is a symlink; the level cache holds only real folders, so it is not followed")
    return path
