"""A full disk and read-only folders: one line naming the path, the run `interrupted` (never `running`), resumable.

The run dir lives on a small tmpfs (mounting one needs root; the tests skip with the reason otherwise).
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from faults_helpers import (MEDIUM, TIMEOUT, TINY, digest, has_resume_point, lines, remount, runner, start, status_of,
                            wait_for)

from tiny_runs import tiny

# A 256-unit MLP: a resume point (weights and momentum) is ~105 KB. A 192 KB disk holds the start (~30 KB)
# and the first resume point (step 4), not the second (step 8): the disk is full mid-run.
WIDE = tiny(12, "train.checkpoint_every=4", "hardware.threads=1", eval_every=6, width=256)


def test_a_full_disk_leaves_the_run_interrupted_and_it_resumes(small_mount):
    disk = small_mount("192k")
    run = disk / "run"
    command = ["train", *WIDE, f"hydra.run.dir={run}"]
    full = runner(command, cwd=disk.parent)
    assert full.returncode == 1, full.stderr
    err = lines(full.stderr)
    assert len(err) == 1 and "Traceback" not in full.stderr, full.stderr
    assert re.search(rf"no space left on device writing {re.escape(str(run))}/\S+; {re.escape(str(run))} is marked "
                     r"interrupted; .*resume with: runner train ", err[0]), err[0]
    assert status_of(run) == "interrupted"
    # Read-only now: the resume is refused in one line before it writes anything; the run stays interrupted.
    remount(disk, "ro")
    before = digest(disk)
    refused = runner(command, cwd=disk.parent)
    assert refused.returncode == 2 and len(lines(refused.stderr)) == 1, refused.stderr
    assert re.search(rf"read-only file system writing {re.escape(str(run))}/\S+; nothing was started",
                     refused.stderr), refused.stderr
    assert digest(disk) == before and status_of(run) == "interrupted"
    # Room again: the same command resumes it to the end, each evaluation's metrics once.
    remount(disk, "rw,size=8m")
    resumed = runner(command, cwd=disk.parent)
    assert resumed.returncode == 0, resumed.stderr
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "done" and info["resumes"] == 1
    keys = [(r["step"], r["split"], r["metric"]) for r in map(json.loads, (run / "metrics.jsonl").open())]
    assert len(keys) == len(set(keys)) and sorted({k[0] for k in keys}) == [0, 6, 12]
    # A finished run on a read-only disk: its command again is `already done`.
    remount(disk, "ro")
    again = runner(command, cwd=disk.parent)
    assert again.returncode == 0 and "already done" in again.stdout and lines(again.stderr) == [], again.stderr


def test_a_run_dir_under_a_read_only_folder_is_refused_before_anything(small_mount, tmp_path):
    disk = small_mount("64k")
    remount(disk, "ro")
    before = digest(tmp_path)
    refused = runner(["train", *TINY, f"hydra.run.dir={disk / 'new' / 'run'}"], cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr
    err = lines(refused.stderr)
    assert len(err) == 1 and f"cannot create {disk / 'new' / 'run'}: {disk} is not writable" in err[0], err
    assert digest(tmp_path) == before


def test_a_folder_turned_read_only_mid_run_leaves_it_interrupted_and_it_resumes(tmp_path):
    """checkpoints/ becomes read-only (a bind mount) while the run trains: one line naming the file, `interrupted`."""
    import signal

    run = tmp_path / "run"
    command = ["train", *MEDIUM, f"hydra.run.dir={run}"]
    process = start(command, cwd=tmp_path)
    wait_for(lambda: has_resume_point(run) or process.poll() is not None, what="a resume point")
    process.send_signal(signal.SIGSTOP)
    folder = run / "checkpoints"
    bound = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, text=True)
    if bound.returncode != 0:
        process.kill()
        pytest.skip(f"cannot bind-mount here ({bound.stderr.strip()}): the read-only folder route needs it")
    try:
        remount(folder, "bind,ro")
        process.send_signal(signal.SIGCONT)
        _, err = process.communicate(timeout=TIMEOUT)
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
    assert process.returncode == 1, err
    assert len(lines(err)) == 1 and "Traceback" not in err, err
    assert re.search(rf"read-only file system writing {re.escape(str(folder))}/\S+; {re.escape(str(run))} is marked "
                     r"interrupted", err), err
    assert status_of(run) == "interrupted"
    resumed = runner(command, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "done" and info["resumes"] == 1
