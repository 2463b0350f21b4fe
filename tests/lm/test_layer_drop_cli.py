"""method=layer_drop and PERP's repair through the CLI: bad input refused before anything is written; a dropped run
chains into from=, reproduce and export; a norm_bias fine-tune of a pruned run moves only biases and norms."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lm_helpers import TINY_LM, ok, runner, tree_digest

THREE = [o if o != "model.layers=1" else "model.layers=3" for o in TINY_LM]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished 3-block GPT run and a finished MLP run (not a language model)."""
    from tiny_runs import TINY

    from overparam.cli.train import train_in_process

    root = tmp_path_factory.mktemp("drop")
    train_in_process(THREE, root / "outputs" / "base")
    train_in_process(TINY, root / "outputs" / "mlp")
    return root


SLOW = pytest.mark.slow


@pytest.mark.parametrize("extra, message", [
    ([], "needs from="),
    (["from=outputs/mlp"], "model=mlp"),
    (["from=outputs/base", "drop.blocks=3"], "has 3 blocks; at least one must stay"),
    pytest.param(["from=outputs/base", "drop.blocks=5"], "has 3 blocks", marks=SLOW),
    pytest.param(["from=outputs/base", "drop.criterion=finercut", "drop.sublayers=6"], "has 6 sublayers", marks=SLOW),
    pytest.param(["from=outputs/base", "drop.criterion=finercut"], "set drop.sublayers", marks=SLOW),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(base, extra, message):
    before = tree_digest(base)
    result = runner(["train", *THREE, "method=layer_drop", *extra, "hydra.run.dir=outputs/bad"], base)
    assert result.returncode == 2, result.stderr[-1500:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert tree_digest(base) == before


@pytest.mark.slow
def test_dropped_runs_chain_reproduce_and_export(base):
    from overparam.cli.export_hf import export_folder
    from overparam.cli.train import train_in_process

    train_in_process([*THREE, "method=layer_drop", f"from={base}/outputs/base", "drop.criterion=finercut",
                      "drop.sublayers=2", "calib.samples=8"], base / "outputs/fc")
    train_in_process([*THREE, "method=layer_drop", f"from={base}/outputs/fc", "drop.criterion=bi", "calib.samples=8"],
                     base / "outputs/fc_bi")
    info = json.loads((base / "outputs/fc_bi/run.json").read_text())
    summary = json.loads((base / "outputs/fc_bi/summary.json").read_text())
    first = json.loads((base / "outputs/fc/summary.json").read_text())
    assert summary["blocks"] == summary["blocks_before"] - 1 and summary["parameters"] < first["parameters"]
    assert info["weights_config"]["model"]["layers"] == summary["blocks"]
    assert info["calibration"]["samples"] == 8 and len(info["calibration"]["sha256"]) == 64
    # from= a dropped run, reproduce, export: each rebuilds the smaller shape from run.json.
    train_in_process([*THREE, "method=finetune", f"from={base}/outputs/fc_bi", "train.steps=2"], base / "outputs/ft")
    assert "agree exactly" in ok(runner(["reproduce", "outputs/fc_bi"], base)).stdout
    export_folder(str(base / "outputs/fc_bi"), base / "hf_out")  # checks the folder's logits against the run's
    config = json.loads((base / "hf_out/config.json").read_text())
    assert config["n_layer"] == summary["blocks"]


@pytest.mark.slow
def test_perp_norm_bias_repair_moves_only_biases_and_norms_and_keeps_zeros(base):
    from overparam.cli.train import train_in_process

    train_in_process([*THREE, "method=oneshot", "sparsity=0.5"], base / "outputs/pruned")
    train_in_process([*THREE, "method=finetune", f"from={base}/outputs/pruned", "finetune.train=norm_bias"],
                     base / "outputs/perp")
    source = load_file(str(base / "outputs/pruned/checkpoints/model.safetensors"))
    tuned = load_file(str(base / "outputs/perp/checkpoints/model.safetensors"))
    assert source.keys() == tuned.keys()
    moved = {k for k in source if not torch.equal(source[k], tuned[k])}
    allowed = {k for k in source if k.endswith(".bias") or k.split(".")[-2].startswith("ln")}
    assert moved and moved <= allowed  # every bias and norm may move; nothing else did
    for key in (k for k in source if k.endswith(".weight_mask")):
        weight = tuned[key.replace("_mask", "")]
        assert torch.equal(source[key], tuned[key]) and not weight[source[key] == 0].any()
    summary = json.loads((base / "outputs/perp/summary.json").read_text())
    assert summary["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert 0 < summary["trainable_fraction"] < 0.1
    assert (summary["source_method"], summary["source_sparsity"], summary["source_pattern"]) == ("oneshot", 0.5, None)
    pruned = json.loads((base / "outputs/pruned/summary.json").read_text())
    assert summary["source_test_bits_per_byte"] == pytest.approx(pruned["test_bits_per_byte"], rel=1e-5)
    assert summary["trainable_parameters"] == sum(v.numel() for k, v in source.items() if k in allowed)


@pytest.mark.slow
def test_hf_llama_run_drops_a_layer_and_sublayer_and_exports(base):
    from hf_models import save_tiny
    from lm_helpers import HF_RUN

    from overparam.cli.export_hf import export_folder
    from overparam.cli.train import train_in_process

    folder = save_tiny(base / "llama3", "llama", layers=3)
    run = [o if not o.startswith("train.steps") else "train.steps=2" for o in HF_RUN] + [f"model.path={folder}"]
    train_in_process(run, base / "outputs/hf")
    train_in_process([*run, "method=layer_drop", f"from={base}/outputs/hf", "calib.samples=4"], base / "outputs/hf_bi")
    train_in_process([*run, "method=layer_drop", f"from={base}/outputs/hf_bi", "drop.criterion=finercut",
                      "drop.sublayers=1", "calib.samples=4"], base / "outputs/hf_fc")
    shape = json.loads((base / "outputs/hf_fc/run.json").read_text())["weights_config"]["model"]
    assert len(shape["layers"]) == 2 and set(shape["layers"]) < {0, 1, 2} and len(shape["removed"]) == 1
    meta = export_folder(str(base / "outputs/hf_fc"), base / "hf_fc_out")  # logits checked against the run's
    assert meta["model"] == "hf"
    assert json.loads((base / "hf_fc_out/config.json").read_text())["num_hidden_layers"] == 2
