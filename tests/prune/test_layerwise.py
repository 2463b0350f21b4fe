"""The layer-wise one-shot driver (recipes/shared/layerwise.py): each layer sees the inputs the already-pruned
model gives it, on gpt, Hugging Face GPT-2 and Llama blocks and on classifiers; convolutions are unfolded."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))
from hf_models import save_tiny  # noqa: E402

from overparam.models.masked import masks_of, sparsify  # noqa: E402
from overparam.recipes.shared import layerwise  # noqa: E402


class Recorder:
    """Keeps every input a layer was given; prunes the smaller half of each row by |w|."""

    def __init__(self):
        self.seen: dict[str, list[torch.Tensor]] = {}

    def collector(self, name, module, columns):
        self.seen[name] = []
        method = self

        class Collect:
            def add_batch(self, inputs):
                assert inputs.shape[-1] == columns
                method.seen[name].append(inputs.clone())
        return Collect()

    def prune(self, name, module, weight, collector):
        order = torch.argsort(weight.abs(), dim=1, stable=True)
        keep = torch.ones_like(weight, dtype=torch.bool)
        keep.scatter_(1, order[:, : weight.shape[1] // 2], False)
        return None, keep


def _inputs_of(model, names, calibration, batch_size):
    """Each layer's inputs when the final model runs the calibration set."""
    seen = {name: [] for name in names}
    handles = [model.get_submodule(n).register_forward_hook(
        lambda m, a, o, n=n: seen[n].append(layerwise.layer_inputs(m, a[0]).float().clone())) for n in names]
    with torch.no_grad():
        for start in range(0, len(calibration), batch_size):
            model(calibration[start:start + batch_size])
    for handle in handles:
        handle.remove()
    return seen


def _check(model, calibration, first_of_block):
    model = sparsify(model)
    model.eval()
    targets = layerwise.default_targets(model)
    recorder = Recorder()
    records = layerwise.run_layerwise(model, calibration, recorder, batch_size=3)
    assert [r.name for r in records] == targets
    assert all(r.kept == pytest.approx(1 - (r.columns // 2) / r.columns) for r in records)
    masks = masks_of(model)
    assert all(float(masks[f"{n}.weight"].mean()) < 1 for n in targets)
    # The first layers of each block (all layers of a classifier) saw exactly what the pruned model gives them.
    final = _inputs_of(model, first_of_block, calibration, 3)
    for name in first_of_block:
        got, want = torch.cat([x.reshape(-1, x.shape[-1]) for x in recorder.seen[name]]), \
            torch.cat([x.reshape(-1, x.shape[-1]) for x in final[name]])
        assert torch.allclose(got, want, atol=1e-5), name
    return targets, recorder


def test_gpt_blocks_feed_pruned_outputs_forward():
    from overparam.models.gpt import gpt

    torch.manual_seed(0)
    model = gpt((12,), 40, width=16, heads=2, layers=3)
    calibration = torch.randint(0, 40, (7, 12))
    targets, recorder = _check(model, calibration, [f"blocks.{i}.attn.q" for i in range(3)])
    assert "head" not in targets and len(targets) == 18
    # Inside a block every layer sees the dense block (their code): mlp_in's input is not the pruned block's.
    final = _inputs_of(model, ["blocks.1.mlp_in"], calibration, 3)["blocks.1.mlp_in"]
    assert not torch.allclose(torch.cat(recorder.seen["blocks.1.mlp_in"]), torch.cat(final))


@pytest.mark.parametrize("kind,first", [("gpt2", "lm.transformer.h.{}.attn.c_attn"),
                                        ("llama", "lm.model.layers.{}.self_attn.q_proj")])
def test_hf_blocks_get_their_keyword_arguments(tmp_path, kind, first):
    from overparam.models.hf import hf

    folder = save_tiny(tmp_path / kind, kind, tokenizer=False, vocab=64, context=16)
    model = hf((16,), 64, path=str(folder))
    calibration = torch.randint(0, 64, (5, 16))
    targets, _ = _check(model, calibration, [first.format(i) for i in range(2)])
    assert "lm.lm_head" not in targets and all(".h." in t or ".layers." in t for t in targets)


def test_classifiers_prune_layer_by_layer_in_running_order():
    from overparam.models.zoo import cnn1d, mlp

    torch.manual_seed(0)
    net = mlp((20,), 5, widths=(12, 9))
    targets, _ = _check(net, torch.randn(10, 20), layerwise.default_targets(sparsify(net)))
    assert len(targets) == 2  # the output layer stays dense
    conv = cnn1d((1, 40), 5, channels=4)
    names = layerwise.default_targets(sparsify(conv))
    assert any(isinstance(conv.get_submodule(n), nn.Conv1d) for n in names)
    _check(conv, torch.randn(6, 1, 40), names)


@pytest.mark.parametrize("conv", [nn.Conv1d(3, 4, 5, stride=2, padding=2, dilation=1),
                                  nn.Conv2d(3, 4, (3, 2), stride=(1, 2), padding=(1, 0), dilation=(2, 1)),
                                  nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular")])
def test_unfolded_convolution_inputs_times_the_flat_weight_are_the_convolution(conv):
    x = torch.randn(2, 3, 9) if isinstance(conv, nn.Conv1d) else torch.randn(2, 3, 7, 8)
    patches = layerwise.layer_inputs(conv, x)
    assert patches.shape[-1] == conv.weight[0].numel()
    product = patches @ conv.weight.flatten(1).T + conv.bias
    expected = conv(x).flatten(2).transpose(1, 2)
    assert torch.allclose(product, expected, atol=1e-5)
