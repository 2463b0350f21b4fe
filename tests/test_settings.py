"""The shared settings recipes read (overparam/settings.py) and the interpolations a config holds
(overparam/interpolation.py), without Hydra."""

from __future__ import annotations

import pickle

import pytest

from overparam.errors import UserError
from overparam.interpolation import resolve
from overparam.settings import Settings

CONFIG = {"seed": 3, "sparsity": 0.5, "train": {"steps": 20, "epochs": None, "batch_size": 8},
          "optim": {"name": "sgd", "lr": 0.1, "milestones": [0.5, 0.75]},
          "model": {"name": "mlp", "widths": [16, 16]}, "dataset": {"name": "mnist1d"},
          "paths": {"output_dir": "out", "cache_dir": "${paths.output_dir}/.cache"}}


def test_settings_read_by_attribute_and_get_and_stay_read_only():
    settings = Settings.from_dict(CONFIG)
    assert settings.seed == 3 and settings.train.steps == 20 and settings.optim.lr == 0.1
    assert settings.model.get("widths") == (16, 16) and settings.dataset.get("variant", "standard") == "standard"
    assert settings.paths.cache_dir == "out/.cache"  # interpolations resolved once, here
    assert dict(settings.train) == {"steps": 20, "epochs": None, "batch_size": 8}
    assert settings.to_dict()["optim"]["milestones"] == [0.5, 0.75]  # plain lists again
    assert settings.select("model.name") == "mlp" and settings.select("model.depth", 2) == 2
    with pytest.raises(AttributeError):
        settings.seed = 4
    with pytest.raises(AttributeError):
        settings.train.steps = 1
    with pytest.raises(AttributeError, match="no setting 'nope'"):
        settings.nope  # noqa: B018
    assert pickle.loads(pickle.dumps(settings)) == settings


@pytest.mark.parametrize("key, value, message", [
    ("seed", -1, "seed"), ("sparsity", 1.0, "sparsity"), ("optim", {"name": "rmsprop"}, "optim.name"),
    ("train", {"batch_size": 2.5}, "train.batch_size"),
])
def test_settings_check_the_shared_keys_they_hold(key, value, message):
    with pytest.raises(UserError, match=message):
        Settings.from_dict({**CONFIG, key: value})


def test_interpolations_resolve_as_a_composed_config_does(monkeypatch):
    monkeypatch.setenv("OVERPARAM_TEST_VAR", "/data")
    tree = {"a": 1, "b": "${a}", "c": "x${a}y", "d": "\\${a}", "e": {"f": "${.g}", "g": 3.5},
            "h": "${oc.dict.keys:e}", "n": None, "m": "${n}/p", "l": [1, "${a}"], "w": "${l}",
            "env": "${oc.env:OVERPARAM_TEST_VAR}/x", "absent": "${oc.env:OVERPARAM_NO_SUCH_VAR,null}",
            "nested": "${oc.env:OVERPARAM_NO_SUCH_VAR,${oc.env:OVERPARAM_TEST_VAR}/cache}",
            "pick": "${oc.select:e.g,0}", "missing": "${oc.select:e.nope,7}"}
    assert resolve(tree) == {"a": 1, "b": 1, "c": "x1y", "d": "${a}", "e": {"f": 3.5, "g": 3.5}, "h": ["f", "g"],
                             "n": None, "m": "None/p", "l": [1, 1], "w": [1, 1], "env": "/data/x", "absent": None,
                             "nested": "/data/cache", "pick": 3.5, "missing": 7}


@pytest.mark.parametrize("tree, message", [
    ({"a": "${b}"}, "not found"), ({"a": "${b}", "b": "${a}"}, "nest too deeply"),
    ({"a": "${oc.env:OVERPARAM_NO_SUCH_VAR}"}, "not found"), ({"a": "${a"}, "unclosed"),
    ({"a0": "xx", **{f"a{i}": f"${{a{i - 1}}}${{a{i - 1}}}" for i in range(1, 40)}}, "longer than"),
])
def test_a_config_that_does_not_resolve_is_one_error(tree, message):
    with pytest.raises(ValueError, match=message):
        resolve(tree)
