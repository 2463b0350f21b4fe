"""A 4-job sweep through hydra/launcher=submitit_slurm on a real one-node Slurm cluster started here, and
a pre-empted job that submitit requeues and that resumes to the numbers of an uninterrupted run.

Marked `slurm` (not in the default run; CI runs `pytest -m slurm`). Installs Debian's slurm-wlm and
munge when missing, writes a slurm.conf for this host into a temporary folder, starts munged,
slurmctld and slurmd, and stops whatever it started when the test ends.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scaleout_helpers import TINY, metrics_of, read_json, runner

# munged, slurmctld, slurmd and runuser live in the system folders, which a plain user's PATH may lack.
for folder in ("/usr/sbin", "/sbin"):
    if folder not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.environ.get("PATH", "") + os.pathsep + folder

pytestmark = pytest.mark.slurm


def _sh(command: str, env=None, check=True, timeout=300) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"`{command}` failed ({result.returncode}): {result.stderr.strip()[-1000:]}")
    return result


def _install() -> None:
    if shutil.which("slurmctld") and shutil.which("munged"):
        return
    _sh("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge", timeout=900)


def _munge_works() -> bool:
    return _sh("munge -n | unmunge", check=False).returncode == 0


def _start_munge() -> int | None:
    """Start munged unless one already answers; returns the pid of the one started here."""
    if _munge_works():
        return None
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        key.write_bytes(os.urandom(1024))
    _sh("mkdir -p /run/munge /var/log/munge /var/lib/munge && "
        "chown -R munge:munge /etc/munge /var/log/munge /run/munge /var/lib/munge && "
        "chmod 400 /etc/munge/munge.key && runuser -u munge -- munged")
    for _ in range(50):
        if _munge_works():
            return int(Path("/run/munge/munged.pid").read_text())
        time.sleep(0.2)
    raise RuntimeError("munged started but `munge -n | unmunge` does not succeed")


def _slurm_conf(folder: Path) -> Path:
    host = socket.gethostname().split(".")[0]
    memory_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 - 1024
    for sub in ("ctld", "d", "log"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    conf = folder / "slurm.conf"
    conf.write_text(f"""ClusterName=overparamtest
SlurmctldHost={host}
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
StateSaveLocation={folder}/ctld
SlurmdSpoolDir={folder}/d
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/log/slurmctld.log
SlurmdLogFile={folder}/log/slurmd.log
NodeName={host} CPUs={os.cpu_count()} RealMemory={memory_mib} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    return conf


@pytest.fixture
def slurm_cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("starting munged/slurmctld/slurmd here needs root (SlurmUser=root, munge's key)")
    _install()
    folder = tmp_path_factory.mktemp("slurm")
    conf = _slurm_conf(folder)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    munged = _start_munge()
    try:
        _sh(f"slurmctld -f {conf}", env=env)
        _sh(f"slurmd -f {conf}", env=env)
        deadline = time.time() + 60
        while "idle" not in _sh("sinfo -h -o %T", env=env, check=False).stdout:
            if time.time() > deadline:
                logs = (folder / "log" / "slurmctld.log").read_text()[-1500:]
                raise RuntimeError(f"the Slurm node never became idle; slurmctld.log ends:\n{logs}")
            time.sleep(0.5)
        yield env
    finally:
        # A sweep returns once each job wrote its result, while Slurm may still be ending the job:
        # let it end (or cancel it) before stopping the daemons, so no job step outlives them.
        deadline = time.time() + 30
        while _sh("squeue -h", env=env, check=False).stdout.strip() and time.time() < deadline:
            time.sleep(0.5)
        _sh("scancel --user root", env=env, check=False)
        _sh("scontrol shutdown", env=env, check=False)
        for pid_file in ("slurmd.pid", "slurmctld.pid"):
            pid_path = folder / pid_file
            if pid_path.exists():
                _sh(f"kill {pid_path.read_text().strip()}", check=False)
        if munged is not None:
            _sh(f"kill {munged}", check=False)


