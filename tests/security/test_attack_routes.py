"""A run directory from elsewhere is data: every attack route ends with exit 2 and one line, runs nothing.

One small real finished run is made once; each row copies it, makes the copy hostile in one way,
and opens it through one route (reproduce, table, from=, ingredients=, base=, teacher.from,
student.from, lmc.from, a saved sweep, the command line). Each row asserts: exit code 2, exactly one
line on stderr, no marker file (every payload would create one), no run written, and every run
directory that existed before byte-identical after.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scaleout"))
from scaleout_helpers import tree_digest  # noqa: E402

from overparam.cli.main import main as runner  # noqa: E402

from tiny_runs import tiny

TINY = tiny(4, eval_every=2, batch_size=None)
SHORT = ["train.epochs=null", "train.steps=2"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One real finished run (a few training steps of a small MLP on MNIST-1D)."""
    from overparam.cli.train import train_in_process

    run = tmp_path_factory.mktemp("security") / "good"
    train_in_process(TINY, run)
    assert json.loads((run / "run.json").read_text())["status"] == "done"
    return run


class Scene:
    """The folders of one attack: runs (good + evil), a marker path, a torch hub folder, an output root."""

    def __init__(self, root: Path, finished_run: Path):
        self.root = root
        self.runs = root / "runs"
        self.good = self.runs / "good"
        self.evil = self.runs / "evil"
        shutil.copytree(finished_run, self.good)
        shutil.copytree(finished_run, self.evil)
        self.marker = root / "MARKER"
        self.out = root / "out"
        self.hub = root / "hub"
        self.hub.mkdir()
        # torch.hub.load(<folder>, ...) imports <folder>/hubconf.py: the import itself leaves the marker.
        (self.hub / "hubconf.py").write_text(f"open({str(self.marker)!r}, 'w').write('ran')\n"
                                            f"def evil(*args, **kwargs):\n    return None\n")

    def config(self, run: Path | None = None) -> dict:
        return yaml.safe_load(((run or self.evil) / ".hydra" / "config.yaml").read_text())

    def save_config(self, config: dict, run: Path | None = None) -> None:
        ((run or self.evil) / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def set(self, dotted: str, value) -> None:
        config = self.config()
        node = config
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        self.save_config(config)

    def hub_target(self, section: str, target: str) -> None:
        """`section` builds through torch.hub.load(<hub folder>, 'evil', source='local')."""
        config = self.config()
        config[section] = {"name": config[section]["name"], "_target_": target, "repo_or_dir": str(self.hub),
                           "model": "evil", "source": "local", "trust_repo": True}
        self.save_config(config)

    def overrides(self, extra: list[str]) -> None:
        path = self.evil / ".hydra" / "overrides.yaml"
        path.write_text(yaml.safe_dump(yaml.safe_load(path.read_text()) + extra))

    def fill(self, text: str) -> str:
        return text.format(evil=self.evil, good=self.good, out=self.out, marker=self.marker, hub=self.hub,
                           root=self.root)


# --- what makes the copy hostile -----------------------------------------------------------------------
def walk_torch_nn(s): s.hub_target("model", "torch.nn.modules.module.torch.hub.load")
def walk_torch_optim(s): s.hub_target("model", "torch.optim.sgd.torch.hub.load")
def walk_torchvision(s): s.hub_target("model", "torchvision.models.resnet.torch.hub.load")
def walk_overparam(s): s.set("model._target_", "overparam.cli.train.os.system")
def walk_overparam_dataset(s): s.hub_target("dataset", "overparam.data.bundle.torch.hub.load")
def plain_hub(s): s.hub_target("model", "torch.hub.load")
def method_walk(s): s.set("method._target_", "overparam.recipes.dense.torch.hub.load")
def logger_target(s): s.set("logger", {"name": "tensorboard", "_target_": "builtins.open", "file": str(s.marker)})
def partial_args(s):
    s.set("model._args_", [str(s.marker), "w"])
def partial_flag(s): s.set("model._partial_", True)
def recursive_flag(s): s.set("dataset._recursive_", False)
def convert_flag(s): s.set("model._convert_", "all")
def registered_elsewhere(s): s.set("model._target_", "overparam.recipes.dense.run")
def interpolated_target(s): s.set("model._target_", "${oc.env:EVIL_TARGET,torch.hub.load}")
def decode_resolver(s): s.set("model.widths", "${oc.decode:'{_target_: builtins.open}'}")
def create_resolver(s): s.set("optim.extra", "${oc.create:'{_target_: builtins.open}'}")
def custom_resolver(s): s.set("paths.data_dir", "${unique_dir:" + str(s.marker) + "}")
def weights_config_target(s):
    info = json.loads((s.evil / "run.json").read_text())
    info["weights_config"] = {"model": {"name": "mlp", "_target_": "torch.hub.load", "repo_or_dir": str(s.hub),
                                        "model": "evil", "source": "local"}}
    (s.evil / "run.json").write_text(json.dumps(info))
def defaults_list(s):
    config = s.config()
    s.save_config({"defaults": [{"override hydra/job_logging": "none"}], **config})


def yaml_tag(s):
    text = (s.evil / ".hydra" / "config.yaml").read_text()
    (s.evil / ".hydra" / "config.yaml").write_text(
        text + f"evil: !!python/object/apply:os.system ['touch {s.marker}']\n")
def yaml_huge(s):
    (s.evil / ".hydra" / "config.yaml").write_text("seed: 0\npad: '" + "x" * (5 * 1024 * 1024) + "'\n")
def yaml_deep(s):
    (s.evil / ".hydra" / "config.yaml").write_text("seed: 0\ndeep: " + "[" * 20000 + "]" * 20000 + "\n")
def yaml_alias_bomb(s):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    (s.evil / ".hydra" / "config.yaml").write_text("\n".join(lines) + "\n")
def yaml_malformed(s): (s.evil / ".hydra" / "config.yaml").write_text("seed: [0\nmodel: {name: mlp\n")
def config_not_mapping(s): (s.evil / ".hydra" / "config.yaml").write_text("- just\n- a list\n")
def run_json_malformed(s): (s.evil / "run.json").write_text('{"status": "done", ')
def run_json_deep(s): (s.evil / "run.json").write_text('{"status": "done", "x": ' + "[" * 50000 + "]" * 50000 + "}")
def summary_malformed(s): (s.evil / "summary.json").write_text("{not json")


def saved_dict_callback(s):
    s.overrides([f"+hydra.callbacks.x={{_target_:builtins.open,_args_:[{s.marker},w]}}"])
def saved_dotted_callback(s):
    s.overrides(["+hydra.callbacks.x._target_=builtins.open", f"+hydra.callbacks.x._args_=[{s.marker},w]"])
def saved_logging_class(s):
    s.overrides(["hydra.job_logging.handlers.console.class=overparam.cli.train.os.system"])
def saved_logging_file(s):
    s.overrides([f"+hydra.job_logging.handlers.console.filename={s.marker}"])
def saved_output_subdir(s): s.overrides([f"hydra.output_subdir={s.good}/.hydra"])
def saved_searchpath(s): s.overrides([f"hydra.searchpath=[file://{s.hub}]"])
def saved_launcher_setup(s): s.overrides(["hydra/launcher=submitit_local", f"+hydra.launcher.setup=[touch {s.marker}]"])
def saved_sweeper_storage(s): s.overrides([f"hydra.sweeper.storage=sqlite:///{s.marker}"])
def saved_unknown_launcher(s): s.overrides(["hydra/launcher=evil"])
def saved_target_override(s): s.overrides(["model._target_=torch.hub.load"])
def saved_resolver_override(s): s.overrides([f"+optim.extra=${{unique_dir:{s.marker}}}"])


REPRODUCE = ["reproduce", "{evil}", "--out", "{out}/new"]
TABLE = ["table", "{evil}"]
ROUTES = {
    "reproduce": REPRODUCE,
    "from": ["train", "method=finetune", "from={evil}", *SHORT, "paths.output_dir={out}"],
    "ingredients": ["train", "method=uniform_soup", "ingredients=[{good},{evil}]", "paths.output_dir={out}"],
    "base": ["train", "method=task_arithmetic", "ingredients=[{good}]", "base={evil}", "paths.output_dir={out}"],
    "teacher.from": ["train", "method=kd", "teacher.from={evil}", *SHORT, "paths.output_dir={out}"],
    "student.from": ["train", "method=kd", "teacher.from={good}", "student.from={evil}", *SHORT,
                     "paths.output_dir={out}"],
    "lmc.from": ["train", "method=lmc", "lmc.from={evil}", "lmc.points=2", *SHORT, "paths.output_dir={out}"],
    "table": TABLE,
    "table --plot-curves": ["table", "{evil}", "--plot-curves", "{out}/curves.png"],
}
ALL = [r for r in ROUTES if not r.startswith("table")]
# Code-naming attacks: every route that builds something; file-format attacks: table too.
ATTACKS = [
    *[(route, walk_torch_nn) for route in ALL],
    *[(route, plain_hub) for route in ALL],
    *[(route, weights_config_target) for route in ("from", "ingredients", "base", "student.from")],
    *[(route, yaml_tag) for route in ROUTES],
    *[(route, run_json_malformed) for route in ("reproduce", "table", "from", "ingredients")],
    ("reproduce", walk_torch_optim), ("reproduce", walk_torchvision), ("reproduce", walk_overparam),
    ("from", walk_overparam), ("from", walk_overparam_dataset), ("reproduce", method_walk),
    ("reproduce", logger_target), ("reproduce", partial_args), ("from", partial_flag), ("reproduce", recursive_flag),
    ("ingredients", convert_flag), ("reproduce", registered_elsewhere), ("from", interpolated_target),
    ("reproduce", decode_resolver), ("from", decode_resolver), ("reproduce", create_resolver),
    ("reproduce", custom_resolver), ("from", custom_resolver), ("reproduce", defaults_list),
    ("reproduce", yaml_huge), ("table", yaml_huge), ("from", yaml_deep), ("table", yaml_deep),
    ("reproduce", yaml_alias_bomb), ("table", yaml_alias_bomb), ("reproduce", yaml_malformed),
    ("table", yaml_malformed), ("from", config_not_mapping), ("table", run_json_deep), ("reproduce", summary_malformed),
    ("table", summary_malformed), ("table --plot-curves", summary_malformed),
    *[("reproduce", attack) for attack in (
        saved_dict_callback, saved_dotted_callback, saved_logging_class, saved_logging_file, saved_output_subdir,
        saved_searchpath, saved_launcher_setup, saved_sweeper_storage, saved_unknown_launcher,
        saved_target_override, saved_resolver_override)],
]


CONFIG_FILE_ATTACKS = (yaml_tag, yaml_huge, yaml_deep, yaml_alias_bomb, yaml_malformed)


def _run(args: list[str], capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    try:
        code = runner(args)
    except SystemExit as exc:
        code = exc.code
    return code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def _assert_refused(scene: Scene, args: list[str], before: str, capsys, row: str) -> str:
    code, lines = _run(args, capsys)
    assert code == 2, f"{row}: exit {code}: {lines[-5:]}"
    assert len(lines) == 1, f"{row}: expected one line on stderr, got {lines}"
    assert lines[0].startswith(f"runner {args[0]}: error: "), lines[0]
    assert not scene.marker.exists(), f"{row}: the payload ran"
    assert tree_digest(scene.runs) == before, f"{row}: a run directory changed"
    written = [p for p in scene.out.rglob("*") if p.is_file()] if scene.out.exists() else []
    assert not written, f"{row}: wrote {written}"
    return lines[0]


@pytest.mark.parametrize("route,attack", ATTACKS, ids=[f"{route}-{attack.__name__}" for route, attack in ATTACKS])
def test_attack_route_is_refused(finished_run, tmp_path, capsys, monkeypatch, route, attack):
    monkeypatch.setenv("EVIL_TARGET", "torch.hub.load")
    scene = Scene(tmp_path, finished_run)
    if route.startswith("table") and attack in CONFIG_FILE_ATTACKS:
        # The table reads a run's config from run.json and opens .hydra/config.yaml only for runs
        # written before run.json held it: such a run is the one whose config.yaml it parses.
        info = json.loads((scene.evil / "run.json").read_text())
        info.pop("config", None)
        (scene.evil / "run.json").write_text(json.dumps(info))
    attack(scene)
    before = tree_digest(scene.runs)
    _assert_refused(scene, [scene.fill(a) for a in ROUTES[route]], before, capsys, f"{route}/{attack.__name__}")


def test_the_names_in_the_refusal(finished_run, tmp_path, capsys):
    scene = Scene(tmp_path, finished_run)
    walk_torch_nn(scene)
    line = _assert_refused(scene, [scene.fill(a) for a in REPRODUCE], tree_digest(scene.runs), capsys, "walk")
    assert "model._target_='torch.nn.modules.module.torch.hub.load'" in line and "--trust" in line


def test_a_saved_sweep_with_a_hydra_callback_is_refused(finished_run, tmp_path, capsys):
    scene = Scene(tmp_path, finished_run)
    sweep = scene.runs / "sweep"
    shutil.copytree(finished_run, sweep / "0")
    multirun = {"hydra": {"overrides": {"hydra": ["hydra.mode=MULTIRUN",
                                                  f"+hydra.callbacks.x={{_target_:builtins.open,_args_:[{scene.marker},w]}}"],
                                        "task": ["model.widths=[16]"]}}}
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(multirun))
    before = tree_digest(scene.runs)
    line = _assert_refused(scene, ["reproduce", str(sweep), "--out", str(scene.out / "new")], before, capsys, "sweep")
    assert "multirun.yaml" in line and "hydra.callbacks" in line


COMMAND_LINE = [
    ("dotted callback", ["+hydra.callbacks.x._target_=builtins.open", "+hydra.callbacks.x._args_=[{marker},w]"]),
    ("dict callback", ["+hydra.callbacks.x={{_target_:builtins.open,_args_:[{marker},w]}}"]),
    ("callback through an allowed module", ["+hydra.callbacks.x._target_=overparam.cli.launch.os.system"]),
    ("launcher target", ["hydra/launcher=joblib", "hydra.launcher._target_=overparam.cli.train.os.system"]),
    ("sampler target", ["hparams_search=lr_wd", "hydra.sweeper.sampler._target_=torch.hub.load"]),
    ("logging class", ["hydra.job_logging.handlers.console.class=overparam.cli.train.os.system"]),
    ("logging ext stream", ["hydra.job_logging.handlers.console.stream=ext://overparam.cli.train.os"]),
    ("logging truncating file", ["+hydra.job_logging.handlers.console.mode=w"]),
    ("hydra resolver", ["+hydra.callbacks.x='${{oc.decode:\"{{_target_: builtins.open}}\"}}'"]),
    ("model walk", ["model._target_=torch.nn.modules.module.torch.hub.load", "+model.repo_or_dir={hub}",
                    "+model.model=evil", "+model.source=local"]),
    ("method walk", ["method._target_=overparam.cli.train.os.system"]),
    ("dataset walk", ["dataset._target_=overparam.data.bundle.torch.hub.load"]),
    ("logger walk", ["logger=tensorboard", "logger._target_=torch.optim.sgd.torch.hub.load"]),
    ("_args_ on a model", ["+model._args_=[1]"]),
]


@pytest.mark.parametrize("row,overrides", COMMAND_LINE, ids=[row for row, _ in COMMAND_LINE])
def test_command_line_component_needs_trust(finished_run, tmp_path, capsys, row, overrides):
    scene = Scene(tmp_path, finished_run)
    args = ["train", *[scene.fill(o) for o in overrides], *SHORT, f"paths.output_dir={scene.out}"]
    line = _assert_refused(scene, args, tree_digest(scene.runs), capsys, row)
    assert "refused" in line or "resolver" in line
    if "logging" not in row and "resolver" not in row:  # logging handlers stay plain even with --trust
        assert "--trust" in line, line


def test_logging_factories_and_imported_streams_are_refused():
    """dictConfig's `()` factories and `ext://` imports (a saved hydra.yaml or a searchpath config could hold them)."""
    from overparam.components import check_config
    from overparam.errors import UserError

    for node in ({"formatters": {"f": {"()": "overparam.cli.train.os.system"}}},
                 {"handlers": {"h": {"class": "logging.StreamHandler", "stream": "ext://evil_module.stream"}}},
                 {"handlers": {"h": {"class": "logging.handlers.SocketHandler"}}},
                 {"filters": {"f": {"()": "builtins.open"}}}):
        with pytest.raises(UserError, match="refused"):
            check_config({"hydra": {"job_logging": node}}, trust=True)
    check_config({"hydra": {"job_logging": {"handlers": {"console": {"class": "logging.StreamHandler",
                                                                     "stream": "ext://sys.stdout"}}}}}, trust=False)


def test_a_foreign_primary_config_is_checked(finished_run, tmp_path, capsys):
    """`runner train --config-path <dir> --config-name config` (how reproduce runs a saved config)."""
    scene = Scene(tmp_path, finished_run)
    plain_hub(scene)
    args = ["train", f"--config-path={scene.evil / '.hydra'}", "--config-name=config", f"hydra.run.dir={scene.out}/x"]
    _assert_refused(scene, args, tree_digest(scene.runs), capsys, "primary config")


def test_search_evaluation_reads_its_sweep_as_data(finished_run, tmp_path, capsys):
    """`runner search <sweep>` re-runs best_params: checked like saved overrides."""
    from overparam.cli.search import main as search_main

    scene = Scene(tmp_path, finished_run)
    sweep = scene.runs / "sweep"
    shutil.copytree(finished_run, sweep / "0")
    (sweep / "optimization_results.yaml").write_text(yaml.safe_dump(
        {"best_params": {"+hydra.callbacks.x._target_": "builtins.open"}, "best_value": 0.5}))
    before = tree_digest(scene.runs)
    capsys.readouterr()
    assert search_main([str(sweep)]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("runner search: error: ") and "refused" in lines[0], lines
    assert tree_digest(scene.runs) == before and not (sweep / "eval").exists()


def test_where_a_saved_run_wrote_is_not_where_its_reproduction_writes(tmp_path):
    """Saved paths, logger and run/sweep dirs are dropped: a reproduction writes under the user's own outputs."""
    from overparam.cli.foreign import check_saved_overrides, local_places

    saved = [f"paths.output_dir={tmp_path}/elsewhere", f"paths.data_dir={tmp_path}/data", "logger=mlflow",
             "+logger.tracking_uri=http://example.invalid", f"hydra.run.dir={tmp_path}/x", "hydra.mode=MULTIRUN",
             f"hydra.sweep.subdir=../../{tmp_path.name}", "seed=1", "model.widths=[16]", "hydra/launcher=joblib",
             "hydra.launcher.n_jobs=2"]
    assert check_saved_overrides(saved, source="x") == ["seed=1", "model.widths=[16]", "hydra/launcher=joblib",
                                                        "hydra.launcher.n_jobs=2"]
    places = local_places()
    assert places["logger"] is None and places["paths"]["output_dir"] == "outputs"


@pytest.mark.slow
@pytest.mark.parametrize("command", ["reproduce", "train"])
def test_through_the_runner_command(finished_run, tmp_path, command):
    """The console script's own code path (a subprocess, ~5 s): the issue's two first reports."""
    from scaleout_helpers import runner as runner_process

    scene = Scene(tmp_path, finished_run)
    if command == "reproduce":
        walk_torch_nn(scene)
        args = [scene.fill(a) for a in REPRODUCE]
    else:
        args = ["train", "+hydra.callbacks.x._target_=builtins.open", f"+hydra.callbacks.x._args_=[{scene.marker},w]",
                *SHORT, f"paths.output_dir={scene.out}"]
    before = tree_digest(scene.runs)
    result = runner_process(args, cwd=tmp_path)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "refused" in lines[0], result.stderr[-800:]
    assert not scene.marker.exists() and tree_digest(scene.runs) == before
