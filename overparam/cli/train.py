"""`runner train`: a Hydra app over configs/train.yaml.

Before Hydra creates any directory, every override (each value of a sweep too) is composed
and validated, so a bad value ends with one clear line, exit code 2, and nothing written.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from overparam.cli.launch import (FAILED_JOBS, SWEEP_PID_ENV, apply_job_threads, created_for, leave_if_orphaned,
                                  plan_run_dir, register_resolvers, watch_sweep_process)
from overparam.cli.paths import config_dir, group_options
from overparam.cli.job import _split_message, execute, hydra_files, trusted  # noqa: F401 (execute: for callers)
from overparam.errors import UserError

# train.yaml's run/sweep dirs use ${unique_dir:...}; a launcher's worker process imports this
# module (to unpickle `task`) before it resolves them, so registering here covers every process.
register_resolvers()

# Hydra flags after which no job runs: skip validation and hand over to Hydra.
INFO_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc", "--version")



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
    from overparam.cli.foreign import plugin_allowed

    check_config({"hydra": hydra_section}, trust=trust, source="the composed config", plugins=plugin_allowed)
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


def _method_help(argv: list[str]) -> None:
    """With `method=NAME` on the command line, `--help` ends with that method's parameters (its Spec)."""
    from overparam.cli.ls import show_method

    names = [arg.split("=", 1)[1] for arg in argv if arg.startswith("method=")]
    if len(names) == 1 and "," not in names[0]:
        print(f"\n== Parameters of method={names[0]} ==")
        show_method(names[0])


def _plan_dirs(overrides: list[str]) -> None:
    """Before Hydra creates an explicit run or sweep dir: refuse one that cannot be created (one line, nothing
    written), and note which folders this process will create (a refused run removes only those)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        if key == "hydra.output_subdir":
            # Hydra would write its files there before the run's checks, into a directory that may hold a run.
            raise UserError("hydra.output_subdir cannot be set: the runner writes .hydra/ in the run directory "
                            "itself, once the run's checks pass")
        if key not in ("hydra.run.dir", "hydra.sweep.dir") or override.is_sweep_override():
            continue
        value = str(override.value())
        path = Path(os.path.abspath(value))
        if "${" not in value:
            if path.exists() and not path.is_dir():
                raise UserError(f"{key}={value}: {path} exists and is not a directory")
            existing = next(p for p in (path, *path.parents) if p.exists())
            if not path.exists() and not os.access(existing, os.W_OK | os.X_OK):
                raise UserError(f"{key}={value}: cannot create {path}: {existing} is not writable")
        if key == "hydra.run.dir":
            plan_run_dir(value)


def main(argv: list[str]) -> int:
    """Validate, then run Hydra's app (single run or -m sweep)."""
    if "--trust" in argv:
        # An environment variable reaches the jobs a launcher runs in other processes too.
        argv = [arg for arg in argv if arg != "--trust"]
        os.environ[TRUST_ENV] = "1"
    if not _wants_info(argv):
        primary, extra = _primary_config(argv)
        validate_overrides(_override_args(argv) + extra, primary)
        _plan_dirs(_override_args(argv))
    # A parallel launcher's workers stop when this process dies (launch.watch_sweep_process).
    os.environ[SWEEP_PID_ENV] = str(os.getpid())
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

    from overparam.store.lifecycle import RunFault

    from omegaconf import OmegaConf

    hydra_cfg = HydraConfig.get()
    # Unresolved: Hydra stores the created path as a string, and a `${` in it (a folder's name) is not read again.
    out_dir = Path(OmegaConf.to_container(hydra_cfg.runtime, resolve=False)["output_dir"])
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if multirun:
        watch_sweep_process()
    # Jobs running side by side (joblib, submitit) share the cores instead of each taking all of them.
    apply_job_threads(cfg.get("hardware"), hydra_cfg.launcher if multirun else None)
    created = () if multirun else created_for(out_dir)
    try:
        return execute(cfg, out_dir, keep_failed=multirun, files=hydra_files(cfg), created=created)
    except SystemExit as exc:  # interrupted: a worker whose sweep was killed goes with it
        leave_if_orphaned(exc.code if isinstance(exc.code, int) else 1)
        raise
    except (UserError, RunFault) as exc:
        if not multirun:
            print(f"runner train: error: {exc}", file=sys.stderr)
            sys.exit(2 if isinstance(exc, UserError) else 1)
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


def train_in_process(overrides: list[str], out_dir: str | Path) -> dict:
    """Compose, validate and run one job into `out_dir` without a subprocess (tests, nested runs).

    Writes `.hydra/config.yaml` and `.hydra/overrides.yaml` as Hydra would, so the directory is a
    normal run directory for `runner table`, `runner reproduce` and `load_run_model`.
    """
    from omegaconf import OmegaConf

    container = compose_checked(list(overrides))
    files = {".hydra/config.yaml": OmegaConf.to_yaml(OmegaConf.create(container)),
             ".hydra/overrides.yaml": OmegaConf.to_yaml(OmegaConf.create(list(overrides)))}
    execute(OmegaConf.create(container), Path(out_dir), files=files)
    from overparam.store.atomic import read_json

    return read_json(Path(out_dir) / "summary.json") or {}
