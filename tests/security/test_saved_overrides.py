"""Saved overrides (`.hydra/overrides.yaml`, multirun.yaml) are read as Hydra's own parser reads them:
a mapping or list value, quotes, escapes and every value of a sweep are checked for code."""

import re

import pytest

from overparam.errors import UserError
from overparam.cli.foreign import check_saved_overrides

FINE = ["seed=0,1,2", "~logger", "hydra/launcher=joblib", "optim.lr=interval(0.001,0.1)", "model=glob(*)"]


@pytest.mark.parametrize("override", [
    "+model={_target_: os.system, command: 'true'}",
    "optim.extra=[{_target_: torch.optim.Adam}, {_target_: posix.system}]",
    "method._target_='os.system'",
    "++method._target_=os.sys\\ tem",
    "method._target_=overparam.recipes.dense.run,os.system",
    "seed=0,1,{_target_: os.system}",
    "model._target_=hydra_plugins.x.Y",
])
def test_a_saved_override_that_names_code_is_refused(override):
    kept = check_saved_overrides(FINE, source="job/.hydra/overrides.yaml", trust=False)
    assert kept == [o for o in FINE if o != "~logger"]  # loggers are this machine's: dropped, not refused
    with pytest.raises(UserError, match=re.escape(f"job/.hydra/overrides.yaml: {override!r} is refused")):
        check_saved_overrides([*FINE, override], source="job/.hydra/overrides.yaml", trust=False)
    assert check_saved_overrides([*FINE, override], source="job", trust=True)[-1] == override


def test_an_override_that_does_not_parse_is_refused_in_one_line():
    with pytest.raises(UserError, match=r"^runs/0: 'model.widths=\[64,' is not an override \(.*\)$") as caught:
        check_saved_overrides(["seed=1", "model.widths=[64,"], source="runs/0", trust=False)
    assert "\n" not in str(caught.value)
