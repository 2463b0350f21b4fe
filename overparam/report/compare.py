"""Side-by-side comparison of two runs' summaries: every metric, original vs reproduced.

Prune levels are compared per level (`level_3.test_accuracy`), other rows per index
(`rows[2].loss`). Timings (keys ending in `seconds`) differ on every run: they are shown but not
judged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

TIMING_SUFFIXES = ("seconds", "_time", "_sec")


def flatten_summary(summary: dict | None) -> dict[str, Any]:
    """Flat {name: value} of a summary, with level and row entries spelled out."""
    out: dict[str, Any] = {}
    for key, value in (summary or {}).items():
        if key == "levels" and isinstance(value, list):
            for entry in value:
                if isinstance(entry, dict):
                    label = f"level_{entry.get('level')}"
                    out.update({f"{label}.{k}": v for k, v in entry.items() if k != "level"})
        elif key == "rows" and isinstance(value, list):
            for index, entry in enumerate(value):
                if isinstance(entry, dict):
                    out.update({f"rows[{index}].{k}": v for k, v in entry.items()})
        elif isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in flatten_summary(value).items()})
        else:
            out[key] = value
    return out


def is_timing(name: str) -> bool:
    """Timings vary between identical runs; they are reported, not compared."""
    last = name.rsplit(".", 1)[-1]
    return last.endswith(TIMING_SUFFIXES)


def is_provenance(name: str) -> bool:
    """Where weights came from (`level_3.lineage`) names a run, so it differs on every reproduction."""
    return name.rsplit(".", 1)[-1] in ("lineage", "source")


@dataclass
class Difference:
    """One metric of the comparison."""

    name: str
    original: Any
    reproduced: Any
    difference: float | None
    agrees: bool
    judged: bool


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def compare_summaries(original: dict | None, reproduced: dict | None, tolerance: float = 0.0) -> list[Difference]:
    """Every metric of either summary; numbers agree within `tolerance` (absolute), others must be equal."""
    left, right = flatten_summary(original), flatten_summary(reproduced)
    names = list(left) + [k for k in right if k not in left]
    out = []
    for name in names:
        a, b = left.get(name), right.get(name)
        x, y = _number(a), _number(b)
        difference = None
        if name not in left or name not in right:
            agrees = False
        elif x is not None and y is not None:
            difference = y - x
            if math.isnan(x) and math.isnan(y):
                agrees = True
            else:
                agrees = x == y if tolerance == 0 else abs(difference) <= tolerance
        else:
            agrees = a == b
        judged = not is_timing(name) and not is_provenance(name)
        out.append(Difference(name, a, b, difference, agrees or not judged, judged))
    return out


def _show(value: Any) -> str:
    if value is None:
        return "(missing)"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def format_comparison(differences: list[Difference], title: str = "") -> str:
    """A fixed-width table: metric, original, reproduced, difference, verdict."""
    head = ("metric", "original", "reproduced", "difference", "")
    rows = []
    for d in differences:
        diff = "" if d.difference is None else (f"{d.difference:+.3g}" if d.difference else "0")
        verdict = ("(provenance, not compared)" if is_provenance(d.name) else "(timing, not compared)") if not d.judged else ("ok" if d.agrees else "DIFFERS")
        rows.append((d.name, _show(d.original), _show(d.reproduced), diff, verdict))
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
    lines = [title] if title else []
    lines.append("  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip())
    lines.append("  ".join("-" * w for w in widths[:4]))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)
