"""`runner train`: a Hydra app over configs/train.yaml.

Before Hydra creates any directory, every override (each value of a sweep too) is composed
and validated, so a bad value ends with one clear line, exit code 2, and nothing written.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from overparam.cli.launch import apply_job_threads, register_resolvers
from overparam.cli.paths import config_dir, group_options
from overparam.errors import UserError

# train.yaml's run/sweep dirs use ${unique_dir:...}; a launcher's worker process imports this
# module (to unpickle `task`) before it resolves them, so registering here covers every process.
register_resolvers()

# Hydra flags after which no job runs: skip validation and hand over to Hydra.
INFO_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc", "--version")

# Jobs of this process that failed (the basic launcher runs a sweep's jobs in-process).
FAILED_JOBS: list[tuple[str, str]] = []


def _split_message(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(line.strip() for line in text.splitlines() if line.strip())[:400] or type(exc).__name__


def _check_group_option(key: str, value: str) -> None:
    from overparam.cli.suggest import option_error

    group = key.lstrip("+~").split("@")[0]
    options = group_options(group)
    if options and value not in ("null", "None") and value not in options:
        raise UserError(option_error(group, value, options))


def expand_overrides(overrides: list[str]) -> list[list[str]]:
    """Override lists to validate: each value of each sweep once (others at their first value)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
    except OverrideParseException as exc:
        raise UserError(f"bad override: {_split_message(exc)}") from None
    firsts: list[str] = []
    alternatives: list[tuple[int, list[str]]] = []
    for index, override in enumerate(parsed):
        key = override.get_key_element()
        if override.is_sweep_override():
            if override.is_discrete_sweep():
                values = list(override.sweep_string_iterator())
            else:  # an interval for an optimizing sweeper: checked by the sweeper's own trials
                values = []
            if not values:
                firsts.append(None)  # type: ignore[arg-type]
                continue
            rendered = [f"{key}={value}" for value in values]
            firsts.append(rendered[0])
            alternatives.append((index, rendered))
        else:
            firsts.append(overrides[index])
    combos = [[o for o in firsts if o is not None]]
    for index, rendered in alternatives:
        for alternative in rendered[1:]:
            combo = list(firsts)
            combo[index] = alternative
            combos.append([o for o in combo if o is not None])
    return combos


def compose_checked(overrides: list[str], *, primary: tuple[str, str] | None = None,
                    trust: bool | None = None, check_method: bool = True) -> dict:
    """Compose configs/train.yaml with `overrides`, resolve it, validate it; UserError if anything is wrong.

    The `hydra` section is composed too and checked before Hydra would instantiate anything from it
    (callbacks, launcher, sweeper, logging): only registered components pass without --trust.
    `primary` = (config folder, config name) composes another primary config (--config-path/--config-name).
    `check_method=False` skips the values' validation (a staged preset's runs are validated when they start).
    """
    from overparam.components import check_config, check_resolvers

    folder, name = primary or (str(config_dir()), "train")
    trust = trusted() if trust is None else trust
    for override in overrides:
        key, _, value = override.partition("=")
        bare = key.lstrip("+~")
        if "/" not in bare and "." not in bare and (config_dir() / bare.split("@")[0]).is_dir():
            _check_group_option(bare, value)
    try:
        container, hydra_section = _compose(folder, name, overrides)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(_friendly_compose_error(exc, overrides, folder, name)) from None
    from overparam.cli.suggest import check_added_keys
    from overparam.cli.validate import validate

    check_resolvers({"hydra": hydra_section}, source="the composed config", hydra_only=True)
    check_config({"hydra": hydra_section}, trust=trust, source="the composed config")
    check_config(container, trust=trust, source="the composed config")
    check_added_keys(overrides, container)
    if check_method:
        validate(container, trust=trust)
    return container


