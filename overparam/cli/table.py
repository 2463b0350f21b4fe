"""`runner table`: tables and figures from finished runs and sweeps (reads run directories only)."""

from __future__ import annotations

import argparse
import sys

EPILOG = """examples:
  runner table outputs/multirun/2026-11-22/10-00-00
  runner table 'outputs/multirun/2026-11-22/*' --rows method --cols sparsity --format latex
  runner table outputs/multirun/2026-11-22/10-00-00 --plot fig.png
  runner table outputs/2026-11-22/10-00-00 --plot-curves curves.png
  runner table outputs/multirun/2026-11-22/10-00-00 --claims
  runner table outputs/multirun/2026-11-22/10-00-00 --html results.html
Rows and columns are config keys (dotted, e.g. method, sparsity, model.widths) or `level`;
seeds are pooled into mean ± std (n). Failed and unfinished runs are shown, never dropped.
A run that cannot be read (run.json cut short or not UTF-8, summary.json garbage) is listed as unreadable
with the reason, in no cell, figure or claim; the table is still written and the exit code stays 0, except
with --claims: a verdict that could not count every run exits 1."""


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of `runner table`."""
    parser = argparse.ArgumentParser(prog="runner table", description="Tables and figures from run directories.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="run dirs, multirun dirs, folders or glob patterns")
    parser.add_argument("--rows", help="config key(s) for rows, comma-separated (default: keys that vary)")
    parser.add_argument("--cols", help="config key(s) for columns, comma-separated")
    parser.add_argument("--metric", default="test_accuracy", help="summary metric (default test_accuracy; acc, loss ok)")
    parser.add_argument("--agg", choices=("mean", "mean_std", "max"), default="mean_std",
                        help="how seeds combine in md/latex cells (csv/json always give mean, std, n)")
    parser.add_argument("--format", choices=("md", "csv", "latex", "json"), default="md")
    parser.add_argument("--digits", type=int, default=4, help="decimals in md/latex cells")
    parser.add_argument("--out", help="write the table to this file instead of stdout")
    parser.add_argument("--plot", metavar="FILE.png", help="also draw the figure (lottery, path, line or bar; see --plot-kind)")
    parser.add_argument("--plot-kind", choices=("auto", "lottery", "path", "line", "bar"), default="auto")
    parser.add_argument("--plot-curves", metavar="FILE.png", help="training curves per level of ONE run")
    parser.add_argument("--html", metavar="FILE.html", help="also write one self-contained page: the table, the figure "
                        "inline, the claims (when the runs carry them) and the configs behind each row")
    parser.add_argument("--claims", action="store_true",
                        help="evaluate the claims: saved in the runs' configs (a preset's sweep); exit 1 if any fails")
    return parser


def main(argv: list[str]) -> int:
    """Index the runs, print the table, draw the requested figures, check claims when asked."""
    args = build_parser().parse_args(argv)
    from overparam.errors import UserError
    from overparam.report.aggregate import build_table, parse_keys, stderr_warn
    from overparam.report.formats import render
    from overparam.report.index import index_runs, records_of, unreadable

    if args.digits < 0 or args.digits > 12:
        raise UserError("--digits must be between 0 and 12")
    runs = index_runs(args.paths)
    records = records_of(runs)
    skipped = unreadable(runs)
    table = build_table(records, metric=args.metric, rows=parse_keys(args.rows), cols=parse_keys(args.cols),
                        warn=stderr_warn, skipped=skipped)
    if skipped:
        stderr_warn(f"{len(skipped)} of {len(runs)} run(s) cannot be read and are left out (listed under the table)")
    text = render(table, args.format, args.agg, args.digits)
    if args.out:
        from overparam.store.atomic import atomic_write_text

        atomic_write_text(args.out, text)
        print(f"wrote {args.out} ({len(runs)} runs)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if args.plot:
        from overparam.report import plots

        kind = plots.choose_kind(records) if args.plot_kind == "auto" else args.plot_kind
        if args.plot_kind == "auto" and kind == "bar" and plots.numeric_axis(table):
            kind = "line"
        if kind == "lottery":
            plots.lottery_figure(records, args.plot, metric=table.metric)
        elif kind == "path":
            plots.path_figure(records, args.plot)
        elif kind == "line":
            plots.line_figure(table, args.plot)
        else:
            plots.bar_figure(table, args.plot, records=records)
        print(f"wrote {args.plot} ({kind} figure)", file=sys.stderr)
    if args.plot_curves:
        from overparam.report import plots

        if len(runs) != 1:
            raise UserError(f"--plot-curves draws one run; {len(runs)} runs were given")
        plots.curves_figure(runs[0].path, args.plot_curves, metric=table.metric)
        print(f"wrote {args.plot_curves} (training curves)", file=sys.stderr)
    if args.html:
        from overparam.cli.page import write_page

        write_page(args, table, records)
    if args.claims:
        from overparam.report.claims import claims_of_runs, evaluate_claims

        claims = claims_of_runs(records)
        if not claims:
            raise UserError("--claims: none of these runs carries a claims: block (run a preset with claims)")
        results = evaluate_claims(claims, records)
        print()
        for result in results:
            print(result.report())
        passed = sum(r.passed for r in results)
        print(f"\n{passed}/{len(results)} claims passed")
        if skipped:
            print(f"(checked without {len(skipped)} unreadable run(s): not a verdict over every run)")
        return 0 if passed == len(results) and not skipped else 1
    return 0
