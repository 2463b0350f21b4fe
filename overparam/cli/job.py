"""One job of `runner train` inside its run directory: the store opens it (lock, checks, `.hydra` files),
the method's recipe runs, and the run ends done, interrupted (with the command that resumes it) or failed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from overparam.errors import UserError


def _split_message(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(line.strip() for line in text.splitlines() if line.strip())[:400] or type(exc).__name__


def trusted() -> bool:
    """True when `--trust` was given: any `_target_` may be instantiated."""
    from overparam.components import trusted as flag

    return flag()


def hydra_files(cfg) -> dict[str, str]:
    """The `.hydra` files Hydra writes for a job (train.yaml sets hydra.output_subdir to null), written by
    the store only once the run's checks pass: a refused run rewrites no earlier run's config."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    hydra_cfg = HydraConfig.instance().cfg
    if hydra_cfg.hydra.output_subdir is not None:  # the user asked Hydra to write them itself
        return {}
    return {".hydra/config.yaml": OmegaConf.to_yaml(cfg), ".hydra/hydra.yaml": OmegaConf.to_yaml(hydra_cfg),
            ".hydra/overrides.yaml": OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task)}


def execute(cfg, out_dir: Path, keep_failed: bool = False, files: dict[str, str] | None = None,
            created: tuple = ()) -> Any:
    """Open the run directory through the store, call the method's recipe, record the summary and the status.

    `files` (the `.hydra` files) are written only once the directory is locked and the run's checks pass.
    `created`: directories this process created for the run (removed again when it is refused).
    `keep_failed`: a sweep's job keeps its directory (run.json says `failed` and why) even when
    the failure is a bad input found only at run time, so the sweep's failure summary lists it.
    """
    from omegaconf import OmegaConf

    from overparam.components import check_config
    from overparam.store.lifecycle import RunFault, RunLife, storage_fault

    container = OmegaConf.to_container(cfg, resolve=True)
    objective = cfg.get("objective") or "val_accuracy"
    with RunLife(out_dir, container, device=str(cfg.hardware.device), precision=str(cfg.hardware.precision),
                 created=created) as life:
        life.check()
        summary = life.finished()
        if summary is not None:
            _report(out_dir, summary, already=True)
            return summary.get(objective)
        try:
            # The job's own config is checked again where it runs (a launcher's worker process too):
            # registered components only, unless --trust.
            check_config(container, trust=trusted(), source="the config")
            run = life.start(files)
        except UserError:
            if not keep_failed:
                life.refuse()
            raise
        except OSError as exc:
            if not storage_fault(exc):
                raise
            raise UserError(life.fault(exc, "")) from None
        try:
            summary = _run_recipe(cfg, container, run, life)
        except OSError as exc:
            if not storage_fault(exc):
                raise
            raise RunFault(life.fault(exc, resume_command(out_dir))) from None
        except UserError:
            if life.fresh and not keep_failed:
                life.refuse()
            raise
    _report(out_dir, summary)
    return summary.get(objective)


def _run_recipe(cfg, container: dict, run, life) -> dict:
    """The recipe inside the run: done, interrupted (with the command that resumes it) or failed."""
    from overparam.cli.trial import named_models, run_method
    from overparam.components import resolve
    from overparam.recipes.context import call
    from overparam.settings import Settings
    from overparam.store import signals
    from overparam.store.lifecycle import storage_fault
    from overparam.store.loggers import build_loggers

    out_dir = run.root
    try:
        with signals.handling():
            run.loggers = build_loggers(container.get("logger"), str(out_dir), str(cfg.paths.output_dir), container)
            # The recipe gets its typed parameters (its Spec) and a context: the run and the typed, read-only
            # shared settings built here from the resolved config; nothing below the CLI sees the DictConfig.
            summary = call(resolve("method", container["method"]), Settings.resolved(container), run,
                           launch=run_method, models=named_models(container))
            summary.setdefault("method", cfg.method.name)
            if (cfg.get("dataset") or {}).get("label_noise"):
                summary.setdefault("label_noise", float(cfg.dataset.label_noise))
                summary.setdefault("label_noise_seed", int(cfg.dataset.get("label_noise_seed") or 0))
            run.info["completed_hash"] = run.hash
            run.finish("done", summary=summary)
        for name in list(run.info.get("checkpoints", {})):
            if name.startswith("resume_"):
                run.drop_checkpoint(name)
        return summary
    except (signals.Interrupted, KeyboardInterrupt) as exc:
        name = exc.name if isinstance(exc, signals.Interrupted) else "SIGINT"
        signum = exc.signum if isinstance(exc, signals.Interrupted) else None
        requeue = signum is not None and signals.requeues(signum)
        command = resume_command(out_dir)
        how = "submitit requeues the job, which resumes it; or resume with" if requeue else "resume with"
        life.interrupt(name, f"{name}; {how}: {command}", requeued=requeue)
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
        raise
    except BaseException as exc:
        if storage_fault(exc):
            raise  # the store marks it interrupted: it resumes once the disk or folder is fixed
        run.finish("failed", reason=f"{type(exc).__name__}: {_split_message(exc)}")
        raise


def hydra_quote(value: str) -> str:
    """`value` as one Hydra override value: as it is when plain, else double-quoted, no `${` read as an
    interpolation (a folder may be named `a (b) $x 'q'`)."""
    import re

    if re.fullmatch(r"/[\w/.+@%-]*", value):  # an absolute path Hydra reads as the same string
        return value
    value = re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", value)  # OmegaConf: a literal ${
    value = re.sub(r'(\\*)("|$)', lambda m: m.group(1) * 2 + ('\\"' if m.group(2) else ""), value)
    return f'"{value}"'


def resume_command(out_dir: Path) -> str:
    """The exact command that resumes the run in `out_dir`: its saved overrides and its hydra.run.dir,
    quoted for the shell and for Hydra (a run dir may hold spaces, quotes, `$`, `(`)."""
    import shlex

    from overparam.store.readers import read_yaml

    overrides = [str(o) for o in (read_yaml(out_dir / ".hydra" / "overrides.yaml") or [])
                 if not str(o).lstrip("+~").startswith(("hydra.run.dir=", "hydra.sweep.", "hydra.mode="))]
    run_dir = f"hydra.run.dir={hydra_quote(str(Path(out_dir).resolve()))}"
    return " ".join(shlex.quote(a) for a in ["runner", "train", *overrides, run_dir])


def _report(out_dir: Path, summary: dict, already: bool = False) -> None:
    from rich.console import Console

    console = Console(stderr=False, highlight=False)
    # A language model's headline is bits per byte and perplexity; a classifier's, accuracy.
    headline = (("test_bits_per_byte", "test_perplexity") if "test_bits_per_byte" in summary
                else ("test_accuracy", "val_accuracy"))
    keys = [k for k in (*headline, "test_loss", "sparsity", "early_stop_step", "trainable_parameters")
            if k in summary]
    figures = "  ".join(f"{k}={summary[k]:.4f}" if isinstance(summary[k], float) else f"{k}={summary[k]}" for k in keys)
    state = "already done" if already else "done"
    console.print(f"[bold green]{state}[/] {out_dir}  {figures}")
