"""A saved config from elsewhere is data: foreign `_target_`s are refused unless --trust."""

from __future__ import annotations

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
