"""Bad prune settings end with one clear line (a UserError) before anything runs."""

from __future__ import annotations

import pytest

from overparam.cli.train import compose_checked
from overparam.errors import UserError


@pytest.mark.parametrize("overrides,message", [
    (["method=imp", "prune.rate=0"], "prune.rate=0"),
    (["method=imp", "prune.rate=1.0"], "prune.rate=1.0"),
    (["method=imp", "rewind=5epochs"], "rewind='5epochs'"),
    (["method=imp", "rewind=30ep"], "not before the end of training"),
    (["method=imp", "control=random"], "control='random'"),
    (["method=imp", "prune.scope=blockwise"], "prune.scope='blockwise'"),
    (["method=imp", "retrain.lr_schedule=sgdr"], "retrain.lr_schedule='sgdr'"),
    (["method=imp", "prune.output_rate=-1"], "prune.output_rate=-1"),
    (["method=imp", "prune.output_rate=5"], "must stay below 1"),
    (["method=random_prune", "prune.distribution=gaussian"], "prune.distribution='gaussian'"),
    (["method=synflow", "prune.rounds=0"], "prune.rounds=0"),
    (["method=nm", "nm.n=4"], "nm.n=4 must be smaller than nm.m=4"),
    (["method=nm", "sparsity=0.9"], "sets the sparsity by nm.n:nm.m"),
    (["method=channel", "channel.scope=random"], "channel.scope='random'"),
    (["method=data_diet", "diet.keep=0"], "diet.keep=0"),
    (["method=data_diet", "diet.score=loss"], "diet.score='loss'"),
])
def test_bad_prune_settings_are_user_errors(overrides, message):
    with pytest.raises(UserError) as caught:
        compose_checked(overrides)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_good_prune_settings_compose():
    for overrides in (["method=imp", "rewind=500it", "control=random_reinit"], ["method=nm", "sparsity=0.5"],
                      ["method=oneshot", "rewind=none", "retrain.lr_schedule=clr"]):
        assert compose_checked(overrides)["method"]["name"] == overrides[0].split("=")[1]
