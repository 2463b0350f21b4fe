"""A 4-job sweep through hydra/launcher=submitit_slurm on a real one-node Slurm cluster started here.

Marked `slurm` (not in the default run; CI runs `pytest -m slurm`). Installs Debian's slurm-wlm and
munge when missing, writes a slurm.conf for this host into a temporary folder, starts munged,
slurmctld and slurmd, and stops whatever it started when the test ends.
"""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from scaleout_helpers import TINY, read_json, runner

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
