"""`runner`: the entry point. Each command imports what it needs only when it runs."""

from __future__ import annotations

import sys

HELP = """usage: runner <command> [args]

Experiment runner for pruning, merging, tuning and distilling over-parameterized networks.

commands:
  train       run a method on a model and dataset (a Hydra app: key=value overrides, -m sweeps)
  ls          list what exists: methods, models, datasets, hardware, experiments, loggers
  table       tables and plots from finished runs and sweeps
  reproduce   re-run a saved run or sweep and compare every summary metric

  runner <command> --help   shows each command's options
examples:
  runner train method=imp sparsity=0.9
  runner train -m method=imp,random_prune sparsity=0.5,0.8,0.9 seed=0,1,2
  runner table outputs/multirun/<date>/<time> --plot fig.png
  runner reproduce outputs/<date>/<time>
"""

COMMANDS = {
    "train": "overparam.cli.train",
    "ls": "overparam.cli.ls",
    "table": "overparam.cli.table",
    "reproduce": "overparam.cli.reproduce",
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch `runner <command>`; exit code 2 for bad usage or bad input."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(HELP, end="")
        return 0
    command, rest = argv[0], argv[1:]
    if command in ("--version", "-V"):
        from overparam import __version__

        print(f"overparam {__version__}")
        return 0
    if command not in COMMANDS:
        print(f"runner: unknown command {command!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    import importlib

    from overparam.errors import UserError
    from overparam.hardware import quiet_openmp

    # Before torch loads its OpenMP runtime: workers wait passively instead of spinning on shared cores.
    quiet_openmp()

    try:
        module = importlib.import_module(COMMANDS[command])
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("overparam"):
            print(f"runner: the {command!r} command is not available in this version", file=sys.stderr)
            return 2
        raise
    try:
        return int(module.main(rest) or 0)
    except UserError as exc:
        print(f"runner {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"runner {command}: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """Console-script wrapper."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
