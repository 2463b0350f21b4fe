"""Sweeps through the parallel launchers: failure isolation, per-job threads, complete run directories."""

import pytest

from scaleout_helpers import read_json, runner

SHORT = ["train.epochs=null", "train.steps=4", "train.eval_every=2", "model.widths=[16]"]


def _jobs(out):
    return sorted((out / "multirun").glob("*/*/[0-9]*"), key=lambda p: int(p.name))


def test_a_diverging_job_fails_alone_and_the_joblib_sweep_exits_1_with_a_summary(tmp_path):
    out = tmp_path / "outputs"
    # job 0: normal lr; job 1: lr 1e30, whose loss becomes NaN (stop_on_nonfinite marks it failed)
    result = runner(["train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optim.lr=0.1,1e30",
                     *SHORT, f"paths.output_dir={out}"], cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    jobs = _jobs(out)
    assert [job.name for job in jobs] == ["0", "1"]
    good, bad = (read_json(job / "run.json") for job in jobs)
    assert good["status"] == "done" and (jobs[0] / "summary.json").is_file()
    assert bad["status"] == "failed" and bad["reason"].startswith("FloatingPointError: training loss became nan")
    summary = result.stderr[result.stderr.index("runner train: 1 job(s) failed:"):].splitlines()
    assert summary[1].strip() == f"{jobs[1]}: {bad['reason']}"
    # two jobs at once on this machine: each gets half of the cores
    from overparam.cli.launch import available_cores

    assert good["environment"]["threads"] == max(1, available_cores() // 2)


@pytest.mark.slow
def test_a_submitit_local_sweep_completes_every_job(tmp_path):
    out = tmp_path / "outputs"
    result = runner(["train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "seed=0,1",
                     *SHORT, f"paths.output_dir={out}"], cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = _jobs(out)
    assert [job.name for job in jobs] == ["0", "1"]
    for job in jobs:
        assert read_json(job / "run.json")["status"] == "done"
        assert (job / "summary.json").is_file() and (job / "checkpoints" / "model.safetensors").is_file()
    assert read_json(jobs[0] / "summary.json")["test_accuracy"] != read_json(jobs[1] / "summary.json")["test_accuracy"]


@pytest.mark.slow
def test_two_runs_started_together_get_two_directories(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "outputs"
    # Both resolve the same <date>/<time> name when started within one second; pin it to be sure.
    run_dir = "hydra.run.dir=${unique_dir:" + str(out / "same-second") + "}"
    procs = [subprocess.Popen([sys.executable, "-m", "overparam.cli.main", "train", *SHORT, run_dir],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for proc in procs:
        proc.communicate(timeout=300)
        assert proc.returncode == 0
    dirs = sorted(p.name for p in out.iterdir())
    assert dirs == ["same-second", "same-second-1"]
    for name in dirs:
        assert read_json(out / name / "run.json")["status"] == "done"
        assert read_json(out / name / "run.json")["resumes"] == 0


@pytest.mark.slow
def test_optuna_sweeper_runs_through_joblib(tmp_path):
    out = tmp_path / "outputs"
    result = runner(["train", "-m", "hydra/sweeper=optuna", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                     "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", "hydra.sweeper.direction=maximize",
                     "optim.lr=interval(0.01,0.2)", *SHORT, f"paths.output_dir={out}"], cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = _jobs(out)
    assert len(jobs) == 2 and all(read_json(job / "run.json")["status"] == "done" for job in jobs)
    assert (jobs[0].parent / "optimization_results.yaml").is_file()


def test_a_diverging_single_run_ends_with_one_line_and_exit_1(tmp_path):
    run_dir = tmp_path / "run"
    result = runner(["train", "optim.lr=1e30", *SHORT, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("runner train: the run diverged: training loss became nan") and str(run_dir) in last
    info = read_json(run_dir / "run.json")
    assert info["status"] == "failed" and info["reason"].startswith("FloatingPointError: training loss became nan")
