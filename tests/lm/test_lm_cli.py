"""Language models through the CLI: train, prune, fine-tune, merge, distill, table, reproduce."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from overparam.data.text import default_corpus

from lm_helpers import TINY_LM, ok, runner


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


@pytest.fixture(scope="module")
def lm_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    ok(runner(["train", *TINY_LM, "hydra.run.dir=outputs/base"], root))
    ok(runner(["train", "-m", *TINY_LM, "method=finetune", "from=outputs/base", "seed=1,2",
                "hydra.sweep.dir=outputs/ft"], root))
    return root


def test_dense_run_reports_perplexity_and_bits_per_byte_everywhere(lm_runs):
    summary = _summary(lm_runs / "outputs/base")
    assert summary["test_perplexity"] == pytest.approx(math.exp(summary["test_loss"]))
    # Byte tokens: bits per byte is nats per token in bits.
    assert summary["test_bits_per_byte"] == pytest.approx(summary["test_loss"] / math.log(2))
    assert summary["bytes_per_token"] == 1.0 and summary["tokens"] == len(default_corpus()[:20000].encode())
    # Ten steps of a 16-wide GPT beat uniform guessing over 256 bytes (8 bits per byte) by a clear margin.
    assert summary["test_bits_per_byte"] < 7.0
    rows = [json.loads(line) for line in (lm_runs / "outputs/base/metrics.jsonl").read_text().splitlines()]
    test_rows = [r for r in rows if r.get("split") == "test" and r.get("metric") == "perplexity"]
    assert [r["step"] for r in test_rows] == [0, 10]
    # The same command again reports the finished run by its language-model figures, and so does the listing.
    again = ok(runner(["train", *TINY_LM, "hydra.run.dir=outputs/base"], lm_runs)).stdout
    assert "already done" in again and f"test_bits_per_byte={summary['test_bits_per_byte']:.4f}" in again
    assert "test_accuracy" not in again
    listed = ok(runner(["ls", "runs", "outputs"], lm_runs)).stdout
    assert f"test_bits_per_byte={summary['test_bits_per_byte']:.4f}" in listed


def test_split_stays_put_across_seeds_and_finetunes_differ(lm_runs):
    first, second = (_summary(lm_runs / f"outputs/ft/{i}") for i in (0, 1))
    base = _summary(lm_runs / "outputs/base")
    assert first["test_loss"] < base["test_loss"] and second["test_loss"] < base["test_loss"]
    assert first["test_loss"] != second["test_loss"]


def test_merges_kd_imp_table_and_reproduce(lm_runs):
    root = lm_runs
    merged = ok(runner(["train", *TINY_LM, "method=uniform_soup", "ingredients=outputs/ft",
                         "hydra.run.dir=outputs/merge/soup"], root))
    merged = ok(runner(["train", "-m", *TINY_LM, "method=task_arithmetic,ties",  # the two that read a base
                         "ingredients=outputs/ft", "base=outputs/base", "hydra.sweep.dir=outputs/merge"], root))
    losses = [_summary(root / f"outputs/merge/{job}")["test_loss"] for job in ("soup", "0", "1")]
    assert all(math.isfinite(v) and v < 6 for v in losses), merged.stdout[-800:]
    ok(runner(["train", *TINY_LM, "model.width=32", "hydra.run.dir=outputs/big"], root))
    ok(runner(["train", *TINY_LM, "method=kd", "teacher.from=outputs/big", "hydra.run.dir=outputs/kd"], root))
    kd = _summary(root / "outputs/kd")
    assert kd["teacher_parameters"] > kd["parameters"] and math.isfinite(kd["test_perplexity"])
    ok(runner(["train", "-m", *TINY_LM, "method=imp", "sparsity=0.5,0.8", "hydra.sweep.dir=outputs/imp"], root))
    levels = _summary(root / "outputs/imp/1")["levels"]
    assert levels[-1]["sparsity"] == pytest.approx(0.8, abs=1e-3) and "test_perplexity" in levels[-1]
    table = ok(runner(["table", "outputs/imp", "--metric", "ppl", "--format", "csv"], root)).stdout
    assert "test_perplexity" in table and "20" in table
    again = ok(runner(["reproduce", "outputs/imp/0"], root)).stdout
    assert "agree exactly" in again


def test_a_gpt_run_exports_to_a_folder_transformers_loads_with_the_same_test_loss(lm_runs):
    import torch
    from transformers import AutoModelForCausalLM

    from overparam.data.text import load

    (lm_runs / "mine").mkdir()
    (lm_runs / "mine" / "notes.txt").write_text("a researcher's file")
    refused = runner(["export", "outputs/base", "--to", "mine", "--format", "hf", "--force"], lm_runs)
    assert refused.returncode == 2 and "not a folder an earlier export wrote" in refused.stderr
    assert (lm_runs / "mine" / "notes.txt").read_text() == "a researcher's file"
    ok(runner(["export", "outputs/base", "--to", "gpt_hf", "--format", "hf"], lm_runs))
    model = AutoModelForCausalLM.from_pretrained(str(lm_runs / "gpt_hf")).eval()
    data = load("unused", block_size=16, max_chars=20000)
    with torch.no_grad():
        logits = model(input_ids=data.test_x).logits
    loss = float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), data.test_y.flatten()))
    assert loss == pytest.approx(_summary(lm_runs / "outputs/base")["test_loss"], abs=1e-4)
    again = runner(["export", "outputs/base", "--to", "gpt_hf", "--format", "hf"], lm_runs)
    assert again.returncode == 2 and "--force" in again.stderr


@pytest.mark.slow
def test_mergekit_methods_on_gpt_compose_with_sweeps_table_and_reproduce(lm_runs):
    root = lm_runs
    ok(runner(["train", "-m", *TINY_LM, "method=slerp,karcher", "ingredients=outputs/ft",
               "hydra.sweep.dir=outputs/spherical"], root))
    ok(runner(["train", "-m", *TINY_LM, "method=model_stock,sce,della", "ingredients=outputs/ft",
               "base=outputs/base", "hydra.sweep.dir=outputs/stock"], root))
    base = _summary(root / "outputs/base")["test_loss"]
    losses = {run: _summary(root / "outputs" / run)["test_loss"] for run in
              ("spherical/0", "spherical/1", "stock/0", "stock/1", "stock/2")}
    # Merges of two fine-tunes of the base stay near them: finite and no worse than twice the base's loss.
    assert all(math.isfinite(v) and v < 2 * base for v in losses.values()), losses
    table = ok(runner(["table", "outputs/stock", "--metric", "ppl", "--format", "csv"], root)).stdout
    assert all(name in table for name in ("model_stock", "sce", "della")), table
    again = ok(runner(["reproduce", "outputs/stock/2"], root)).stdout  # della: seeded random drops
    assert "agree exactly" in again
