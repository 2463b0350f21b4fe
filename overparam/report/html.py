"""`runner table ... --html FILE`: one self-contained results page (no file or network reference in it).

The page holds the table, the figure as an inline base64 PNG, the claims with PASS/FAIL and their
measured numbers, and for every table row the runs behind it: directory, status, overrides and the
full config, so a reader of a paper draft it is attached to can see what each number comes from.
Everything is escaped; nothing read from a run becomes markup.
"""

from __future__ import annotations

import base64
import datetime
import html
import tempfile
from pathlib import Path
from typing import Any

from overparam.report.aggregate import Table, cell_records, display
from overparam.report.index import Record, is_identity_key

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #1f2328; background: #ffffff; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; border-bottom: 3px solid #0969da; padding-bottom: .3em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
table.results { border-collapse: collapse; margin: 1em 0; }
table.results th, table.results td { border: 1px solid #d0d7de; padding: .35em .8em; text-align: right; }
table.results th { background: #0969da; color: #ffffff; }
table.results td:first-child, table.results th:first-child { text-align: left; font-weight: 600; }
table.results tr:nth-child(even) td { background: #f0f6ff; }
.meta { color: #57606a; font-size: .9em; }
.claim { border-left: 6px solid; padding: .5em 1em; margin: .8em 0; background: #f6f8fa; }
.claim.pass { border-color: #1a7f37; } .claim.fail { border-color: #cf222e; }
.verdict { font-weight: 700; padding: .1em .5em; color: #ffffff; border-radius: 4px; margin-right: .5em; }
.pass .verdict { background: #1a7f37; } .fail .verdict { background: #cf222e; }
pre { background: #f6f8fa; padding: .6em; overflow-x: auto; font-size: .85em; }
img.figure { max-width: 100%; border: 1px solid #d0d7de; }
.status-failed, .status-unreadable { color: #cf222e; font-weight: 700; }
.status-unfinished { color: #9a6700; font-weight: 700; }
details { margin: .3em 0 .3em 1em; } summary { cursor: pointer; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def table_html(table: Table, agg: str = "mean_std", digits: int = 4) -> str:
    """The table as an HTML table (cells as in the markdown table)."""
    head = [" / ".join(table.row_keys) or "run"]
    head += [table.col_label(col) or table.metric for col in table.cols]
    lines = ['<table class="results">', "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>"]
    for row in table.rows:
        cells = [", ".join(display(v) for v in row)] + [table.cell(row, col).text(agg, digits) for col in table.cols]
        lines.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    lines.append("</table>")
    if table.problems:
        lines.append(f"<p>{len(table.problems)} run(s) without results:</p><ul>")
        for path, status, reason in table.problems:
            lines.append(f'<li><span class="status-{_e(status)}">{_e(status)}</span> {_e(path)}'
                         + (f" ({_e(reason)})" if reason else "") + "</li>")
        lines.append("</ul>")
    return "\n".join(lines)


def figure_html(png: bytes, caption: str) -> str:
    """A PNG inlined as a data URI."""
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img class="figure" alt="{_e(caption)}" src="data:image/png;base64,{data}">' \
           f"<figcaption class=\"meta\">{_e(caption)}</figcaption></figure>"


def claims_html(results) -> str:
    """Each claim with PASS/FAIL, its source, expectation and what was measured."""
    parts = []
    for result in results:
        verdict = "pass" if result.passed else "fail"
        body = "\n".join(_e(line.strip()) for line in result.report().splitlines()[1:])
        parts.append(f'<div class="claim {verdict}"><p><span class="verdict">{verdict.upper()}</span>'
                     f"{_e(result.text)}</p><pre>{body}</pre></div>")
    passed = sum(r.passed for r in results)
    parts.append(f"<p><strong>{passed}/{len(results)} claims passed</strong></p>")
    return "\n".join(parts)


def _config_text(run) -> str:
    return "\n".join(f"{key}: {display(value)}" for key, value in sorted(run.flat_config.items())
                     if is_identity_key(key) and "." in key or key in ("seed", "sparsity"))


def configs_html(table: Table, records: list[Record]) -> str:
    """For each table row, the runs behind it: directory, status, overrides, and the config in a fold."""
    behind: dict[tuple, dict[int, Any]] = {}
    for (row, _), group in cell_records(table, records).items():
        for record in group:
            behind.setdefault(row, {})[id(record.run)] = record.run
    for record in records:  # failed and unfinished runs too
        if not record.run.finished:
            row = tuple(record.get(key) for key in table.row_keys)
            behind.setdefault(row, {})[id(record.run)] = record.run
    parts = []
    for row in table.rows:
        runs = list(behind.get(row, {}).values())
        label = ", ".join(f"{k}={display(v)}" for k, v in zip(table.row_keys, row)) or "all runs"
        parts.append(f"<details><summary>{_e(label)}: {len(runs)} run(s)</summary><ul>")
        for run in runs:
            overrides = " ".join(run.overrides) or "(defaults)"
            parts.append(f'<li><code>{_e(run.path)}</code> <span class="status-{_e(run.status)}">{_e(run.status)}'
                         f"</span> <code>{_e(overrides)}</code><details><summary>config</summary>"
                         f"<pre>{_e(_config_text(run))}</pre></details></li>")
        parts.append("</ul></details>")
    return "\n".join(parts)


def render_figure(kind: str, records: list[Record], table: Table) -> bytes:
    """The PNG of the table's figure (`lottery`, `path` or `bar`), drawn into a temporary file."""
    from overparam.report import plots

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "figure.png"
        if kind == "lottery":
            plots.lottery_figure(records, out, metric=table.metric)
        elif kind == "path":
            plots.path_figure(records, out)
        else:
            plots.bar_figure(table, out, records=records)
        return out.read_bytes()


def page(table: Table, records: list[Record], *, sources: list[str], figure: tuple[bytes, str] | None = None,
         claims=None, agg: str = "mean_std", digits: int = 4, title: str | None = None) -> str:
    """The whole page as one string."""
    runs = {id(r.run): r.run for r in records}.values()
    done = sum(run.finished for run in runs)
    damaged = sum(status == "unreadable" for _, status, _ in table.problems)
    left_out = f", {damaged} unreadable (left out)" if damaged else ""
    heading = title or f"{table.metric.replace('_', ' ')}: {', '.join(sources)}"
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{_e(heading)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{_e(heading)}</h1>",
             f'<p class="meta">{len(runs) + damaged} run(s), {done} finished{left_out}; '
             f'made by <code>runner table</code> on {_e(stamp)} '
             f"from {_e(', '.join(sources))}. Cells: mean ± sample std (n) over the runs in each cell.</p>",
             "<h2>Table</h2>", table_html(table, agg, digits)]
    if table.pooled:
        parts.append(f'<p class="meta">Cells pool runs that differ in {_e(", ".join(table.pooled))}.</p>')
    if figure is not None:
        parts += ["<h2>Figure</h2>", figure_html(*figure)]
    if claims:
        parts += ["<h2>Claims</h2>", claims_html(claims)]
    parts += ["<h2>Runs behind each row</h2>", configs_html(table, records), "</body></html>"]
    return "\n".join(parts) + "\n"
