"""Run `runner` commands in a fresh interpreter and check which heavy modules they imported."""

from __future__ import annotations

import subprocess
import sys


def run_light(*commands: list[str], heavy: tuple[str, ...] = ("torch", "torchvision", "hydra")) -> str:
    """stdout of `runner <command>` for each command, run in one fresh process; fails if any returned
    non-zero or left one of `heavy` imported."""
    calls = "".join(f"    assert main({list(command)!r}) == 0\n" for command in commands)
    code = ("import sys, io, contextlib\n"
            "from overparam.cli.main import main\n"
            "buf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n"
            f"{calls}"
            f"loaded = [m for m in {heavy!r} if m in sys.modules]\n"
            "assert not loaded, loaded\n"
            "print(buf.getvalue())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout
