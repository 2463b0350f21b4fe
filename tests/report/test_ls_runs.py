"""`runner ls runs`: one line per run with status, age, method, headline metric and the overrides that differ."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from report_helpers import base_config, make_run, method_config

from overparam.cli.main import main as runner


def _sweep(root):
    make_run(root / "0", method_config("imp", sparsity=0.5), {"test_accuracy": 0.91234, "method": "imp"},
             overrides=["method=imp", "sparsity=0.5", "train.epochs=3", "hydra.launcher.n_jobs=2"])
    make_run(root / "1", method_config("imp", sparsity=0.9), {"test_accuracy": 0.8, "method": "imp"},
             overrides=["method=imp", "sparsity=0.9", "train.epochs=3"])
    make_run(root / "2", base_config(), None, status="failed", reason="FloatingPointError: loss became nan",
             overrides=["method=dense", "train.epochs=3"])
    make_run(root / "10", base_config(), None, status="running", overrides=["method=dense", "train.epochs=3"])
    # A running run whose process is gone (killed): pid of a finished child on this machine.
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import platform

    info = {"status": "running", "pid": int(child.stdout), "environment": {"hostname": platform.node()}}
    make_run(root / "11", base_config(), None, status="running", overrides=["method=dense", "train.epochs=3"])
    (root / "11" / "run.json").write_text(json.dumps(info))
    now = time.time()
    for job, hours in (("0", 26), ("1", 2), ("2", 0.5), ("10", 0), ("11", 0)):
        os.utime(root / job / "run.json", (now - hours * 3600 - 5, now - hours * 3600 - 5))
    return root


def test_one_line_per_run_with_status_age_method_metric_and_differing_overrides(tmp_path, capsys):
    root = _sweep(tmp_path / "sweep")
    assert runner(["ls", "runs", str(root)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["done", "1d", str(root / "0"), "imp", "test_accuracy=0.9123", "method=imp",
                                "sparsity=0.5"]
    assert lines[1].split() == ["done", "2h", str(root / "1"), "imp", "test_accuracy=0.8000", "method=imp",
                                "sparsity=0.9"]
    assert lines[2].split()[:5] == ["FAILED", "30m", str(root / "2"), "dense", "method=dense"]
    assert lines[3].strip() == "reason: FloatingPointError: loss became nan"
    assert lines[4].split()[:3] == ["running", "5s", str(root / "10")]
    assert lines[5].split()[:3] == ["STOPPED", "5s", str(root / "11")]  # natural order: 10 and 11 after 2
    assert len(lines) == 6
    assert "5 run(s): 2 done, 1 failed, 1 running, 1 stopped" in err
    assert "overrides all of them share: train.epochs=3" in err


def test_status_filter_and_missing_folder(tmp_path, capsys):
    root = _sweep(tmp_path / "sweep")
    assert runner(["ls", "runs", str(root), "--status", "failed"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("FAILED") and len(out.splitlines()) == 2
    assert runner(["ls", "runs", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_ls_runs_imports_no_torch(tmp_path):
    root = _sweep(tmp_path / "sweep")
    code = ("import sys\nfrom overparam.cli.main import main\nmain(['ls', 'runs', sys.argv[1]])\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    out = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 6
