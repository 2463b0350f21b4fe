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

from faults_helpers import (MEDIUM, TIMEOUT, TINY, digest, has_resume_point, lines, runner, runner_command, start,
                            status_of, wait_for)

from tiny_runs import tiny


def running(run_dir: Path) -> bool:
    return status_of(run_dir) == "running"


def started(args: list[str], cwd: Path, run: Path) -> subprocess.Popen:
    """`runner <args>` paused (SIGSTOP) once it has a resume point in `run`."""
    process = start(args, cwd)
    wait_for(lambda: has_resume_point(run) or process.poll() is not None, what="a resume point")
    process.send_signal(signal.SIGSTOP)
    assert process.poll() is None and running(run), "the run ended before it could be paused"
    return process


def test_two_identical_commands_make_one_run(tmp_path):
    run = tmp_path / "run"
    first = started(["train", *MEDIUM, f"hydra.run.dir={run}"], tmp_path, run)
    with open(tmp_path / "second.err", "w") as err:
        second = subprocess.Popen(runner_command(["train", *MEDIUM, f"hydra.run.dir={run}"]), cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=err, text=True)
        wait_for(lambda: "waiting" in (tmp_path / "second.err").read_text(), what="the second to wait")
        first.send_signal(signal.SIGCONT)
        first.communicate(timeout=TIMEOUT)
        out, _ = second.communicate(timeout=TIMEOUT)
    assert first.returncode == 0 and second.returncode == 0
    waited = lines((tmp_path / "second.err").read_text())
    assert len(waited) == 1 and f"in use by pid {first.pid} running this config; waiting" in waited[0], waited
    assert "already done" in out
    # One run's files: each evaluation's rows once (before: both trained, 2 copies of every row).
    keys = [(r["step"], r["split"], r["metric"]) for r in map(json.loads, (run / "metrics.jsonl").open())]
    assert len(keys) == len(set(keys)) and sorted({k[0] for k in keys}) == [0, 200, 400, 600]
    assert json.loads((run / "run.json").read_text())["resumes"] == 0


def test_another_config_is_refused_naming_the_holder_and_the_lock_dies_with_it(tmp_path):
    run = tmp_path / "run"
    first = started(["train", *MEDIUM, "seed=1", f"hydra.run.dir={run}"], tmp_path, run)
    before = digest(run)
    second = runner(["train", *MEDIUM, "seed=2", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert second.returncode == 2
    err = lines(second.stderr)
    assert len(err) == 1 and f"in use by pid {first.pid}, running another config" in err[0], second.stderr
    assert digest(run) == before  # before, Hydra had rewritten .hydra with seed=2
    # kill -9 of the holder frees the run dir at once: its own command resumes it.
    first.kill()
    first.communicate(timeout=TIMEOUT)
    again = runner(["train", *MEDIUM, "seed=1", f"hydra.run.dir={run}"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    # The only lines allowed: a resume point whose save the kill cut short is named, and the other one used.
    assert all("its save was interrupted" in line for line in lines(again.stderr)), again.stderr
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "done" and info["resumes"] == 1
    assert "seed: 1" in (run / ".hydra" / "config.yaml").read_text()


def test_the_printed_resume_command_pastes_through_bash(tmp_path):
    """A run dir with `(`, `$`, spaces, quotes, a comma and an interpolation: the command after Ctrl-C resumes it."""
    from overparam.cli.job import hydra_quote

    run = tmp_path / """run (1) $HOME 'q' "d" ${oc.env:HOME},x=y"""
    first = started(["train", *MEDIUM, f"hydra.run.dir={hydra_quote(str(run))}"], tmp_path, run)
    first.send_signal(signal.SIGINT)
    first.send_signal(signal.SIGCONT)
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
    # Long enough that a worker, continued after the kill, cannot end before it notices (it looks twice a second).
    long = tiny(3000, "train.checkpoint_every=100", "hardware.threads=1", eval_every=1000)
    sweep = ["train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *long, "seed=0,1",
             f"hydra.sweep.dir={sweep_dir}"]
    parent = start(sweep, cwd=tmp_path)
    jobs = [sweep_dir / "0", sweep_dir / "1"]
    workers: dict[Path, int] = {}

    def pause_each_at_its_resume_point() -> bool:
        # Each worker is paused (SIGSTOP) as soon as it has a resume point, so neither ends before the kill.
        for job in jobs:
            if job not in workers and has_resume_point(job):
                workers[job] = json.loads((job / "run.json").read_text())["pid"]
                os.kill(workers[job], signal.SIGSTOP)
        return len(workers) == len(jobs)

    wait_for(pause_each_at_its_resume_point, timeout=90, what="both jobs to have a resume point")
    assert parent.pid not in workers.values() and [status_of(job) for job in jobs] == ["running", "running"]
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=TIMEOUT)
    for pid in workers.values():
        os.kill(pid, signal.SIGCONT)
    # Before, the workers trained on as orphans; now each stops at a step boundary as `interrupted`.
    wait_for(lambda: not any(alive(pid) for pid in workers.values()), timeout=30, what="the workers to stop")
    assert [status_of(job) for job in jobs] == ["interrupted", "interrupted"]
    again = runner(sweep, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    infos = [json.loads((job / "run.json").read_text()) for job in jobs]
    assert [(i["status"], i["resumes"]) for i in infos] == [("done", 1), ("done", 1)]
