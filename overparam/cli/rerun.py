"""What every reproduction does: claim a fresh output directory and run `runner train` in a fresh interpreter.

Shared by `runner reproduce` (cli/reproduce.py) and the presets it reproduces (cli/presets.py), below both.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from overparam.errors import UserError


def new_out(out: str | None, *parts: str) -> Path:
    if out:
        path = Path(out)
        if path.exists() and any(path.iterdir()):
            raise UserError(f"--out {path} exists and is not empty; a reproduction needs a fresh directory")
        return path.resolve()
    stamp = time.strftime("%Y-%m-%d/%H-%M-%S")
    path = Path("outputs", "reproduce", *parts, stamp).resolve()
    while path.exists():  # two reproductions in the same second
        path = path.with_name(path.name + "_")
    return path


def runner_train(args: list[str], trust: bool = False) -> int:
    """Run `runner train ARGS` in a fresh interpreter (clean Hydra and torch state); its exit code.

    The job checks its config again (registered components only) unless this reproduction was given --trust.
    """
    from overparam.components import TRUST_ENV

    command = [sys.executable, "-m", "overparam.cli.main", "train", *args]
    print("$ runner train " + " ".join(quote(a) for a in args), flush=True)
    env = {k: v for k, v in os.environ.items() if k != TRUST_ENV}
    if trust:
        env[TRUST_ENV] = "1"
    return subprocess.call(command, env=env)


def quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
