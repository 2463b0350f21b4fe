"""`runner reproduce <sweep>` end to end: the re-run's jobs are matched to the originals by identity (config hash),
not by their override strings (the re-run adds its own `paths.cache_dir` and sweep dir), for every kind of sweep."""

from __future__ import annotations

import json
import shutil

import pytest

from scaleout_helpers import read_json, runner

SHORT = ["train.epochs=null", "train.steps=20", "train.eval_every=10"]
MLP = [*SHORT, "model.widths=[16]"]

# name -> the `runner train` arguments of a tiny sweep of that kind, and its number of jobs
SWEEPS = {
    "seeds": (["-m", "seed=0,1", *MLP], 2),
    "imp_sparsity_shares_levels": (["-m", "method=imp", "prune.rate=0.5", "sparsity=0.5,0.75", *MLP], 2),
    "multi_key": (["-m", "seed=0,1", "optim.lr=0.1,0.05", *MLP], 4),
    "preset": (["experiment=cnn_vs_mlp", "train.steps=10", "train.epochs=null", "train.eval_every=10"], 4),
}


def _sweep(kind: str, root) -> tuple:
    args, jobs = SWEEPS[kind]
    sweep = root / kind
    made = runner(["train", *args, f"hydra.sweep.dir={sweep}"], cwd=root)
    assert made.returncode == 0, made.stderr[-2000:]
    assert sorted(p.name for p in sweep.iterdir() if (p / "run.json").is_file()) == [str(i) for i in range(jobs)]
    return sweep, jobs


def _reproduce(sweep, out) -> tuple[int, str]:
    result = runner(["reproduce", str(sweep), "--out", str(out)], cwd=sweep.parent)
    return result.returncode, result.stdout


def _check_reproduced(kind: str, root) -> None:
    sweep, jobs = _sweep(kind, root)
    code, out = _reproduce(sweep, root / "again")
    assert code == 0, out[-3000:]
    assert out.rstrip().splitlines()[-1] == f"{jobs}/{jobs} job(s) reproduced"
    assert "made no job" not in out and "NOT REPRODUCED" not in out and "DIFFER" not in out
    for job in range(jobs):
        original, again = (read_json(d / str(job) / "run.json") for d in (sweep, root / "again"))
        assert again["config_hash"] == original["config_hash"]
        assert read_json(root / "again" / str(job) / "summary.json")["test_loss"] == \
            read_json(sweep / str(job) / "summary.json")["test_loss"]


@pytest.fixture(scope="module")
def seed_sweep(tmp_path_factory):
    return _sweep("seeds", tmp_path_factory.mktemp("reproduce-seeds"))


def test_a_seed_sweep_reproduces_job_by_job(seed_sweep):
    sweep, jobs = seed_sweep
    code, out = _reproduce(sweep, sweep.parent / "again")
    assert code == 0, out[-3000:]
    assert out.rstrip().splitlines()[-1] == "2/2 job(s) reproduced"
    assert out.count("10/10 metrics agree exactly") == 2
    # the re-run's overrides carry its own cache dir, and still each job pairs with its original
    assert "++paths.cache_dir=" in (sweep.parent / "again" / "0" / ".hydra" / "overrides.yaml").read_text()
    for job in ("0", "1"):
        assert read_json(sweep.parent / "again" / job / "run.json")["config_hash"] == \
            read_json(sweep / job / "run.json")["config_hash"]


def test_a_tampered_job_of_a_sweep_differs(seed_sweep):
    sweep, _ = seed_sweep
    tampered = sweep.parent / "tampered"
    shutil.copytree(sweep, tampered)
    summary_file = tampered / "1" / "summary.json"
    summary = read_json(summary_file)
    summary_file.write_text(json.dumps(dict(summary, test_accuracy=summary["test_accuracy"] + 0.125)))
    code, out = _reproduce(tampered, sweep.parent / "again-tampered")
    assert code == 1
    assert out.rstrip().splitlines()[-1] == "1/2 job(s) reproduced; some DIFFER"
    row = next(line for line in out.split("job 1:")[1].splitlines() if line.startswith("test_accuracy "))
    assert "DIFFERS" in row and "-0.125" in row
    assert "9/10 metrics agree exactly; DIFFER: test_accuracy" in out


def test_a_job_missing_from_the_re_run_is_named_with_its_identity(seed_sweep, monkeypatch):
    from overparam.cli.reproduce import SavedRun, pair_jobs

    sweep, _ = seed_sweep
    jobs = [SavedRun(sweep / name, trust=False) for name in ("0", "1")]
    assert [job.identity for job in jobs] == [read_json(sweep / n / "run.json")["config_hash"] for n in "01"]
    # listed in the other order, and one missing: pairing goes by identity, never by position or name
    pairs = pair_jobs(jobs, [sweep / "1"])
    assert [(job.path.name, new.name if new else None) for job, new in pairs] == [("0", None), ("1", "1")]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["imp_sparsity_shares_levels", "multi_key", "preset"])
def test_every_kind_of_sweep_reproduces(kind, tmp_path):
    _check_reproduced(kind, tmp_path)


def test_a_damaged_job_is_named_and_the_others_are_still_reproduced(seed_sweep):
    sweep, _ = seed_sweep
    damaged = sweep.parent / "damaged"
    shutil.copytree(sweep, damaged)
    (damaged / "0" / "summary.json").unlink()
    code, out = _reproduce(damaged, sweep.parent / "again-damaged")
    assert code == 1
    assert "job 0: NOT REPRODUCED: " in out and "has no summary.json" in out
    assert "10/10 metrics agree exactly" in out.split("job 1:")[1]
    assert out.rstrip().splitlines()[-1] == "1/2 job(s) reproduced; 1 NOT REPRODUCED (unreadable)"
