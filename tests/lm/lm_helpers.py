"""Overrides for a tiny language-model run: a 1-block GPT on 20k characters of the default corpus."""

from __future__ import annotations

TINY_LM = ["model=gpt", "dataset=text", "model.width=16", "model.heads=2", "model.layers=1", "dataset.block_size=16",
           "dataset.max_chars=20000", "train.epochs=null", "train.steps=10", "train.eval_every=10",
           "train.batch_size=8", "optim.name=adamw", "optim.lr=0.01", "hardware.threads=1"]
