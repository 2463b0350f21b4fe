"""A saved config from elsewhere is data: foreign `_target_`s are refused unless --trust."""

from __future__ import annotations

import re

import pytest
from report_helpers import base_config, make_run

from overparam.cli.main import main as runner
from overparam.errors import UserError
from overparam.report.allowlist import check_override_targets, check_targets, target_allowed


def test_allowlist_prefixes():
    for target in ("overparam.recipes.dense.run", "torch.optim.SGD", "torch.nn.Linear", "torchvision.models.resnet18"):
        assert target_allowed(target)
    for target in ("os.system", "builtins.eval", "overparamx.evil", "torch.load", "subprocess.run",
                   "torch.optim.SGD; rm -rf /", "${oc.env:T}", 42, None, "torch.nn..x"):
        assert not target_allowed(target), target


def test_foreign_target_is_refused_nested_anywhere():
    config = base_config()
    config["optim"]["extra"] = [{"_target_": "torch.optim.Adam"}, {"_target_": "os.system", "command": "true"}]
    with pytest.raises(UserError, match=r"optim\.extra\[1\]\._target_='os\.system' is outside the allowed targets"):
        check_targets(config, source="x")
    check_targets(config, trust=True)  # --trust bypasses
    check_targets(base_config())
    with pytest.raises(UserError, match="--trust"):
        check_override_targets(["method._target_=posix.system"])
    check_override_targets(["method._target_=overparam.recipes.dense.run", "seed=1"])


def test_reproduce_refuses_a_foreign_target_before_running_anything(tmp_path, capsys):
    config = base_config()
    config["method"]["_target_"] = "os.system"
    run = make_run(tmp_path / "run", config, {"test_accuracy": 0.5})
    assert runner(["reproduce", str(run), "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert "method._target_='os.system' is outside the allowed targets" in err and "--trust" in err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("override, where", [
    ("+model={_target_: os.system, command: 'true'}", "model._target_='os.system'"),
    ("optim.extra=[{_target_: torch.optim.Adam}, {_target_: posix.system}]", "optim.extra[1]._target_='posix.system'"),
    ("method._target_='os.system'", "method._target_='os.system'"),
    ("++method._target_=os.sys\\ tem", "method._target_='os.sys tem'"),
    ("method._target_=overparam.recipes.dense.run,os.system", "method._target_='os.system'"),
    ("model._target_=hydra_plugins.x.Y", "model._target_='hydra_plugins.x.Y'"),
])
def test_saved_overrides_are_read_as_hydra_reads_them(override, where):
    # A mapping or list value, quotes, escapes and sweeps: what Hydra would instantiate is what is checked.
    fine = ["seed=0,1,2", "~logger", "hydra/launcher=joblib", "optim.lr=interval(0.001,0.1)", "model=glob(*)",
            "hydra.launcher._target_=hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"]
    check_override_targets(fine)
    with pytest.raises(UserError, match=re.escape(where)):
        check_override_targets([*fine, override], source="job/.hydra/overrides.yaml")
    check_override_targets([*fine, override], trust=True)


def test_an_override_that_does_not_parse_is_refused_in_one_line():
    with pytest.raises(UserError, match=r"^runs/0: an override does not parse \(.*\)$"):
        check_override_targets(["seed=1", "model.widths=[64,"], source="runs/0")
