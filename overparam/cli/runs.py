"""`runner ls runs [DIR]`: one line per run directory (status, age, method, headline metric, overrides).

Reads only run.json, summary.json and .hydra/ through report.index (no torch import), so it answers
quickly on thousands of runs. Failed runs show their reason; a run whose run.json says `running`
but whose process (on this machine) is gone is shown as `stopped`: it was killed and can resume.
A run whose files cannot be read (run.json cut short or not UTF-8, summary.json garbage) is shown as
`UNREADABLE` with the reason, and the listing goes on.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from overparam.errors import UserError

# The first of these a run's summary holds is its headline number.
# a language model reports bits per byte first (its summary also has a token accuracy, a poorer headline)
HEADLINE_METRICS = ("test_bits_per_byte", "test_accuracy", "val_accuracy", "test_loss", "reconstruction_loss")
# Overrides that say where or how a run is observed, not what it computes.
QUIET_OVERRIDE_PREFIXES = ("hydra.", "hydra/", "paths.", "logger", "+logger", "train.checkpoint_seconds")

EPILOG = """examples:
  runner ls runs                    every run under ./outputs
  runner ls runs outputs/multirun   one folder (a sweep, a day, anything)
  runner ls runs --status failed    only the failed ones (done, failed, running, stopped, unreadable)
Columns: status, age (since run.json last changed), run directory, method, headline metric, overrides.
A damaged run (run.json cut short or not UTF-8, summary.json garbage) is listed as UNREADABLE with the
reason; the exit code stays 0: a listing has nothing to get wrong by going on."""


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of `runner ls runs`."""
    parser = argparse.ArgumentParser(prog="runner ls runs", description="List run directories, one line each.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="*", default=["outputs"], help="folders to look in (default: outputs)")
    parser.add_argument("--status", choices=("done", "failed", "running", "stopped", "unreadable"),
                        help="only runs in this state")
    parser.add_argument("--metric", help="headline metric (default: the first of " + ", ".join(HEADLINE_METRICS) + ")")
    return parser


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{int(seconds)}s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return "?"


def _process_gone(info: dict) -> bool:
    """True when run.json names a process on this machine that no longer exists."""
    pid = info.get("pid")
    host = (info.get("environment") or {}).get("hostname")
    if not isinstance(pid, int) or host != platform.node():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _run_json(path: Path) -> dict:
    from overparam.store.readers import read_json_file

    try:
        info = read_json_file(path / "run.json")
    except UserError:
        return {}
    return info if isinstance(info, dict) else {}


def _headline(summary: dict | None, metric: str | None) -> str:
    summary = summary or {}
    names = (metric,) if metric else HEADLINE_METRICS
    for name in names:
        value = summary.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return f"{name}={value:.4f}" if isinstance(value, float) else f"{name}={value}"
    return ""


def _overrides(overrides: list[str]) -> str:
    shown = [o for o in overrides if not o.lstrip("+~").startswith(QUIET_OVERRIDE_PREFIXES)]
    return " ".join(shown)


def list_runs(dirs: list[str], status: str | None = None, metric: str | None = None,
              now: float | None = None) -> list[dict]:
    """One dict per run: status, age, path, method, headline, overrides, reason."""
    from overparam.report.index import find_runs, read_run_or_unreadable

    now = time.time() if now is None else now
    rows = []
    for given in dirs:
        root = Path(given)
        if not root.exists():
            raise UserError(f"{root} does not exist (runs land under outputs/ unless paths.output_dir says otherwise)")
        for run_dir in find_runs([root]):
            run = read_run_or_unreadable(run_dir)
            info = _run_json(run_dir)
            state = run.status
            if state == "running" and _process_gone(info):
                state = "stopped"
            if status and state != status:
                continue
            try:
                changed = (run_dir / "run.json").stat().st_mtime
            except OSError:
                changed = (run_dir / ".hydra" / "config.yaml").stat().st_mtime
            try:
                shown_path = str(run_dir.relative_to(root))
            except ValueError:
                shown_path = str(run_dir)
            rows.append({
                "status": state, "age": _age(max(0.0, now - changed)),
                "path": str(root / shown_path) if shown_path != "." else str(root),
                "method": str(run.flat_config.get("method") or info.get("method") or "?"),
                "headline": _headline(run.summary, metric) if run.finished else "",
                "overrides": _overrides(run.overrides), "reason": run.reason or "",
            })
    return rows


def common_overrides(rows: list[dict]) -> list[str]:
    """Overrides every listed run shares (shown once instead of on every line); none for a single run.
    An unreadable run has no overrides to share and does not count."""
    rows = [row for row in rows if row["status"] != "unreadable"]
    if len(rows) < 2:
        return []
    sets = [set(row["overrides"].split()) for row in rows]
    shared = set.intersection(*sets)
    return [o for o in rows[0]["overrides"].split() if o in shared]


def drop_common(rows: list[dict], common: list[str]) -> list[dict]:
    """Each row with only the overrides that differ between the listed runs."""
    shared = set(common)
    return [{**row, "overrides": " ".join(o for o in row["overrides"].split() if o not in shared)} for row in rows]


def render(rows: list[dict]) -> str:
    """Aligned lines; a failed run's reason follows on its own line."""
    if not rows:
        return ""
    widths = {key: max(len(row[key]) for row in rows) for key in ("status", "age", "path", "method", "headline")}
    lines = []
    for row in rows:
        status = row["status"].upper() if row["status"] in ("failed", "stopped", "unreadable") else row["status"]
        line = (f"{status:<{widths['status']}}  {row['age']:>{widths['age']}}  {row['path']:<{widths['path']}}  "
                f"{row['method']:<{widths['method']}}  {row['headline']:<{widths['headline']}}  {row['overrides']}")
        lines.append(line.rstrip())
        if row["status"] in ("failed", "unreadable") and row["reason"]:
            lines.append(f"{'':<{widths['status']}}  {'':>{widths['age']}}  reason: {row['reason'][:200]}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    """Print one line per run and a count per status."""
    import sys

    args = build_parser().parse_args(argv)
    rows = list_runs(args.dirs, args.status, args.metric)
    common = common_overrides(rows)
    sys.stdout.write(render(drop_common(rows, common)))
    sys.stdout.flush()  # the lines before the count on stderr, also when both go to one terminal
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    detail = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    print(f"{len(rows)} run(s)" + (f": {detail}" if detail else ""), file=sys.stderr)
    if common:
        print(f"overrides all of them share: {' '.join(common)}", file=sys.stderr)
    return 0
