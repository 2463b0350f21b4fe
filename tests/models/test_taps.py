"""FeatureTap (features by module path and input|output) and replace_module / modules_of_type."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from overparam.errors import UserError
from overparam.models.paths import modules_of_type, replace_module, submodule
from overparam.models.taps import FeatureTap, embedding_point


def tiny() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Sequential(nn.Linear(6, 5), nn.Tanh()), nn.Linear(5, 3))


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_input_and_output_taps_record_each_forward_by_path():
    model = tiny()
    x = torch.randn(7, 4)
    with FeatureTap(model, [("0", "output"), ("1", "input"), ("2.0", "output"), ("3", "input"), (".", "output")]) as tap:
        logits = model(x)
        first = model[0](x)
        assert torch.equal(tap["0", "output"], first)
        assert torch.equal(tap["1", "input"], first)  # the ReLU's input is the Linear's output
        hidden = model[2][0](torch.relu(first))  # nested path 2.0
        assert torch.equal(tap["2.0", "output"], hidden)
        assert torch.equal(tap["3", "input"], torch.tanh(hidden))
        assert torch.equal(tap[".", "output"], logits)
        # The next forward replaces the values.
        y = torch.randn(2, 4)
        model(y)
        assert torch.equal(tap["0", "output"], model[0](y))
        tap.clear()
        with pytest.raises(KeyError, match="holds nothing"):
            tap["0", "output"]
        with pytest.raises(KeyError, match="not tapped"):
            tap["3", "output"]
    assert hook_count(model) == 0


def test_hooks_are_removed_when_the_context_ends_even_on_error():
    model = tiny()
    with pytest.raises(RuntimeError, match="inside"):
        with FeatureTap(model, [("2.1", "output"), ("0", "input")]):
            assert hook_count(model) == 2
            raise RuntimeError("inside")
    assert hook_count(model) == 0
    tap = FeatureTap(model, [("0", "output")])
    tap.remove()
    tap.remove()  # harmless twice
    assert hook_count(model) == 0


def test_an_unknown_path_is_one_clear_line_naming_valid_paths_and_adds_no_hook():
    model = tiny()
    with pytest.raises(UserError) as caught:
        FeatureTap(model, [("0", "output"), ("2.7", "output")], what="the student")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("the student has no module '2.7'; its modules are: 0, 1, 2, 2.0, 2.1, 3")
    assert hook_count(model) == 0  # checked before any hook goes on
    with pytest.raises(UserError, match="input or output, not 'inputs'"):
        FeatureTap(model, [("0", "inputs")])


def test_a_deep_copy_of_a_tapped_model_does_not_write_into_the_tap():
    model = tiny()
    with FeatureTap(model, [("0", "output")]) as tap:
        model(torch.zeros(1, 4))
        seen = tap["0", "output"].clone()
        twin = copy.deepcopy(model)  # carries the hooks along
        twin(torch.ones(1, 4))
        assert torch.equal(tap["0", "output"], seen)


def test_embedding_point_is_the_classifier_input_of_a_zoo_model():
    from overparam.models.zoo import mlp

    model = mlp((10,), 3, widths=[6, 5])
    assert embedding_point(model) == ("fc_out", "input")
    with FeatureTap(model, [embedding_point(model), ("fc1", "output")]) as tap:
        model(torch.randn(4, 10))
        assert tap["fc_out", "input"].shape == (4, 5)
        assert tap["fc1", "output"].shape == (4, 5)


def test_replace_module_swaps_nested_and_top_level_layers():
    model = tiny()
    new = nn.Linear(6, 5)
    old = replace_module(model, "2.0", new)
    assert isinstance(old, nn.Linear) and model[2][0] is new and old is not new
    head = nn.Identity()
    replace_module(model, "3", head)
    assert model[3] is head
    x = torch.randn(2, 4)
    assert torch.equal(model(x), torch.tanh(new(torch.relu(model[0](x)))))
    with pytest.raises(ValueError, match="root"):
        replace_module(model, "", nn.Identity())
    with pytest.raises(UserError, match="no module '2.9'"):
        replace_module(model, "2.9", nn.Identity())
    assert submodule(model, ".") is model


def test_modules_of_type_lists_in_order_and_allows_replacing_while_walking():
    model = tiny()
    found = modules_of_type(model, nn.Linear)
    assert [name for name, _ in found] == ["0", "2.0", "3"]
    for name, module in found:
        replace_module(model, name, nn.Identity())
    assert modules_of_type(model, nn.Linear) == []
    assert [n for n, _ in modules_of_type(tiny(), (nn.ReLU, nn.Tanh))] == ["1", "2.1"]

    class Wide(nn.Linear):
        pass

    mixed = nn.Sequential(nn.Linear(2, 2), Wide(2, 2))
    assert [n for n, _ in modules_of_type(mixed, nn.Linear, exact=True)] == ["0"]
    assert [n for n, _ in modules_of_type(mixed, nn.Linear)] == ["0", "1"]


def test_pop_takes_a_value_once():
    model = nn.Sequential(nn.Linear(3, 2))
    with FeatureTap(model, [(".", "output")]) as tap:
        assert tap.pop((".", "output")) is None
        out = model(torch.ones(1, 3))
        assert torch.equal(tap.pop((".", "output")), out)
        assert tap.pop((".", "output")) is None
