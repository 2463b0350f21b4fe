"""The adapters on model=gpt through the CLI: a sweep of LoRA variants on a pruned GPT, IA3 with the model's
default targets, the table and a reproduction (slow: six subprocesses, about 25 s)."""

from __future__ import annotations

import json
import math

import pytest

from lm_helpers import TINY_LM, ok, runner

pytestmark = pytest.mark.slow


def test_adapters_on_a_pruned_gpt_sweep_table_and_reproduce(tmp_path):
    root = tmp_path
    ok(runner(["train", *TINY_LM, "method=oneshot", "sparsity=0.5", "hydra.run.dir=outputs/ticket"], root))
    ok(runner(["train", "-m", *TINY_LM, "method=lora", "from=outputs/ticket", "lora.dora=false,true",
               "lora.init=pissa", "hydra.sweep.dir=outputs/lora"], root))
    ok(runner(["train", *TINY_LM, "method=ia3", "from=outputs/ticket", "hydra.run.dir=outputs/ia3"], root))
    for run in [*(root / "outputs/lora").glob("[0-9]"), root / "outputs/ia3"]:
        summary = json.loads((run / "summary.json").read_text())
        assert summary["sparsity"] == pytest.approx(0.5, abs=1e-3), run  # merged, still exactly as sparse
        assert summary["merge_max_abs_diff"] < 1e-4 and math.isfinite(summary["test_perplexity"])
    ia3 = json.loads((root / "outputs/ia3/summary.json").read_text())
    assert ia3["adapted_layers"] == 3  # the runner's gpt: k, v and mlp_out of its one block (peft's IA3 choice)
    table = ok(runner(["table", "outputs/lora", "--metric", "ppl", "--format", "csv"], root)).stdout
    assert table.splitlines()[0].startswith("lora.dora,metric") and len(table.splitlines()) == 3
    assert "agree exactly" in ok(runner(["reproduce", "outputs/lora/1"], root)).stdout
