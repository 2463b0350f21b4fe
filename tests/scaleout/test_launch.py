"""Unique run directories, per-job threads, the sweep failure scan, and launcher/sweeper composition."""

import json
import subprocess
import sys
import textwrap

import pytest

from overparam.cli.launch import claim_unique_dir, failed_jobs, job_threads
from overparam.cli.paths import config_dir

CLAIM = textwrap.dedent("""
    import sys, time
    from overparam.cli.launch import claim_unique_dir
    time.sleep(max(0.0, float(sys.argv[2]) - time.time()))   # all start claiming at the same instant
    print(claim_unique_dir(sys.argv[1]))
""")


def test_runs_started_in_the_same_second_get_distinct_directories(tmp_path):
    import time

    base = tmp_path / "2026-11-23" / "10-00-00"
    start = time.time() + 3.0
    jobs = [subprocess.Popen([sys.executable, "-c", CLAIM, str(base), str(start)], stdout=subprocess.PIPE, text=True)
            for _ in range(6)]
    claimed = sorted(job.communicate(timeout=60)[0].strip() for job in jobs)
    expected = sorted([str(base)] + [f"{base}-{i}" for i in range(1, 6)])
    assert claimed == expected
    assert claim_unique_dir(str(base)) == f"{base}-6"


def test_job_threads_follow_the_parallel_launcher(monkeypatch):
    monkeypatch.setattr("overparam.cli.launch.available_cores", lambda: 16)
    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert job_threads({"threads": None}, {"_target_": joblib, "n_jobs": 4}) == 4
    assert job_threads({"threads": None}, {"_target_": joblib, "n_jobs": -1}) == 1
    assert job_threads({"threads": None}, {"_target_": joblib, "n_jobs": -5}) == 1   # 12 jobs: 16 // 12
    assert job_threads({"threads": None}, {"_target_": joblib, "n_jobs": 32}) == 1
    assert job_threads({"threads": 3}, {"_target_": joblib, "n_jobs": 4}) == 3      # explicit wins
    slurm = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert job_threads({"threads": None}, {"_target_": slurm, "cpus_per_task": 8}) == 8
    assert job_threads({"threads": None}, {"_target_": slurm, "cpus_per_task": None}) == 1
    basic = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
    assert job_threads({"threads": None}, {"_target_": basic}) is None
    assert job_threads({"threads": None}, None) is None


def test_failure_scan_lists_failed_and_unfinished_jobs(tmp_path):
    for job, info in {"0": {"status": "done"}, "1": {"status": "failed", "reason": "FloatingPointError: nan"},
                      "2": {"status": "running"}}.items():
        (tmp_path / job).mkdir()
        (tmp_path / job / "run.json").write_text(json.dumps(info))
    failures = failed_jobs(tmp_path)
    assert [where.rsplit("/", 1)[1] for where, _ in failures] == ["1", "2"]
    assert failures[0][1] == "FloatingPointError: nan"
    assert failures[1][1].startswith("did not finish (status running)")


def _compose_hydra(overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose(config_name="train", overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


@pytest.mark.parametrize("launcher", ["joblib", "submitit_slurm", "submitit_local"])
def test_optuna_sweeper_composes_with_each_launcher(launcher):
    cfg = _compose_hydra([f"hydra/launcher={launcher}", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=4",
                          "hydra.launcher.timeout_min=5" if launcher != "joblib" else "hydra.launcher.n_jobs=2"])
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.sweeper.n_trials == 4
    expected = {"joblib": "JoblibLauncher", "submitit_slurm": "SlurmLauncher", "submitit_local": "LocalLauncher"}
    assert cfg.hydra.launcher._target_.endswith(expected[launcher])
    if launcher == "submitit_slurm":
        assert cfg.hydra.launcher.timeout_min == 5 and cfg.hydra.launcher.array_parallelism == 256
        assert "partition" in cfg.hydra.launcher and "gpus_per_node" in cfg.hydra.launcher


def test_every_search_preset_composes_with_the_parallel_launchers():
    presets = sorted(p.stem for p in (config_dir() / "hparams_search").glob("*.yaml"))
    for preset in presets:
        for launcher in ("joblib", "submitit_slurm"):
            cfg = _compose_hydra([f"hparams_search={preset}", f"hydra/launcher={launcher}"])
            assert cfg.hydra.launcher._target_.rsplit(".", 1)[1] in ("JoblibLauncher", "SlurmLauncher")
