"""A run from elsewhere names where its data and download cache lay on its machine (`dataset.root`,
`dataset.cache_dir`): export and reproduce read this machine's data folder and write nothing at those places."""

from __future__ import annotations

import shutil

import datasets

from lm_helpers import TINY_LM, ok, runner, tree_digest


def test_a_foreign_runs_dataset_cache_dir_is_never_written(tmp_path):
    rows = [f"line {i}: the quick brown fox jumps over the lazy dog." for i in range(400)]
    datasets.Dataset.from_dict({"text": rows}).to_parquet(str(tmp_path / "corpus.parquet"))
    theirs = tmp_path / "their_cache"
    base = [o for o in TINY_LM if not o.startswith("dataset.max_chars")]
    ok(runner(["train", *base, f"dataset.hf={tmp_path / 'corpus.parquet'}", f"dataset.cache_dir={theirs}",
               "hydra.run.dir=run"], tmp_path))
    assert theirs.is_dir()  # the run's own command wrote its cache where it was told
    shutil.rmtree(theirs)  # ... a place on the machine that made the run, absent here
    before = tree_digest(tmp_path / "run")

    ok(runner(["export", "run", "--to", "w.safetensors"], tmp_path))
    again = ok(runner(["reproduce", "run", "--out", "again"], tmp_path))
    assert "DIFFER" not in again.stdout
    assert not theirs.exists()
    assert tree_digest(tmp_path / "run") == before
