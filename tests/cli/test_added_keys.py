"""A `+key` that nothing in the composed run reads is refused, with the keys it may have meant."""

from __future__ import annotations

import pytest

from overparam.cli.train import compose_checked
from overparam.errors import UserError


@pytest.mark.parametrize("overrides, words", [
    (["method=kd", "+from=outputs/ticket@level_2"], ["+from", "teacher.from", "student.from", "method=kd"]),
    (["method=kd", "+kd.temprature=2"], ["+kd.temprature", "kd.temperature"]),
    (["+train.epoch=3"], ["+train.epoch", "train.epochs"]),
    (["+whatever=1"], ["+whatever", "reads"]),
])
def test_unread_added_key_is_refused(overrides, words):
    with pytest.raises(UserError) as info:
        compose_checked(overrides)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.parametrize("overrides, key, value", [
    (["method=kd", "+prune=imp", "sparsity=0.5"], "prune", "imp"),   # a config group
    (["model=torchvision", "+model.num_layers=3"], "model", 3),    # handed to the model's builder
])
def test_added_keys_with_a_reader_pass(overrides, key, value):
    container = compose_checked(overrides)
    if key == "prune":
        assert container["prune"]["with"] == value
    else:
        assert container["model"]["num_layers"] == value


@pytest.mark.parametrize("overrides, words", [
    (["ingredients=[outputs/nowhere]"], ["ingredients is set, but method=dense does not read it", "greedy_soup"]),
    (["method=finetune", "base=outputs/nowhere"], ["base is set, but method=finetune does not read it", "ties"]),
    (["method=kd", "ingredients=outputs/sweep"], ["method=kd does not read it"]),
])
def test_a_run_input_the_method_does_not_read_is_refused(overrides, words):
    with pytest.raises(UserError) as info:
        compose_checked(overrides)
    assert "\n" not in str(info.value)
    for word in words:
        assert word in str(info.value)
