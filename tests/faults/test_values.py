"""Values are checked before use: on the command line, in a saved run's config, in a checkpoint's skeleton and
in this machine's kernel calibration file.

Command-line and saved-value rows run `runner` in this process (each row is one refusal, no training); each
asserts exit 2, one stderr line naming the value, no run directory created (not even a `failed` one) and every
byte of the scene as it was. The calibration rows run real subprocesses: a bad file is measured again, replaced
by one rename and named in one warning line, and the run goes on.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fault_rows import SHORT, TINY, digest, finished_run, runner  # noqa: E402

from overparam.cli.main import main as runner_here  # noqa: E402


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    return finished_run(tmp_path_factory.mktemp("values"))


def _run(args: list[str], capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    try:
        code = runner_here(args)
    except SystemExit as exc:
        code = exc.code
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def _refused(args: list[str], capsys, contains: str) -> None:
    code, lines = _run(args, capsys)
    assert code == 2 and len(lines) == 1, (code, lines[-6:])
    assert lines[0].startswith(f"runner {args[0]}: error: ") and contains in lines[0], lines[0]


# --- the command line ------------------------------------------------------------------------------------
COMMAND_LINE = [
    ("seed=18446744073709551616", "seed=18446744073709551616 is out of range; allowed: [0, 9223372036854775807]"),
    ("seed=-1", "seed=-1 is out of range"),
    ("dataset.split_seed=9223372036854775808", "dataset.split_seed=9223372036854775808 is out of range"),
    ("model.widths=[-3]", "model.widths=[-3] must be a list of positive integers"),
    ("model.widths=[]", "model.widths=[] must be a list of positive integers"),
    ("model.widths=[0]", "model.widths=[0] must be a list of positive integers"),
    ("model.widths=[16,2.5]", "model.widths=[16, 2.5] must be a list of positive integers"),
    ("optim.milestones=[2.0,-1]", "optim.milestones=[2.0, -1] must be a list of fractions of training in (0, 1]"),
    ("optim.milestones=[0.75,0.5]", "optim.milestones=[0.75, 0.5] must increase"),
]


@pytest.mark.parametrize("override,message", COMMAND_LINE, ids=[o for o, _ in COMMAND_LINE])
def test_a_bad_value_is_refused_before_a_run_dir_exists(tmp_path, capsys, override, message):
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("keep\n")
    before = digest(tmp_path)
    _refused(["train", *TINY, override, f"hydra.run.dir={tmp_path / 'new'}"], capsys, message)
    assert digest(tmp_path) == before and not (tmp_path / "new").exists()


def test_good_values_still_pass(tmp_path):
    from overparam.cli.train import compose_checked

    config = compose_checked(["seed=9223372036854775807", "model.widths=[3,1]", "optim.schedule=step",
                              "optim.milestones=[0.5,1.0]"])
    assert config["seed"] == 2**63 - 1 and config["optim"]["milestones"] == [0.5, 1.0]


# --- a saved run's config and weights --------------------------------------------------------------------
def set_seed(text):
    def plant(run: Path):
        path = run / ".hydra" / "config.yaml"
        path.write_text("\n".join(f"seed: {text}" if line.startswith("seed:") else line
                                  for line in path.read_text().splitlines()) + "\n")
    plant.__name__ = f"seed_{text}"
    return plant


def skeleton(kind):
    """model.safetensors with its skeleton metadata made to name a missing tensor, be the wrong type, be a list,
    or nest 5,000 deep: what load_state used to meet with KeyError, TypeError or RecursionError."""
    def plant(run: Path):
        from safetensors import safe_open
        from safetensors.torch import save

        path = run / "checkpoints" / "model.safetensors"
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata()
            tensors = {k: handle.get_tensor(k).clone() for k in handle.keys()}
        tree = json.loads(meta["overparam.skeleton"])
        if kind == "missing":
            tree["__dict__"][0][1] = {"__tensor__": "nope"}
        meta["overparam.skeleton"] = {"missing": json.dumps(tree), "type": '{"__dict__": 5}', "list": "[1, 2]",
                                      "deep": "[" * 5000 + "]" * 5000}[kind]
        data = save(tensors, metadata=meta)
        path.unlink()
        path.write_bytes(data)
    plant.__name__ = f"skeleton_{kind}"
    return plant


SEEDS = [set_seed(v) for v in (".inf", "abc", "[1]", "10**30", "1" + "0" * 30)]
SKELETONS = [skeleton(k) for k in ("missing", "type", "list", "deep")]
SAVED_ROUTES = {
    "from": ["train", "method=finetune", "from={evil}", *SHORT, "paths.output_dir={out}"],
    "reproduce": ["reproduce", "{evil}", "--out", "{out}/new"],
    "export": ["export", "{evil}", "--to", "{out}/w.safetensors"],
    "teacher.from": ["train", "method=kd", "teacher.from={evil}", *SHORT, "paths.output_dir={out}"],
}
SAVED = [
    *[(route, plant, "seed=") for plant in SEEDS for route in ("from", "reproduce", "export")],
    *[(route, plant, "corrupt checkpoint") for plant in SKELETONS for route in ("from", "export")],
    ("teacher.from", skeleton("missing"), "names a tensor it does not hold"),
]


@pytest.mark.parametrize("route,plant,message", SAVED, ids=[f"{r}-{p.__name__}" for r, p, _ in SAVED])
def test_a_bad_saved_value_is_refused_before_anything_is_written(good_run, tmp_path, capsys, route, plant, message):
    evil, out = tmp_path / "runs" / "evil", tmp_path / "out"
    shutil.copytree(good_run, evil)
    plant(evil)
    before = digest(tmp_path / "runs")
    _refused([a.format(evil=evil, out=out) for a in SAVED_ROUTES[route]], capsys, message)
    assert digest(tmp_path / "runs") == before
    assert not out.exists(), f"wrote {sorted(out.rglob('*'))}"  # no run directory, `failed` or otherwise


def test_export_never_writes_where_a_foreign_run_kept_its_data(good_run, tmp_path):
    """The saved paths.data_dir is where the run ran: export reads this machine's data folder and writes only --to."""
    run = tmp_path / "runs" / "foreign"
    shutil.copytree(good_run, run)
    config = run / ".hydra" / "config.yaml"
    elsewhere = tmp_path / "their-data"
    config.write_text("\n".join(f"  data_dir: {elsewhere}" if line.startswith("  data_dir:") else line
                                for line in config.read_text().splitlines()) + "\n")
    assert str(elsewhere) in config.read_text()
    before = digest(tmp_path / "runs")
    result = runner(["export", str(run), "--to", str(tmp_path / "w.safetensors")], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-600:]
    assert not os.path.lexists(elsewhere) and digest(tmp_path / "runs") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs", "w.json", "w.safetensors"]


