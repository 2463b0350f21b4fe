"""`runner`: the entry point. Each command imports what it needs only when it runs."""

from __future__ import annotations

import sys

HELP = """usage: runner <command> [args]

Experiment runner for pruning, merging, tuning and distilling over-parameterized networks.

commands:
  train       run a method on a model and dataset (a Hydra app: key=value overrides, -m sweeps)
  ls          list what exists: methods, models, datasets, hardware, experiments, loggers; `ls runs`
  table       tables and plots from finished runs and sweeps
  reproduce   re-run a saved run or sweep and compare every summary metric
  cache       the level cache under outputs/.cache: `cache ls`, `cache clean`
  export      a run's weights (or one pruning level's) as a plain safetensors state dict
  search      re-run an Optuna sweep's best configuration on its eval seeds

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
    "export": "overparam.cli.export",
    "cache": "overparam.cli.cache",
    "search": "overparam.cli.search",
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
    from overparam.hardware import openmp_defaults

    # Before torch loads its OpenMP runtime: workers spin ~35 us, not ~10 ms, before they sleep.
    openmp_defaults()

    try:
        module = importlib.import_module(COMMANDS[command])
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("overparam"):
            print(f"runner: the {command!r} command is not available in this version", file=sys.stderr)
            return 2
        raise
    try:
        code = int(module.main(rest) or 0)
        sys.stdout.flush()  # a reader that went away is found here, not at interpreter exit
        return code
    except BrokenPipeError:
        return _reader_went_away()
    except UserError as exc:
        print(f"runner {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"runner {command}: interrupted", file=sys.stderr)
        return 130


def _reader_went_away() -> int:
    """`runner ls | head -1`: the reader closed the pipe; stop quietly, like a program killed by SIGPIPE."""
    import os

    try:
        # Whatever is still buffered would raise again when Python flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout replaced by an object without a descriptor
        pass
    return 141  # 128 + SIGPIPE, what a shell reports for a program the pipe ended


def entry() -> None:
    """Console-script wrapper."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
