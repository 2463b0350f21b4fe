"""Overrides for a tiny language-model run (a 1-block GPT on 20k characters of the default corpus) and the CLI."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scaleout"))
from scaleout_helpers import runner, tree_digest  # noqa: E402,F401  (re-exported for the tests here)

TINY_LM = ["model=gpt", "dataset=text", "model.width=16", "model.heads=2", "model.layers=1", "dataset.block_size=16",
           "dataset.max_chars=20000", "train.epochs=null", "train.steps=10", "train.eval_every=10",
           "train.batch_size=8", "optim.name=adamw", "optim.lr=0.01", "hardware.threads=1"]
# The same run on model=hf (add model.path=<folder>).
HF_RUN = [o for o in TINY_LM if not o.startswith("model")] + ["model=hf"]


def ok(result):
    """A finished `runner` subprocess that must have succeeded (its stderr tail shown otherwise)."""
    assert result.returncode == 0, result.stderr[-2000:]
    return result
