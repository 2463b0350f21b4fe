"""`runner reproduce experiment=<preset>`: run a paper preset (a sweep, or stages that build on each
other), then its table, figure and claims, PASS/FAIL each with the measured numbers."""

from __future__ import annotations

import sys
from pathlib import Path

from overparam.cli import rerun
from overparam.errors import UserError


def reproduce_preset(name: str, extra: list[str], *, out: str | None, trust: bool) -> int:
    """Run a preset's sweep, build its table and figure, and check each of its claims."""
    from overparam.cli.paths import group_options
    from overparam.cli.train import compose_checked
    from overparam.components import check_config
    from overparam.report.claims import claim_list

    presets = group_options("experiment")
    if name not in presets:
        raise UserError(f"experiment={name} is not a preset; choose one of: {', '.join(presets) or '(none)'}")
    composed = compose_checked([f"experiment={name}", *extra], trust=trust, check_method=False)
    check_config(composed, trust=trust, source=f"experiment={name}")
    claims = claim_list(composed.get("claims"))  # a claim that does not parse stops here, before any training
    stages = stage_list(composed.get("stages"))
    if not stages:
        # A staged preset's last stage names the runs of the earlier ones: each stage is checked as it starts.
        from overparam.cli.validate import validate

        validate(composed, trust=trust)
    new_root = rerun.new_out(out, name)
    if stages:
        return reproduce_stages(name, stages, extra, claims, new_root, trust=trust)
    print(f"preset {name}: running its sweep into {new_root}")
    code = rerun.runner_train(["-m", f"experiment={name}", *extra, f"hydra.sweep.dir={new_root}"], trust=trust)
    if not new_root.exists():
        print(f"runner reproduce: the sweep exited with code {code} and wrote nothing", file=sys.stderr)
        return 1
    return report_sweep(new_root, claims, jobs_ok=code == 0, sources=source_runs(composed))


def source_runs(composed: dict) -> list[Path]:
    """Run directories a preset builds on (`from`, `teacher.from`, `student.from`): its claims may read them
    too (a preset that distills from a soup run compares the soup with its own ingredients)."""
    from overparam.cli.validate import get
    from overparam.store.load import RUN_KEYS, RunRef

    roots: list[Path] = []
    for key in RUN_KEYS:
        value = get(composed, key)
        if value not in (None, ""):
            root = RunRef.parse(str(value)).root
            if root not in roots:
                roots.append(root)
    return roots


def stage_list(value) -> list[dict]:
    """A preset's `stages` (runs that depend on each other: pretrain, fine-tune, merge), checked: each has a
    `name` (a plain word), `overrides` (runner train arguments, `{out}` = the reproduction's directory),
    and optionally `multirun` (a sweep, default false) and `report` (its runs make the table, default:
    the last stage only)."""
    if value is None:
        return []
    from omegaconf import OmegaConf

    stages = OmegaConf.to_container(value, resolve=False) if not isinstance(value, list) else value
    if not isinstance(stages, list) or not stages:
        raise UserError("stages must be a list of {name, overrides, multirun, report}")
    checked, names = [], set()
    for stage in stages:
        if not isinstance(stage, dict) or set(stage) - {"name", "overrides", "multirun", "report"}:
            raise UserError(f"stages: {stage!r} must be a mapping of name, overrides, multirun, report")
        name = str(stage.get("name") or "")
        if not name.isidentifier() or name in names:
            raise UserError(f"stages: name {name!r} must be a plain word, different for each stage")
        names.add(name)
        overrides = stage.get("overrides") or []
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise UserError(f"stages: {name}.overrides must be a list of key=value strings")
        if any(o.split("=", 1)[0].lstrip("+~") in ("hydra.run.dir", "hydra.sweep.dir") for o in overrides):
            raise UserError(f"stages: {name} may not set its own directory (it runs in <out>/{name})")
        checked.append({"name": name, "overrides": overrides, "multirun": bool(stage.get("multirun", False)),
                        "report": stage.get("report")})
    if not any(stage["report"] for stage in checked):
        checked[-1]["report"] = True
    return checked


def reproduce_stages(name: str, stages: list[dict], extra: list[str], claims: list[dict], root: Path, *,
                     trust: bool) -> int:
    """Run a preset's stages in order, each into <root>/<stage>; table and claims over the reported ones."""
    print(f"preset {name}: running its {len(stages)} stages into {root}")
    for stage in stages:
        where = root / stage["name"]
        args = [o.replace("{out}", str(root)) for o in stage["overrides"]] + list(extra)
        if stage["multirun"]:
            args = ["-m", *args, f"hydra.sweep.dir={where}"]
        else:
            args = [*args, f"hydra.run.dir={where}"]
        code = rerun.runner_train(args, trust=trust)
        if code != 0:
            print(f"runner reproduce: stage {stage['name']} exited with code {code}; the later stages need it",
                  file=sys.stderr)
            if not where.exists():
                return 1
            if not stage["multirun"]:
                return 1
            # A sweep with some failed jobs: the later stages run on the jobs that finished.
    reported = [root / stage["name"] for stage in stages if stage["report"]]
    return report_sweep(root, claims, runs=reported)


def report_sweep(root: Path, claims: list[dict], *, jobs_ok: bool = True, sources: list[Path] = (),
                 runs: list[Path] | None = None) -> int:
    """Table (table.md), figure (figure.png) and claim results (claims.md) of a finished sweep (or of the runs
    under `runs`, written into `root`); exit code. `sources`: finished runs the sweep built on, indexed beside
    it for the table and the claims."""
    from overparam.report import plots
    from overparam.report.aggregate import build_table, stderr_warn
    from overparam.report.claims import evaluate_claims
    from overparam.report.formats import render
    from overparam.report.index import index_runs, records_of, unreadable
    from overparam.store.atomic import atomic_write_text

    indexed = index_runs([*(runs or [root]), *sources])
    records, skipped = records_of(indexed), unreadable(indexed)
    jobs_ok = jobs_ok and not skipped  # the claims' verdict could not count every run
    table = build_table(records, warn=stderr_warn, skipped=skipped)
    text = render(table, "md")
    atomic_write_text(root / "table.md", text)
    print()
    print(text, end="")
    kind = plots.choose_kind(records)
    if kind == "bar" and plots.numeric_axis(table):
        kind = "line"
    figure = root / "figure.png"
    try:
        if kind == "lottery":
            plots.lottery_figure(records, figure)
        elif kind == "path":
            plots.path_figure(records, figure)
        elif kind == "line":
            plots.line_figure(table, figure)
        else:
            plots.bar_figure(table, figure)
        print(f"figure: {figure} ({kind})")
    except UserError as exc:
        print(f"figure: not drawn ({exc})")
    print(f"table: {root / 'table.md'}")
    if not claims:
        print("this preset states no claims")
        return 0 if jobs_ok else 1
    results = evaluate_claims(claims, records)
    lines = [result.report() for result in results]
    passed = sum(r.passed for r in results)
    lines.append(f"\n{passed}/{len(results)} claims passed")
    atomic_write_text(root / "claims.md", "\n".join(lines) + "\n")
    print()
    print("\n".join(lines))
    if not jobs_ok:
        print("(some jobs of the sweep failed or cannot be read; see the table)")
    return 0 if passed == len(results) and jobs_ok else 1
