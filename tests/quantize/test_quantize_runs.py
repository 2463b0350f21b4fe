"""method=quantize end to end on a tiny MLP: packed checkpoints that load back exactly, GPTQ/AdaQuant/mixed
precision, prune then quantize, export, and bad input refused before anything is written."""

from __future__ import annotations

import pytest
import torch
from quantize_runs import MLP

from overparam.cli.train import train_in_process
from overparam.errors import UserError
from overparam.models.quantized import dequantize_state, packed_weights
from overparam.recipes.quantize.quantizer import Grid
from overparam.store.checkpoint import load_state
from overparam.store.load import load_run_model


def weights(run_dir):
    return load_state(run_dir / "checkpoints" / "model.safetensors")


def test_rtn_run_stores_packed_integers_that_load_back_as_the_evaluated_model(quantize, dense_run):
    out, summary = quantize("rtn4", "quant.bits=4", "quant.group_size=8")
    stored = weights(out)
    assert packed_weights(stored) == ["fc0.weight", "fc1.weight"]  # the output layer stays float
    assert stored["fc0.weight.qcodes"].dtype == torch.uint8 and stored["fc0.weight.qcodes"].numel() == 32 * 40 // 2
    source = weights(dense_run[0])
    assert torch.equal(stored["fc_out.weight"], source["fc_out.weight"])
    loaded, _ = load_run_model(out)
    for name in ("fc0", "fc1"):
        expected, _, _ = Grid(4, group_size=8).rtn(source[f"{name}.weight"])
        assert torch.equal(loaded.get_submodule(name).weight.detach(), expected)
    assert summary["float_test_accuracy"] == pytest.approx(dense_run[1]["test_accuracy"])
    # codes at half a byte per weight, a float32 scale and a uint8 zero point per group of 8, 5 int64 of meta
    expected = sum(rows * columns // 2 + rows * columns // 8 * 5 + 40 for rows, columns in ((32, 40), (16, 32)))
    assert summary["quantized_layer_bytes"] == expected and summary["float_layer_bytes"] == 4 * (32 * 40 + 16 * 32)
    assert summary["avg_bits"] == 4.0 and summary["layers_quantized"] == 2
    assert 0 < summary["output_kl"] < 0.1


@pytest.mark.parametrize("bits", [2])
def test_gptq_and_adaquant_beat_round_to_nearest_on_the_calibration_set(quantize, bits):
    _, rtn = quantize(f"rtn{bits}", f"quant.bits={bits}")
    _, gptq = quantize(f"gptq{bits}", f"quant.bits={bits}", "quant.method=gptq")
    _, ada = quantize(f"ada{bits}", f"quant.bits={bits}", "quant.method=adaquant", "quant.steps=40",
                         "calib.samples=64")
    assert gptq["output_kl"] < rtn["output_kl"]
    fits = ada["layer_fit"]
    assert sorted(fits) == ["fc0", "fc1"]
    assert all(f["adaquant_mse"] <= f["rtn_mse"] or f["kept"] == "rtn" for f in fits.values())
    assert any(f["kept"] == "adaquant" for f in fits.values())
    assert ada["output_kl"] < rtn["output_kl"]


def test_mixed_precision_stays_within_its_budget_and_reports_each_layers_bits(quantize):
    out, summary = quantize("mixed", "quant.avg_bits=3.5", "quant.mixed_bits=[2,4,8]")
    chosen = summary["mixed_bits_chosen"]
    assert sorted(chosen) == ["fc0", "fc1"] and set(chosen.values()) <= {2, 4, 8}
    counts = {"fc0": 40 * 32, "fc1": 32 * 16}
    assert sum(counts[n] * b for n, b in chosen.items()) <= 3.5 * sum(counts.values())
    assert summary["avg_bits"] <= 3.5
    stored = weights(out)
    assert {n: int(stored[f"{n}.weight.qmeta"][0]) for n in counts} == chosen


def test_a_pruned_run_quantized_keeps_its_zeros(tmp_path, quantize):
    pruned = tmp_path / "pruned"
    train_in_process([*MLP, "method=oneshot", "sparsity=0.5", "rewind=none"], pruned)
    out, summary = quantize("pruned_gptq", "quant.method=gptq", "quant.bits=3", source=pruned)
    raw = weights(out)
    assert raw["fc0.weight_mask"].dtype == torch.bool  # a byte per weight beside the packed codes
    stored = dequantize_state(raw)
    assert stored["fc0.weight_mask"].dtype == torch.float32
    loaded, _ = load_run_model(out)
    assert torch.equal(loaded.fc0.weight_mask, stored["fc0.weight_mask"])
    for name in ("fc0", "fc1"):
        mask = stored[f"{name}.weight_mask"].bool()
        assert (~mask).float().mean() > 0.3
        assert torch.all(stored[f"{name}.weight"][~mask] == 0)
    assert summary["sparsity"] > 0.3


def test_export_gives_the_floats_or_the_packed_form(tmp_path, quantize, dense_run):
    from overparam.cli.export import export, export_packed

    out, _ = quantize("export", "quant.bits=3")
    plain = export(str(out), tmp_path / "plain.safetensors")
    packed = export_packed(str(out), tmp_path / "packed.safetensors")
    assert set(packed["quantized"]) == {"fc0.weight", "fc1.weight"} and plain["parameters"] > 0
    floats = load_state(tmp_path / "plain.safetensors")
    back = dequantize_state(load_state(tmp_path / "packed.safetensors"))
    assert sorted(floats) == sorted(back)
    assert all(torch.equal(floats[k], back[k]) for k in floats)
    with pytest.raises(UserError, match="holds no quantized weights"):
        export_packed(str(dense_run[0]), tmp_path / "none.safetensors")


RULES = [
    ({"quant.bits": 5}, "quant.bits=5 is not supported"),
    ({"quant.format": "nf4", "quant.bits": 3}, "quant.format=nf4 is a 4-bit format"),
    ({"quant.avg_bits": 1.5}, "quant.avg_bits=1.5 is below the smallest model"),
    ({"quant.act_order": True}, "quant.act_order applies to quant.method=gptq"),
    ({"quant.avg_bits": 3.0, "quant.format": "fp4"}, "quant.avg_bits (mixed precision) chooses integer"),
]


@pytest.mark.parametrize("changes,message", RULES, ids=[r[1].split()[0] for r in RULES])
def test_the_declared_rules_refuse_bad_settings(dense_run, changes, message):
    from overparam.recipes.quantize.params import QUANTIZE

    flat = {**QUANTIZE.defaults(), "from": str(dense_run[0]), **changes}
    tree: dict = {}
    for key, value in flat.items():
        *parents, last = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        QUANTIZE.validate(tree)


BAD = [
    (["quant.group_size=7"], "quant.group_size=7 does not divide layer fc0's 40 input columns"),
    (["quant.layers=[nothing*]"], "match no Linear/Conv layer"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[b[1].split()[0] for b in BAD])
def test_bad_input_is_refused_before_anything_is_written(tmp_path, dense_run, overrides, message):
    out = tmp_path / "bad"
    with pytest.raises(UserError, match=message.replace("[", r"\[")):
        train_in_process([*MLP, "method=quantize", f"from={dense_run[0]}", *overrides], out)
    assert not out.exists()


def test_quantizing_a_quantized_run_is_refused(tmp_path, quantize):
    once, _ = quantize("once", "quant.bits=8")
    out = tmp_path / "twice"
    with pytest.raises(UserError, match="is quantized already"):
        train_in_process([*MLP, "method=quantize", f"from={once}"], out)
    assert not out.exists()


def test_batchnorm_recalibration_takes_the_calibration_sets_statistics():
    from torch import nn

    from overparam.recipes.quantize.quantize import recalibrate_batchnorm
    from overparam.recipes.shared.calibration import Calibration

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).eval()
    inputs = torch.randn(96, 6) * 3 + 1
    calibration = Calibration(inputs=inputs, digest="", samples=96, seq_len=None, seed=0)
    assert recalibrate_batchnorm(model, calibration, batch_size=32) == 1
    hidden = model[0](inputs).detach()
    norm = model[1]
    assert torch.allclose(norm.running_mean, hidden.mean(0), atol=1e-5)
    # the cumulative average of the three batches' unbiased variances
    expected = torch.stack([hidden[i:i + 32].var(0) for i in range(0, 96, 32)]).mean(0)
    assert torch.allclose(norm.running_var, expected, atol=1e-5)
    assert not model.training and norm.momentum == 0.1