def _compose(folder: str, name: str, overrides: list[str]) -> tuple[dict, dict]:
    """Hydra's composition: (the config resolved, its hydra section unresolved)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf, open_dict

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=folder, version_base="1.3", job_name="train"):
            cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
            # The hydra section stays unresolved: its run/sweep dirs claim directories when resolved.
            hydra_section = OmegaConf.to_container(cfg.hydra, resolve=False)
            with open_dict(cfg):
                del cfg["hydra"]
            return OmegaConf.to_container(cfg, resolve=True), hydra_section
    finally:
        GlobalHydra.instance().clear()


def _friendly_compose_error(exc: Exception, overrides: list[str], folder: str, name: str) -> str:
    import re

    def unknown_key(error: Exception) -> list[str]:
        found = re.match(r"Could not override '([^']+)'", _split_message(error))
        # Hydra's own section keeps Hydra's answer: its keys are not the run's.
        key = found.group(1) if found and not found.group(1).startswith("hydra.") else None
        return [o for o in overrides if key and o.partition("=")[0] == key]

    text = _split_message(exc)
    given = unknown_key(exc)
    if given:
        # Hydra's advice (`+key=value`) would add a key nothing reads: name the keys that exist instead,
        # from the config composed without the unknown keys.
        from overparam.cli.suggest import unknown_key_error

        rest, container = [o for o in overrides if o not in given], {}
        for _ in range(len(overrides)):
            try:
                container, _ = _compose(folder, name, rest)
                break
            except Exception as again:  # noqa: BLE001 - another bad override: leave it out too, or give up
                more = unknown_key(again)
                if not more:
                    break
                rest = [o for o in rest if o not in more]
        return unknown_key_error(given[0], container)
    if "is not in struct" in text or "Key '" in text and "not in" in text:
        return f"{text} (a new key needs a leading '+', e.g. +key=value)"
    return text


def validate_overrides(overrides: list[str], primary: tuple[str, str] | None = None) -> None:
    """Compose and validate every value a sweep would run."""
    for combo in expand_overrides(overrides):
        compose_checked(combo, primary=primary)


def _wants_info(argv: list[str]) -> bool:
    return any(arg in INFO_FLAGS or arg.split("=")[0] in INFO_FLAGS for arg in argv)


def _parsed_args(argv: list[str]):
    from hydra._internal.utils import get_args_parser

    try:
        return get_args_parser().parse_args(argv)
    except SystemExit:
        raise UserError("bad arguments; see runner train --help") from None


def _override_args(argv: list[str]) -> list[str]:
    return list(_parsed_args(argv).overrides)


def _primary_config(argv: list[str]) -> tuple[tuple[str, str] | None, list[str]]:
    """(config folder, name) given by --config-path/--config-name, and overrides --config-dir implies."""
    args = _parsed_args(argv)
    extra = []
    if args.config_dir:
        extra.append(f"hydra.searchpath=[file://{Path(args.config_dir).resolve()}]")
    if not args.config_path and not args.config_name:
        return None, extra
    folder = Path(args.config_path).resolve() if args.config_path else config_dir()
    return (str(folder), args.config_name or "train"), extra


TRUST_ENV = "OVERPARAM_TRUST_TARGETS"


def trusted() -> bool:
    """True when `--trust` was given: any `_target_` may be instantiated."""
    from overparam.components import trusted as flag

    return flag()


def _method_help(argv: list[str]) -> None:
    """With `method=NAME` on the command line, `--help` ends with that method's parameters (its Spec)."""
    from overparam.cli.ls import show_method

    names = [arg.split("=", 1)[1] for arg in argv if arg.startswith("method=")]
    if len(names) == 1 and "," not in names[0]:
        print(f"\n== Parameters of method={names[0]} ==")
        show_method(names[0])


