"""Reading a run's metrics.jsonl: the one reader, with one rule for a torn last line.

A run appends one JSON object per line (`Run.log`) and flushes after every evaluation, so a run
killed while writing leaves a last line cut short: no newline at its end and not JSON. That line
is *torn*: it is left out, and `MetricRows.torn` says so (the report mentions it). Any other line
that is not a row (a JSON object with an integer `step`) means the file is damaged or is no
metrics file: one UserError naming the file and the line. Torch-free: the report reads it too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

METRICS_FILE = "metrics.jsonl"
# A row is a few hundred bytes; a long sweep of one run writes tens of megabytes.
MAX_LINE_BYTES = 64 * 1024
MAX_METRICS_BYTES = 1024 * 1024 * 1024


class MetricRows(list):
    """The rows of a metrics.jsonl in file order; `torn` is True when a torn last line was left out."""

    torn: bool = False


def metrics_file(path: str | Path) -> Path:
    """`path` itself, or `<path>/metrics.jsonl` when `path` is a directory (a run or a level)."""
    path = Path(path)
    return path / METRICS_FILE if path.is_dir() else path


def _row(line: str):
    """The row a line holds, or None when it is not one."""
    from overparam.regular import json_int

    try:
        row = json.loads(line, parse_int=json_int)
    except (ValueError, RecursionError):  # not JSON, or an integer no run writes
        return None
    step = row.get("step") if isinstance(row, dict) else None
    return row if isinstance(step, int) and not isinstance(step, bool) else None


def read_metric_rows(path: str | Path) -> MetricRows:
    """Rows of a metrics.jsonl (or of the one in directory `path`); a missing file has none.

    Streamed with a bound on line length and on the file's size (a sparse or planted file is refused
    in one line, never read whole), from a regular file only."""
    from overparam.errors import UserError
    from overparam.regular import read_lines

    file = metrics_file(path)
    rows = MetricRows()
    for number, raw, ended in read_lines(file, max_line=MAX_LINE_BYTES, max_bytes=MAX_METRICS_BYTES):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{file}: line {number} is not UTF-8 text") from None
        if not line.strip():
            continue
        row = _row(line)
        if row is None:
            if not ended:  # the last line, with no newline after it: a write cut short
                rows.torn = True
                continue
            raise UserError(f"{file}: line {number} is not a metrics row (a JSON object with an integer step)")
        rows.append(row)
    return rows


def end_torn_line(path: str | Path) -> bool:
    """Before appending to `path`: a torn last line is cut off (a complete row without its newline gets one),
    so a new row never lands on the end of a broken one. Returns whether a torn line was cut off."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        return False
    if not data or data.endswith(b"\n"):
        return False
    start = data.rfind(b"\n") + 1
    if _row(data[start:].decode("utf-8", errors="replace")) is not None:
        with open(file, "ab") as handle:
            handle.write(b"\n")
        return False
    os.truncate(file, start)
    return True