# --- this machine's kernel calibration -------------------------------------------------------------------
BAD_CALIBRATIONS = {
    "wrong types": json.dumps({"version": 1, "entries": [{"op": "linear", "device": "cpu", "dtype": "float32",
                                                          "implementation": "native", "mode": "train", "shape": "x",
                                                          "batch": "many", "in_features": 3, "out_features": 4,
                                                          "sparse_from": "abc"}]}),
    "entries not a list": '{"version": 1, "entries": "x"}',
    "not an object": "[1]",
    "fifo": None,
}


def test_a_bad_calibration_file_is_measured_again_and_replaced(tmp_path):
    """The issue's case end to end: a file with wrong value types made every `hardware.kernel=auto` run fail."""
    from overparam.hardware import calibration_problem

    env = {"OVERPARAM_CALIBRATE": "1", "OVERPARAM_CACHE_DIR": str(tmp_path / "cache")}
    args = ["train", *TINY, "hardware.kernel=auto", "method=imp", "sparsity=0.5"]
    first = runner([*args, f"hydra.run.dir={tmp_path / 'first'}"], cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr[-600:]
    [path] = (tmp_path / "cache" / "hardware").glob("*.json")
    path.write_text(BAD_CALIBRATIONS["wrong types"])
    result = runner([*args, f"hydra.run.dir={tmp_path / 'again'}"], cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-600:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(path) in warnings[0] and "measuring this machine again" in warnings[0], warnings
    assert calibration_problem(json.loads(path.read_text())) is None
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # replaced by a rename, no temporary left


@pytest.mark.parametrize("name", list(BAD_CALIBRATIONS))
def test_every_kind_of_bad_calibration_file_is_replaced_with_one_warning(tmp_path, monkeypatch, capsys, name):
    """Each kind of bad file (the measuring itself replaced by a fixed result: the decision is what is tested)."""
    from overparam import hardware
    from overparam.kernels import calibrate

    monkeypatch.setenv("OVERPARAM_CACHE_DIR", str(tmp_path))
    measured = json.loads(BAD_CALIBRATIONS["wrong types"])
    measured["entries"][0].update(batch=128, sparse_from=0.9)
    monkeypatch.setattr(calibrate, "measure", lambda: measured)
    path = hardware.calibration_path("cpu", 3)
    path.parent.mkdir(parents=True)
    os.mkfifo(path) if BAD_CALIBRATIONS[name] is None else path.write_text(BAD_CALIBRATIONS[name])
    capsys.readouterr()
    data = calibrate._machine_crossover.__wrapped__(3)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {path}: "), warnings
    assert data["entries"] == measured["entries"] and json.loads(path.read_text()) == measured
    assert calibrate._machine_crossover.__wrapped__(3)["entries"] == measured["entries"]  # read, not measured again
    assert not capsys.readouterr().err
