"""SIGKILL a dense run at several points (inside checkpoint writes too); the resumed run ends exactly as an uninterrupted one."""

import json
import os

import pytest

from scaleout_helpers import TINY, metrics_of, read_json, runner


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    out = runner(["train", *TINY, f"hydra.run.dir={root / 'run'}"], cwd=root)
    assert out.returncode == 0, out.stderr
    return root / "run"


def _metrics_rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _kill_and_resume(tmp_path, kill_spec):
    run_dir = tmp_path / "run"
    killed = runner(["train", *TINY, f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                    env={"OVERPARAM_KILL_IN_WRITE": kill_spec})
    assert killed.returncode == -9, f"not killed at {kill_spec}: {killed.stderr[-500:]}"
    assert read_json(run_dir / "run.json")["status"] == "running"
    resumed = runner(["train", *TINY, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    return run_dir, resumed


def _assert_same_as_reference(run_dir, reference, repeated_rows=False):
    assert metrics_of(read_json(run_dir / "summary.json")) == metrics_of(read_json(reference / "summary.json"))
    rows = _metrics_rows(run_dir)
    if repeated_rows:
        # Killed before the first checkpoint: the phase starts over and logs its first rows again
        # (fit only truncates metrics when it resumes from a checkpoint). The values are identical.
        latest = {(r["level"], r["step"], r["split"], r["metric"]): r for r in rows}
        rows = sorted(latest.values(), key=lambda r: rows.index(r))
    assert rows == _metrics_rows(reference)
    info = read_json(run_dir / "run.json")
    assert info["status"] == "done" and info["resumes"] == 1
    assert (run_dir / "checkpoints" / "model.safetensors").read_bytes() == \
        (reference / "checkpoints" / "model.safetensors").read_bytes()
    # resume points are dropped at the end and no temporary of a torn write is left behind
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["model.safetensors"]


def test_killed_after_a_checkpoint_rename_falls_back_to_the_previous_slot(tmp_path, reference):
    # The 3rd resume save (step 15) is renamed into place but run.json still records the slot's
    # previous content: the slot no longer matches its recorded hash, so the run resumes from
    # the other slot (step 10), says so in one line, and still ends with the same numbers.
    run_dir, resumed = _kill_and_resume(tmp_path, "after:resume_dense:3")
    warnings = [line for line in resumed.stderr.splitlines() if line.startswith("runner: checkpoint")]
    assert len(warnings) == 1, resumed.stderr
    assert "resume_dense.safetensors has" in warnings[0] and "resuming from" in warnings[0]
    assert warnings[0].endswith("resume_dense.alt.safetensors")
    assert read_json(run_dir / "run.json")["warnings"] == [warnings[0][len("runner: "):]]
    _assert_same_as_reference(run_dir, reference)


@pytest.mark.slow
@pytest.mark.parametrize("kill_spec", [
    "before:resume_dense:1",    # during the first checkpoint write: nothing to resume from
    "before:resume_dense:4",    # during a later checkpoint write, before its rename
    "after:run.json:4",         # between two steps, right after run.json recorded the 3rd checkpoint
    "before:model.safetensors:1",  # training finished, final weights being written
    "before:summary.json:1",    # everything written but the summary
])
def test_killed_anywhere_resumes_to_the_same_numbers(tmp_path, reference, kill_spec):
    run_dir, _ = _kill_and_resume(tmp_path, kill_spec)
    _assert_same_as_reference(run_dir, reference, repeated_rows=kill_spec == "before:resume_dense:1")


@pytest.mark.slow
def test_a_truncated_checkpoint_is_reported_and_the_previous_one_used(tmp_path, reference):
    run_dir = tmp_path / "run"
    killed = runner(["train", *TINY, f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                    env={"OVERPARAM_KILL_IN_WRITE": "before:resume_dense:5"})
    assert killed.returncode == -9
    info = read_json(run_dir / "run.json")
    newest = max(("resume_dense", "resume_dense.alt"), key=lambda n: info["checkpoints"][n]["sequence"])
    path = run_dir / "checkpoints" / f"{newest}.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    resumed = runner(["train", *TINY, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    warnings = [line for line in resumed.stderr.splitlines() if line.startswith("runner: checkpoint")]
    assert len(warnings) == 1 and "truncated" in warnings[0], resumed.stderr
    _assert_same_as_reference(run_dir, reference)


# Families beyond dense, each in its smallest useful form; a family is tested once its config exists.
# (overrides, which resume checkpoint write to kill after: the n-th of the run, any phase)
FAMILY_RUNS = {
    # the teacher is trained and saved first, then the student phase writes 2 resume points
    "kd": (["method=kd"], 2),
    "sms": (["method=sms", "sparsity=0.5", "sms.phases=2", "sms.copies=2"], 3),
    # two IMP levels at prune.rate 0.2; the shared level cache off, or the second run would reuse
    # the reference run's levels instead of training (and being killed)
    "imp": (["method=imp", "sparsity=0.36", "prune.cache=false"], 3),
    # killed in the 2nd phase (pruned / finetune / seed_1), after the 1st phase's result was saved
    "nm": (["method=nm"], 3),
    "channel": (["method=channel", "sparsity=0.5"], 3),
    "lmc": (["method=lmc", "lmc.seeds=[0,1]", "lmc.points=3"], 3),
    # killed in the training on the kept examples, after the scores were saved
    "data_diet": (["method=data_diet"], 1),
}
FAMILY_SHORT = ["train.epochs=null", "train.steps=10", "train.eval_every=5", "train.checkpoint_every=5",
                "model.widths=[16]"]


def _landed(method):
    from overparam.cli.paths import config_dir

    return (config_dir() / "method" / f"{method}.yaml").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("method", [m for m in FAMILY_RUNS if _landed(m)])
def test_other_families_killed_mid_phase_resume_to_the_same_numbers(tmp_path, method):
    overrides, nth_write = FAMILY_RUNS[method]
    args = [*overrides, *FAMILY_SHORT]
    reference = runner(["train", *args, f"hydra.run.dir={tmp_path / 'ref'}"], cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr[-2000:]
    run_dir = tmp_path / "run"
    # SIGKILL right after the n-th resume checkpoint of any phase is renamed into place (before run.json
    # records it), so the resumed run also has to fall back to that phase's previous slot.
    killed = runner(["train", *args, f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                    env={"OVERPARAM_KILL_IN_WRITE": f"after:resume_:{nth_write}"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = runner(["train", *args, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ours, theirs = read_json(run_dir / "summary.json"), read_json(tmp_path / "ref" / "summary.json")
    assert metrics_of(ours) == metrics_of(theirs)
    assert read_json(run_dir / "run.json")["resumes"] == 1


@pytest.mark.parametrize("signal_name, code", [("SIGTERM", 143), pytest.param("SIGINT", 130, marks=pytest.mark.slow)])
def test_a_signal_leaves_interrupted_and_prints_the_command_that_resumes(tmp_path, reference, signal_name, code):
    import shlex

    run_dir = tmp_path / "run"
    # The signal arrives while the 3rd resume point (step 15) is being saved: the step finishes, run.json
    # records the save, and the run stops there.
    stopped = runner(["train", *TINY, f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                     env={"OVERPARAM_KILL_IN_WRITE": f"after:resume_dense:3:{signal_name}"})
    assert stopped.returncode == code, stopped.stderr[-800:]
    info = read_json(run_dir / "run.json")
    assert info["status"] == "interrupted" and info["reason"].startswith(signal_name)
    assert max(r["step"] for r in _metrics_rows(run_dir)) == 15
    lines = stopped.stderr.strip().splitlines()
    assert f"interrupted by {signal_name}" in lines[-2]
    command = shlex.split(lines[-1])
    assert command[:2] == ["runner", "train"] and command[-1] == f"hydra.run.dir={run_dir.resolve()}"
    assert command[2:-1] == TINY
    resumed = runner(command[1:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_as_reference(run_dir, reference)


IMP = [*TINY, "method=imp", "sparsity=0.5", "prune.rate=0.5", "prune.cache=false"]


@pytest.mark.slow
def test_imp_killed_after_a_slot_rename_resumes_from_the_other_slot_with_every_metric_row(tmp_path):
    """Level 1's 3rd resume save (step 15, first slot again) is renamed but run.json not updated: only the
    `.alt` slot (step 10) is intact. The level resumes from it and keeps exactly its rows up to step 10."""
    reference = tmp_path / "reference"
    assert runner(["train", *IMP, f"hydra.run.dir={reference}"], cwd=tmp_path).returncode == 0
    run_dir = tmp_path / "run"
    killed = runner(["train", *IMP, f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                    env={"OVERPARAM_KILL_IN_WRITE": "after:resume_level_1:3"})
    assert killed.returncode == -9, killed.stderr[-500:]
    (run_dir / "level_1").mkdir(exist_ok=True)
    (run_dir / "level_1" / ".model.safetensors.x1y2.tmp").write_bytes(b"torn")  # a killed level write
    resumed = runner(["train", *IMP, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr and "resume_level_1.alt.safetensors" in resumed.stderr
    assert _metrics_rows(run_dir) == _metrics_rows(reference)
    assert metrics_of(read_json(run_dir / "summary.json")) == metrics_of(read_json(reference / "summary.json"))
    assert not list(run_dir.rglob("*.tmp"))


# Stands in for submitit's job process: its USR2 handler (checkpoint, `scontrol requeue`, exit) is installed
# before the run starts and records what run.json said when the signal reached it.
_SUBMITIT_LIKE_JOB = """
import json, os, signal, sys
from pathlib import Path
run_dir = Path(sys.argv[1])
def checkpoint_and_requeue(signum, frame):
    info = json.loads((run_dir / "run.json").read_text())
    Path(os.environ["HANDED_OVER"]).write_text(json.dumps({"signal": signum, "status": info["status"]}))
    sys.exit(-1)
signal.signal(signal.SIGUSR2, checkpoint_and_requeue)
from overparam.cli.main import main
sys.exit(main(["train", *sys.argv[2:], f"hydra.run.dir={run_dir}"]))
"""


def test_a_submitit_preemption_signal_stops_at_a_resume_point_then_goes_to_submitit(tmp_path, reference):
    import signal
    import subprocess
    import sys

    run_dir, handed_over = tmp_path / "run", tmp_path / "handed_over.json"
    env = {**os.environ, "SUBMITIT_FOLDER": str(tmp_path / ".submitit"), "HANDED_OVER": str(handed_over),
           "OVERPARAM_KILL_IN_WRITE": "after:resume_dense:3:SIGUSR2"}
    job = subprocess.run([sys.executable, "-c", _SUBMITIT_LIKE_JOB, str(run_dir), *TINY], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert job.returncode == 255, job.stderr[-800:]   # submitit's sys.exit(-1), not a crash
    # submitit got the signal only after the run had stopped at step 15 and recorded itself interrupted
    assert read_json(handed_over) == {"signal": int(signal.SIGUSR2), "status": "interrupted"}
    info = read_json(run_dir / "run.json")
    assert info["status"] == "interrupted" and info["reason"].startswith("SIGUSR2; submitit requeues the job")
    assert [(i["signal"], i["requeued"]) for i in info["interruptions"]] == [("SIGUSR2", True)]
    assert max(r["step"] for r in _metrics_rows(run_dir)) == 15
    assert "interrupted by SIGUSR2" in job.stderr
    # what the requeued job does: run the same job again in the same directory
    resumed = runner(["train", *TINY, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_as_reference(run_dir, reference)
