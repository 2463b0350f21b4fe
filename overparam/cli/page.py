"""`runner table --html FILE`: gather the figure and the claims, then write the page (report/html.py)."""

from __future__ import annotations

import sys


def write_page(args, table, records) -> None:
    """Write args.html: the table, its figure inline, the claims the runs carry, the configs behind each row."""
    from overparam.report import html, plots
    from overparam.report.claims import claims_of_runs, evaluate_claims
    from overparam.store.atomic import atomic_write_text

    figure = None
    if any(r.run.finished for r in records):
        kind = plots.choose_kind(records) if args.plot_kind == "auto" else args.plot_kind
        figure = (html.render_figure(kind, records, table), f"{kind} figure of {table.metric}")
    claims = claims_of_runs(records)
    results = evaluate_claims(claims, records) if claims else None
    text = html.page(table, records, sources=[str(p) for p in args.paths], figure=figure, claims=results,
                     agg=args.agg, digits=args.digits)
    atomic_write_text(args.html, text)
    print(f"wrote {args.html} (results page, {len(text) // 1024} kB)", file=sys.stderr)
