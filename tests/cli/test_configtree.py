"""Options of the config tree are read by name, never by a path taken from a config."""

from __future__ import annotations

import pytest

from overparam.configtree import config_dir, group_config
from overparam.errors import UserError
from overparam.store.readers import read_yaml


def test_a_group_option_reads_its_yaml():
    assert group_config("model", "cnn1d") == read_yaml(config_dir() / "model" / "cnn1d.yaml")
    assert group_config("model", "cnn1d")["name"] == "cnn1d"


@pytest.mark.parametrize("name", ["nosuch", "../train", "model/cnn1d", "/etc/passwd"])
def test_anything_but_an_option_name_is_refused_with_the_options(name):
    with pytest.raises(UserError, match=r"is not in configs/model; choose one of: .*cnn1d"):
        group_config("model", name)
