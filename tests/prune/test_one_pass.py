"""One-pass pruning of a finished run (`from=`): Wanda's masks against a transcription of locuslab/wanda's
`prune_wanda`, magnitude against its `prune_magnitude`, the methods on a tiny gpt and on classifiers, bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))
from lm_helpers import TINY_LM  # noqa: E402
from oneshot_reference import WrappedGPT, magnitude_mask, wanda_mask  # noqa: E402

from overparam.errors import UserError  # noqa: E402
from overparam.recipes.prune.oneshot import magnitude_masks  # noqa: E402
from overparam.recipes.prune.wanda import SquaredNorms, Wanda  # noqa: E402

GPT = [o for o in TINY_LM if not o.startswith(("model.layers", "train.steps", "train.eval_every"))] + \
    ["model.layers=2", "train.steps=30", "train.eval_every=30"]


@pytest.mark.parametrize("sparsity,n,m", [(0.5, 0, 0), (0.7, 0, 0), (0.5, 2, 4), (0.5, 4, 8), (0.75, 1, 4)])
def test_wanda_mask_is_prune_wandas(sparsity, n, m):
    generator = torch.Generator().manual_seed(0)
    layer = nn.Linear(96, 40)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(40, 96, generator=generator))
    scales = torch.rand(96, generator=generator) * 3
    batches = [torch.randn(2, 11, 96, generator=generator) * scales for _ in range(4)]
    theirs, ours = WrappedGPT(layer), SquaredNorms(96)
    for x in batches:
        theirs.add_batch(x, None)
        ours.add_batch(x)
    assert torch.equal(ours.scaler_row, theirs.scaler_row) or torch.allclose(ours.scaler_row, theirs.scaler_row,
                                                                             rtol=1e-6, atol=0)
    # Their prune_n is the count pruned of every prune_m; our pattern n:m keeps n.
    pruned = wanda_mask(layer.weight.data, theirs.scaler_row, sparsity, prune_n=m - n if n else 0, prune_m=m)
    _, keep = Wanda(sparsity, (n, m) if n else None).prune("layer", layer, layer.weight.data.clone(), ours)
    assert torch.equal(keep, ~pruned)
    assert float((~keep).float().mean()) == pytest.approx(int(96 * sparsity) / 96 if not n else 1 - n / m)


def test_magnitude_per_layer_is_prune_magnitudes_but_exact_in_count():
    weight = torch.randn(30, 64, generator=torch.Generator().manual_seed(1))
    for sparsity in (0.5, 0.7):
        keep = magnitude_masks({"w": weight}, sparsity, "layerwise", None)["w"]
        pruned = magnitude_mask(weight, sparsity)
        # Theirs prunes every |w| <= the value at rank int(numel * s): that one weight more than ours.
        assert int((~keep).sum()) == int(weight.numel() * sparsity) == int(pruned.sum()) - 1
        assert torch.all(pruned[~keep]) and int((pruned & keep).sum()) == 1
    keep = magnitude_masks({"w": weight}, 0.5, "global", (2, 4))["w"]
    assert torch.equal(keep, ~magnitude_mask(weight, 0.5, prune_n=2, prune_m=4))
    rows = magnitude_masks({"w": weight}, 0.25, "row", None)["w"]
    assert torch.all(rows.sum(1) == 64 - 16)


@pytest.fixture(scope="module")
def lm_runs(tmp_path_factory):
    from overparam.cli.train import train_in_process

    root = tmp_path_factory.mktemp("one_pass")

    def train(name, *overrides, base=GPT):
        out = root / name
        summary = train_in_process([*base, f"paths.output_dir={root}", *overrides], out)
        return summary, out

    train("dense")
    return root, train


@pytest.mark.parametrize("method,extra", [("wanda", ["sparsity=0.5"]), ("sparsegpt", ["prune.pattern=2:4"]),
                                          ("oneshot", ["sparsity=0.6", "prune.scope=row"])])
def test_lm_one_pass_methods(lm_runs, method, extra):
    from overparam.store.load import load_run_model

    root, train = lm_runs
    needs_data = method != "oneshot"
    summary, out = train(method, f"method={method}", f"from={root / 'dense'}", "calib.samples=8" if needs_data else
                         "prune.output_rate=1.0", *extra)
    model, _ = load_run_model(out)
    masks = {n: m.weight_mask for n, m in model.named_modules() if hasattr(m, "weight_mask")}
    assert sorted(masks) == sorted(f"blocks.{b}.{layer}" for b in range(2) for layer in
                                   ("attn.q", "attn.k", "attn.v", "attn.out", "mlp_in", "mlp_out"))
    target = 0.5 if "2:4" in " ".join(extra) else float(extra[0].split("=")[1])
    assert summary["sparsity"] == target and summary["pruned_layers"] == 12
    assert summary["achieved_sparsity"] == pytest.approx(target, abs=0.04)  # rows of 16 round down: 9/16 at 0.6
    for name, mask in masks.items():
        weight = model.get_submodule(name).weight
        assert torch.all(weight[mask == 0] == 0)
        if "2:4" in extra[0]:
            assert torch.all(mask.reshape(mask.shape[0], -1, 4).sum(-1) == 2)
    for key in ("test_perplexity", "dense_test_perplexity", "test_bits_per_byte", "per_layer_seconds"):
        assert summary[key] > 0
    info = json.loads((out / "run.json").read_text())
    assert ("calibration" in info) == needs_data and len(info["pruned_layers"]) == 12


def test_sparsegpt_reconstructs_better_than_zeroing(lm_runs):
    root, train = lm_runs
    wanda, _ = train("w7", "method=wanda", f"from={root / 'dense'}", "sparsity=0.7", "calib.samples=32")
    sparse, _ = train("s7", "method=sparsegpt", f"from={root / 'dense'}", "sparsity=0.7", "calib.samples=32")
    magnitude, _ = train("m7", "method=oneshot", f"from={root / 'dense'}", "sparsity=0.7",
                         "prune.scope=layerwise")
    assert wanda["dense_test_loss"] == sparse["dense_test_loss"] == magnitude["dense_test_loss"]
    # Measured: 30-step gpt, width 16: dense 3.09 nats; magnitude, wanda, sparsegpt at 70% in the test below.
    assert sparse["test_loss"] < magnitude["test_loss"]


def _bad(lm_runs, name, *overrides, base=GPT):
    root, train = lm_runs
    with pytest.raises(UserError) as caught:
        train(name, *overrides, base=base)
    assert not (root / name).exists()
    return str(caught.value)


def test_bad_input_writes_nothing(lm_runs, tmp_path):
    root, train = lm_runs
    dense = f"from={root / 'dense'}"
    assert "give from=<run dir>" in _bad(lm_runs, "b1", "method=wanda", "sparsity=0.5")
    assert "not a multiple of 3" in _bad(lm_runs, "b2", "method=sparsegpt", dense, "prune.pattern=2:3")
    assert "the train split holds" in _bad(lm_runs, "b3", "method=wanda", dense, "sparsity=0.5",
                                           "calib.samples=100000")
    assert "add model.width=16" in _bad(lm_runs, "b4", "method=wanda", dense, "sparsity=0.5", "model.width=32")
    assert "set sparsity=" in _bad(lm_runs, "b5", "method=wanda", dense)
    assert "does not retrain" in _bad(lm_runs, "b6", "method=oneshot", dense, "sparsity=0.5", "rewind=none")
    assert "add from=<run>" in _bad(lm_runs, "b7", "method=oneshot", "prune.scope=row", "sparsity=0.5")
    mlp = [o for o in GPT if not o.startswith("model")]
    train("mlp", base=[o for o in mlp if not o.startswith("dataset")] + ["model.widths=[8]"])
    text = _bad(lm_runs, "b8", "method=wanda", f"from={root / 'mlp'}", "sparsity=0.5", "model=mlp",
                "model.widths=[8]", base=mlp)
    assert "not a language model" in text


@pytest.mark.parametrize("model", [["model.widths=[24,16]"], ["model=cnn1d", "model.channels=4"]],
                         ids=["mlp", "cnn1d"])
def test_classifiers(lm_runs, model):
    root, train = lm_runs
    base = ["train.epochs=null", "train.steps=40", "train.eval_every=40", "train.batch_size=64",
            "hardware.threads=1", *model]
    name = model[0].split("=")[-1].strip("[]").replace(",", "_")
    dense, _ = train(f"{name}_dense", base=base)
    for method in ("wanda", "sparsegpt"):
        summary, out = train(f"{name}_{method}", f"method={method}", f"from={root / f'{name}_dense'}",
                             "sparsity=0.5", "calib.samples=64", base=base)
        assert summary["dense_test_accuracy"] == dense["test_accuracy"]
        assert summary["achieved_sparsity"] == pytest.approx(0.5, abs=0.05)
        assert summary["test_accuracy"] > 0.5 * dense["test_accuracy"]
