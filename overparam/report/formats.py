"""Render a `Table` as markdown, CSV, LaTeX or JSON.

Markdown and LaTeX are wide (one column per column-key value, `mean ± std (n)` in each cell);
CSV and JSON are tidy (one line per cell with mean, std, n and the failed/unfinished counts), so a
spreadsheet or pandas reads them without parsing `±`.
"""

from __future__ import annotations

import csv
import io
import json

from overparam.report.aggregate import Table, display

FORMATS = ("md", "csv", "latex", "json")


def _column_titles(table: Table) -> list[str]:
    if not table.col_keys:
        return [table.metric]
    return [table.col_label(col) for col in table.cols]


def to_markdown(table: Table, agg: str = "mean_std", digits: int = 4) -> str:
    """A GitHub-flavoured pipe table, then a list of failed/unfinished runs."""
    head = [" / ".join(table.row_keys) or "run"] + _column_titles(table)
    lines = ["| " + " | ".join(_md_escape(h) for h in head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for row in table.rows:
        cells = [", ".join(display(v) for v in row)]
        cells += [table.cell(row, col).text(agg, digits) for col in table.cols]
        lines.append("| " + " | ".join(_md_escape(c) for c in cells) + " |")
    text = "\n".join(lines) + "\n"
    return text + _problems_text(table)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _problems_text(table: Table) -> str:
    if not table.problems:
        return ""
    lines = [f"\n{len(table.problems)} run(s) without results:"]
    for path, status, reason in table.problems:
        lines.append(f"- {status}: {path}" + (f" ({reason})" if reason else ""))
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Tidy CSV: the row and column keys, then metric, mean, std, n, failed, unfinished, missing."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*table.row_keys, *table.col_keys, "metric", "mean", "std", "n", "failed", "unfinished", "missing"])
    for row in table.rows:
        for col in table.cols:
            if (row, col) not in table.cells:
                continue
            cell = table.cell(row, col)
            writer.writerow([*(display(v) for v in row), *(display(v) for v in col), table.metric,
                             _num(cell.mean), _num(cell.std), cell.n, cell.failed, cell.unfinished, cell.missing])
    return buffer.getvalue()


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(table: Table, agg: str = "mean_std", digits: int = 4) -> str:
    """A booktabs tabular; cells are `$m \\pm s$`, failed runs as a footnote-style mark."""
    titles = [latex_escape(" / ".join(table.row_keys) or "run")] + [latex_escape(t) for t in _column_titles(table)]
    lines = [r"\begin{tabular}{l" + "r" * (len(titles) - 1) + "}", r"\toprule", " & ".join(titles) + r" \\",
             r"\midrule"]
    for row in table.rows:
        cells = [latex_escape(", ".join(display(v) for v in row))]
        for col in table.cols:
            cells.append(_latex_cell(table.cell(row, col), agg, digits))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _latex_cell(cell, agg: str, digits: int) -> str:
    if not cell.values:
        return latex_escape(cell.marks().strip("[]") or "--")
    if agg == "max":
        body = f"${cell.max:.{digits}f}$"
    elif agg == "mean" or cell.std is None:
        body = f"${cell.mean:.{digits}f}$"
    else:
        body = f"${cell.mean:.{digits}f} \\pm {cell.std:.{digits}f}$"
    marks = cell.marks()
    return body + (f" {latex_escape(marks)}" if marks else "")


def to_json(table: Table) -> str:
    """Tidy JSON: keys, cells with all statistics, and the runs without results."""
    cells = []
    for row in table.rows:
        for col in table.cols:
            if (row, col) not in table.cells:
                continue
            entry = {k: v for k, v in zip(table.row_keys, row)}
            entry.update({k: v for k, v in zip(table.col_keys, col)})
            entry.update(table.cell(row, col).as_dict())
            cells.append(entry)
    payload = {"metric": table.metric, "rows": table.row_keys, "cols": table.col_keys, "cells": cells,
               "pooled": table.pooled,
               "problems": [{"path": p, "status": s, "reason": r} for p, s, r in table.problems]}
    return json.dumps(payload, indent=2, default=str) + "\n"


def render(table: Table, fmt: str = "md", agg: str = "mean_std", digits: int = 4) -> str:
    """The table in one of FORMATS."""
    if fmt == "md":
        return to_markdown(table, agg, digits)
    if fmt == "csv":
        return to_csv(table)
    if fmt == "latex":
        return to_latex(table, agg, digits)
    if fmt == "json":
        return to_json(table)
    raise ValueError(f"unknown format {fmt!r}")
