"""A reader that closes the pipe early (`runner ls | head -1`) ends the command quietly, without a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
from report_helpers import base_config, make_run  # noqa: E402


def _closed_before_anything_is_read(args: list[str]) -> tuple[int, str]:
    """The reader goes away before the command writes: every write meets a closed pipe."""
    process = subprocess.Popen([sys.executable, "-m", "overparam.cli.main", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()
    error = process.stderr.read().decode()
    return process.wait(timeout=60), error


def test_ls_piped_into_head_prints_its_first_line_only():
    shell = subprocess.run(f"{sys.executable} -m overparam.cli.main ls | head -1", shell=True, capture_output=True,
                           text=True, timeout=60)
    assert shell.stdout == "method:\n"
    assert shell.stderr == ""


def test_ls_into_a_closed_pipe_has_no_traceback():
    code, error = _closed_before_anything_is_read(["ls"])
    assert "Traceback" not in error and "BrokenPipeError" not in error, error
    assert error == ""
    assert code == 141


def test_table_into_a_closed_pipe_has_no_traceback(tmp_path):
    for job in range(6):
        make_run(tmp_path / "sweep" / str(job), base_config(seed=job % 3, sparsity=0.5 if job < 3 else 0.9),
                 {"test_accuracy": 0.5 + job / 100})
    code, error = _closed_before_anything_is_read(["table", str(tmp_path / "sweep")])
    assert "Traceback" not in error and "BrokenPipeError" not in error, error
    assert code == 141
