"""Two real processes on one run dir, signals and kills: one process per run dir, nothing written twice.

Each test starts real `runner` processes and asserts exit codes, the lines on stderr, and the bytes left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from faults_helpers import TIMEOUT, TINY, digest, lines, runner, start, status_of, wait_for

from tiny_runs import tiny

# A run that lasts a few seconds: long enough for a second process to find it running.
MEDIUM = tiny(2000, "train.checkpoint_every=100", "hardware.threads=1", eval_every=400)


def running(run_dir: Path) -> bool:
    return status_of(run_dir) == "running"


def rows(run_dir: Path) -> int:
    return (run_dir / "metrics.jsonl").read_text().count("\n")


def test_two_identical_commands_make_one_run(tmp_path):
    reference = runner(["train", *MEDIUM, "hydra.run.dir=reference"], cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr
    run = tmp_path / "run"
    both = [start(["train", *MEDIUM, f"hydra.run.dir={run}"], cwd=tmp_path) for _ in range(2)]
    outs = [process.communicate(timeout=TIMEOUT) for process in both]
    assert [process.returncode for process in both] == [0, 0], outs
    waiter = 0 if "already done" in outs[0][0] else 1
    holder = both[1 - waiter]
    assert "already done" not in outs[1 - waiter][0] and lines(outs[1 - waiter][1]) == []
    waited = lines(outs[waiter][1])
    assert len(waited) == 1 and f"in use by pid {holder.pid} running this config; waiting" in waited[0], waited
    # One run's files: the metrics of an uninterrupted run, byte for byte (not two copies of each row).
    assert (run / "metrics.jsonl").read_bytes() == (tmp_path / "reference" / "metrics.jsonl").read_bytes()
    assert json.loads((run / "run.json").read_text())["resumes"] == 0


def test_another_config_on_a_running_dir_is_refused_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    first = start(["train", *MEDIUM, "seed=1", f"hydra.run.dir={run}"], cwd=tmp_path)
    wait_for(lambda: running(run), what="the first run to start")
    hydra_files = digest(run / ".hydra")
    second = runner(["train", *MEDIUM, "seed=2", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert digest(run / ".hydra") == hydra_files  # before, Hydra had rewritten them with seed=2
    first.communicate(timeout=TIMEOUT)
    assert second.returncode == 2
    err = lines(second.stderr)
    assert len(err) == 1 and f"in use by pid {first.pid}, running another config" in err[0], second.stderr
    assert first.returncode == 0 and status_of(run) == "done"
    assert "seed: 1" in (run / ".hydra" / "config.yaml").read_text()


def test_the_lock_dies_with_its_holder(tmp_path):
    """kill -9 of the holder frees the run dir at once: the same command resumes it."""
    run = tmp_path / "run"
    first = start(["train", *MEDIUM, f"hydra.run.dir={run}"], cwd=tmp_path)
    wait_for(lambda: running(run) and (run / "checkpoints").is_dir(), what="a resume point")
    first.kill()
    first.communicate(timeout=TIMEOUT)
    again = runner(["train", *MEDIUM, f"hydra.run.dir={run}"], cwd=tmp_path)
    assert again.returncode == 0 and lines(again.stderr) == [], again.stderr
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "done" and info["resumes"] == 1


def test_the_printed_resume_command_pastes_through_bash(tmp_path):
    """A run dir with `(`, `$`, spaces, quotes, a comma and an interpolation: the command after Ctrl-C resumes it."""
    from overparam.cli.job import hydra_quote

    run = tmp_path / """run (1) $HOME 'q' "d" ${oc.env:HOME},x=y"""
    first = start(["train", *MEDIUM, f"hydra.run.dir={hydra_quote(str(run))}"], cwd=tmp_path)
    wait_for(lambda: running(run) and (run / "checkpoints").is_dir(), what="a resume point")
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=TIMEOUT)
    assert first.returncode == 130 and status_of(run) == "interrupted", err
    command = lines(err)[-1].strip()
    assert command.startswith("runner train ")
    shell = f'runner() {{ "{sys.executable}" -m overparam.cli.main "$@"; }}\n{command}\n'
    pasted = subprocess.run(["bash", "-c", shell], cwd=tmp_path / "..", capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert pasted.returncode == 0, pasted.stderr
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "done" and info["resumes"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [run.name]  # no other folder was made


def test_a_finished_sweep_again_changes_nothing(tmp_path):
    sweep = ["train", "-m", *TINY, "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    assert runner(sweep, cwd=tmp_path).returncode == 0
    before = digest(tmp_path)
    again = runner(sweep, cwd=tmp_path)
    assert again.returncode == 0 and lines(again.stderr) == [], again.stderr
    assert again.stdout.count("already done") == 2
    assert digest(tmp_path) == before


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def test_kill_9_of_a_joblib_sweep_stops_its_workers_and_the_sweep_finishes_after(tmp_path):
    sweep_dir = tmp_path / "sweep"
    sweep = ["train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *MEDIUM, "seed=0,1",
             f"hydra.sweep.dir={sweep_dir}"]
    parent = start(sweep, cwd=tmp_path)
    jobs = [sweep_dir / "0", sweep_dir / "1"]
    wait_for(lambda: all(running(job) for job in jobs), timeout=90, what="both jobs to run")
    workers = [json.loads((job / "run.json").read_text())["pid"] for job in jobs]
    assert parent.pid not in workers
    os.kill(parent.pid, signal.SIGKILL)
    parent.communicate(timeout=TIMEOUT)
    # Before, the workers trained on as orphans; now each stops at a step boundary as `interrupted`.
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=30, what="the workers to stop")
    assert [status_of(job) for job in jobs] == ["interrupted", "interrupted"]
    again = runner(sweep, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    infos = [json.loads((job / "run.json").read_text()) for job in jobs]
    assert [(i["status"], i["resumes"]) for i in infos] == [("done", 1), ("done", 1)]
    before = digest(tmp_path)
    third = runner(sweep, cwd=tmp_path)
    assert third.returncode == 0 and third.stdout.count("already done") == 2
    assert digest(tmp_path) == before
    assert not any(alive(pid) for pid in workers)