def test_a_four_job_sweep_runs_to_completion_on_slurm(tmp_path, slurm_cluster):
    out = tmp_path / "outputs"
    result = runner(["train", "-m", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug",
                     "hydra.launcher.timeout_min=10", "seed=0,1,2,3", *TINY, f"paths.output_dir={out}"],
                    cwd=tmp_path, env=slurm_cluster, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = sorted((out / "multirun").glob("*/*/[0-9]"))
    assert [job.name for job in jobs] == ["0", "1", "2", "3"]
    accuracies = set()
    for job in jobs:
        info = read_json(job / "run.json")
        assert info["status"] == "done", (job, info.get("reason"))
        assert (job / "checkpoints" / "model.safetensors").is_file()
        summary = read_json(job / "summary.json")
        assert 0.0 < summary["test_accuracy"] <= 1.0
        accuracies.add(summary["test_accuracy"])
        assert info["environment"]["threads"] == 1   # cpus_per_task unset: Slurm's one core
    assert len(accuracies) > 1, "four seeds gave one result: the jobs did not get their own overrides"
    submitit_logs = list((jobs[0].parent / ".submitit").glob("*/*_log.out"))
    assert len(submitit_logs) == 4, "each job should have run as its own Slurm job"


# Long enough (about 10 s of training) for the pre-emption signal to reach the job mid-run.
LONG = ["train.epochs=null", "train.steps=1200", "train.eval_every=50", "train.checkpoint_every=50",
        "optim.name=adam", "optim.lr=0.01", "model.widths=[32]"]


def _metric_steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.endswith("}")]


def test_a_preempted_job_is_requeued_by_submitit_and_resumes_to_the_same_numbers(tmp_path, slurm_cluster):
    # timeout_min=20: submitit calls a USR2 in the first 10 minutes a pre-emption (under 10 min, a time-out).
    reference = tmp_path / "reference"
    done = runner(["train", *LONG, "hardware.threads=1", f"hydra.run.dir={reference}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]

    out = tmp_path / "outputs"
    sweep = subprocess.Popen(
        [sys.executable, "-m", "overparam.cli.main", "train", "-m", "hydra/launcher=submitit_slurm",
         "hydra.launcher.partition=debug", "hydra.launcher.timeout_min=20", "seed=0", *LONG,
         f"paths.output_dir={out}"],
        cwd=tmp_path, env={**os.environ, **slurm_cluster}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        job_dir = None
        while job_dir is None or max(_metric_steps(job_dir), default=0) < 100:
            assert sweep.poll() is None, f"the sweep ended before the job was pre-empted: {sweep.communicate()}"
            assert time.time() < deadline, "the Slurm job never reached step 100"
            job_dir = next(iter((out / "multirun").glob("*/*/0")), None) if (out / "multirun").is_dir() else None
            time.sleep(0.2)
        job_id = _sh("squeue -h -o %i", env=slurm_cluster).stdout.split()[0]
        # What Slurm sends before a time limit (sbatch --signal=USR2@...) or a scheduler on pre-emption.
        _sh(f"scancel --signal=USR2 {job_id}", env=slurm_cluster)
        # Slurm holds a requeued job back (BeginTime about two minutes on): once the job is pending again,
        # let it start now instead.
        while "JobState=PENDING" not in (state := _sh(f"scontrol show job {job_id}", env=slurm_cluster).stdout):
            assert sweep.poll() is None and time.time() < deadline + 60, f"the job was not requeued: {state}"
            time.sleep(0.2)
        _sh(f"scontrol update JobId={job_id} StartTime=now", env=slurm_cluster)
        stdout, stderr = sweep.communicate(timeout=240)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.communicate()
    assert sweep.returncode == 0, stderr[-3000:]

    info = read_json(job_dir / "run.json")
    assert info["status"] == "done" and info["resumes"] == 1, info
    assert [(i["signal"], i["requeued"]) for i in info["interruptions"]] == [("SIGUSR2", True)]
    restarts = _sh(f"scontrol show job {job_id}", env=slurm_cluster).stdout
    assert "Restarts=1" in restarts, restarts   # Slurm ran the same job a second time
    # The requeued job resumed from the last resume point in the same directory: the same numbers, rows, weights.
    assert metrics_of(read_json(job_dir / "summary.json")) == metrics_of(read_json(reference / "summary.json"))
    assert [json.loads(line) for line in (job_dir / "metrics.jsonl").read_text().splitlines()] == \
        [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert (job_dir / "checkpoints" / "model.safetensors").read_bytes() == \
        (reference / "checkpoints" / "model.safetensors").read_bytes()