def main(argv: list[str]) -> int:
    """Validate, then run Hydra's app (single run or -m sweep)."""
    if "--trust" in argv:
        # An environment variable reaches the jobs a launcher runs in other processes too.
        argv = [arg for arg in argv if arg != "--trust"]
        os.environ[TRUST_ENV] = "1"
    multirun = "-m" in argv or "--multirun" in argv
    if not _wants_info(argv):
        primary, extra = _primary_config(argv)
        validate_overrides(_override_args(argv) + extra, primary)
    import hydra

    FAILED_JOBS.clear()
    saved_argv = sys.argv
    sys.argv = ["runner train", *argv]
    try:
        app = hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")(task)
        app()
    finally:
        sys.argv = saved_argv
        if any(arg in ("--help", "-h") for arg in argv):  # Hydra's help ends with sys.exit(0)
            _method_help(argv)
    # A preset may set hydra.mode=MULTIRUN itself, so failures are reported whatever the flags were.
    if FAILED_JOBS:
        print(f"runner train: {len(FAILED_JOBS)} job(s) failed:", file=sys.stderr)
        for where, reason in FAILED_JOBS:
            print(f"  {where}: {reason}", file=sys.stderr)
        return 1
    return 0


def task(cfg) -> Any:
    """The Hydra task: one job. Returns the objective for optimizing sweepers."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    out_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    # Jobs running side by side (joblib, submitit) share the cores instead of each taking all of them.
    apply_job_threads(cfg.get("hardware"), hydra_cfg.launcher if multirun else None)
    try:
        return execute(cfg, out_dir, keep_failed=multirun)
    except UserError as exc:
        if not multirun:
            print(f"runner train: error: {exc}", file=sys.stderr)
            sys.exit(2)
        FAILED_JOBS.append((str(out_dir), str(exc)))
        print(f"runner train: job {out_dir} failed: {exc}", file=sys.stderr)
    except Exception as exc:  # noqa: BLE001 - a failed job is recorded, the sweep goes on
        reason = f"{type(exc).__name__}: {_split_message(exc)}"
        if not multirun:
            if isinstance(exc, FloatingPointError):  # the run diverged: a result, not a bug
                print(f"runner train: the run diverged: {exc}; it is marked failed in {out_dir} "
                      "(try a lower optim.lr or train.grad_clip)", file=sys.stderr)
                sys.exit(1)
            raise
        FAILED_JOBS.append((str(out_dir), reason))
        print(f"runner train: job {out_dir} failed: {reason}", file=sys.stderr)
    return None


def _remove_refused_run_dir(out_dir: Path) -> None:
    """A bad input found only at run time leaves no half-written directory (nor an empty <date> folder)."""
    shutil.rmtree(out_dir, ignore_errors=True)
    try:
        out_dir.parent.rmdir()
    except OSError:
        pass


def execute(cfg, out_dir: Path, keep_failed: bool = False) -> Any:
    """Open the run directory, call the method's recipe, record the summary and the status.

    `keep_failed`: a sweep's job keeps its directory (run.json says `failed` and why) even when
    the failure is a bad input found only at run time, so the sweep's failure summary lists it.
    """
    from omegaconf import OmegaConf

    from overparam.components import check_config, resolve
    from overparam.recipes.context import call
    from overparam.store import Run, signals
    from overparam.store.loggers import build_loggers

    container = OmegaConf.to_container(cfg, resolve=True)
    fresh = not (out_dir / "run.json").exists()
    try:
        # The job's own config is checked again where it runs (a launcher's worker process too):
        # registered components only, unless --trust.
        check_config(container, trust=trusted(), source="the config")
    except UserError:
        if fresh and not keep_failed:
            _remove_refused_run_dir(out_dir)
        raise
    run = Run(out_dir, container, device=str(cfg.hardware.device), precision=str(cfg.hardware.precision))
    try:
        run.start()
    except UserError:
        raise
    if run.done and run.info.get("completed_hash") == run.hash:
        summary = run.read_summary() or {}
        _report(out_dir, summary, already=True)
        return summary.get(cfg.get("objective") or "val_accuracy")
    try:
        with signals.handling():
            run.loggers = build_loggers(container.get("logger"), str(out_dir), str(cfg.paths.output_dir), container)
            # The recipe gets its typed parameters (its Spec) and a context: the run and the shared keys.
            summary = call(resolve("method", cfg.method), cfg, run)
            summary.setdefault("method", cfg.method.name)
            if (cfg.get("dataset") or {}).get("label_noise"):
                summary.setdefault("label_noise", float(cfg.dataset.label_noise))
                summary.setdefault("label_noise_seed", int(cfg.dataset.get("label_noise_seed") or 0))
            run.info["completed_hash"] = run.hash
            run.finish("done", summary=summary)
        for name in list(run.info.get("checkpoints", {})):
            if name.startswith("resume_"):
                run.drop_checkpoint(name)
    except (signals.Interrupted, KeyboardInterrupt) as exc:
        name = exc.name if isinstance(exc, signals.Interrupted) else "SIGINT"
        signum = exc.signum if isinstance(exc, signals.Interrupted) else None
        requeue = signum is not None and signals.requeues(signum)
        command = resume_command(out_dir)
        how = "submitit requeues the job, which resumes it; or resume with" if requeue else "resume with"
        run.info.setdefault("interruptions", []).append(
            {"signal": name, "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "requeued": requeue})
        run.finish("interrupted", reason=f"{name}; {how}: {command}")
        print(f"runner train: {out_dir} interrupted by {name}; its last resume point is kept. "
              f"{how[0].upper()}{how[1:]}:\n  {command}", file=sys.stderr, flush=True)
        if requeue:
            try:
                signals.pass_on(signum)  # submitit checkpoints the job, requeues it and exits
            except Exception as declined:  # noqa: BLE001 - e.g. timed out more often than allowed
                run.info["interruptions"][-1]["requeued"] = False
                run.record("reason", f"{name}; not requeued ({_split_message(declined)}); resume with: {command}")
                raise
        code = exc.exit_code if isinstance(exc, signals.Interrupted) else 130
        raise SystemExit(code) from None
    except UserError as exc:
        run.finish("failed", reason=str(exc))
        if fresh and not keep_failed:
            _remove_refused_run_dir(out_dir)
        raise
    except BaseException as exc:
        run.finish("failed", reason=f"{type(exc).__name__}: {_split_message(exc)}")
        raise
    _report(out_dir, summary)
    return summary.get(cfg.get("objective") or "val_accuracy")


def resume_command(out_dir: Path) -> str:
    """The exact command that resumes the run in `out_dir`: its saved overrides and its hydra.run.dir."""
    import shlex

    from overparam.report.index import load_yaml

    overrides = [str(o) for o in (load_yaml(out_dir / ".hydra" / "overrides.yaml") or [])
                 if not str(o).lstrip("+~").startswith(("hydra.run.dir=", "hydra.sweep.", "hydra.mode="))]
    return " ".join(shlex.quote(a) for a in ["runner", "train", *overrides,
                                              f"hydra.run.dir={Path(out_dir).resolve()}"])


def _report(out_dir: Path, summary: dict, already: bool = False) -> None:
    from rich.console import Console

    console = Console(stderr=False, highlight=False)
    keys = [k for k in ("test_accuracy", "val_accuracy", "test_loss", "sparsity", "early_stop_step",
                                "trainable_parameters") if k in summary]
    figures = "  ".join(f"{k}={summary[k]:.4f}" if isinstance(summary[k], float) else f"{k}={summary[k]}" for k in keys)
    state = "already done" if already else "done"
    console.print(f"[bold green]{state}[/] {out_dir}  {figures}")


def train_in_process(overrides: list[str], out_dir: str | Path) -> dict:
    """Compose, validate and run one job into `out_dir` without a subprocess (tests, nested runs).

    Writes `.hydra/config.yaml` and `.hydra/overrides.yaml` as Hydra would, so the directory is a
    normal run directory for `runner table`, `runner reproduce` and `load_run_model`.
    """
    from omegaconf import OmegaConf

    from overparam.store.atomic import atomic_write_text

    container = compose_checked(list(overrides))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / ".hydra" / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(container)))
    atomic_write_text(out_dir / ".hydra" / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(overrides))))
    execute(OmegaConf.create(container), out_dir)
    from overparam.store.atomic import read_json

    return read_json(out_dir / "summary.json") or {}
