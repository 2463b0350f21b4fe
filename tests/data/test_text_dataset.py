"""dataset=text: byte tokens, disjoint contiguous spans fixed by split_seed, files, folders and HF sources."""

from __future__ import annotations

import sys

import datasets
import pytest
import torch

from overparam.data.text import blocks, default_corpus, load, span_bounds
from overparam.errors import UserError


def _covered(bounds) -> list[set]:
    return [set(i for start, end in spans for i in range(start, end)) for spans in bounds.values()]


def test_default_corpus_is_offline_english_and_large_enough():
    text = default_corpus()
    assert len(text) >= 400_000 and text.count(" the ") > 3_000  # English prose, not code
    bundle = load("unused", block_size=32)
    assert bundle.num_classes == 256 and bundle.bytes_per_token == 1.0
    assert bundle.train_x.dtype == torch.int64 and bundle.train_x.shape[1] == 32
    tokens = len(text.encode("utf-8"))
    # Every split is whole blocks of its span; together they use nearly all tokens (a block's tail per piece).
    used = sum(len(x) for x in (bundle.train_x, bundle.val_x, bundle.test_x)) * 32
    assert tokens - 6 * 33 <= used <= tokens
    assert abs(len(bundle.test_x) * 32 - 0.05 * tokens) < 2 * 33


def test_spans_are_disjoint_cover_everything_and_move_only_with_split_seed():
    first = span_bounds(10_000, 0.1, 0.2, split_seed=0)
    test, val, train = _covered({k: first[k] for k in ("test", "val", "train")})
    assert len(test) == 2000 and len(val) == 1000 and len(train) == 7000
    assert not (test & val) and not (test & train) and not (val & train)
    assert span_bounds(10_000, 0.1, 0.2, split_seed=0) == first
    assert span_bounds(10_000, 0.1, 0.2, split_seed=1) != first
    # Targets are the inputs shifted by one, never crossing a span's end.
    tokens = torch.arange(100)
    x, y = blocks(tokens, [(90, 100), (0, 11)], 4)
    assert x.tolist() == [[90, 91, 92, 93], [94, 95, 96, 97], [0, 1, 2, 3], [4, 5, 6, 7]]
    assert torch.equal(y, x + 1)


def test_a_file_a_folder_and_hf_sources(tmp_path):
    text = "".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(200))
    (tmp_path / "a.txt").write_text(text[:5000])
    (tmp_path / "b.md").write_text(text[5000:])
    (tmp_path / "skip.bin").write_bytes(b"\x00" * 5000)
    folder = load("unused", path=str(tmp_path), block_size=16)
    whole = tmp_path / "whole.txt"
    whole.write_text(text[:5000] + "\n\n" + text[5000:])
    single = load("unused", path=str(whole), block_size=16)
    assert torch.equal(folder.train_x, single.train_x) and torch.equal(folder.test_y, single.test_y)
    rows = text.splitlines()
    dataset = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"body": rows[:150]}),
                                    "test": datasets.Dataset.from_dict({"body": rows[150:]})})
    dataset.save_to_disk(str(tmp_path / "saved"))
    dataset["train"].to_parquet(str(tmp_path / "rows.parquet"))
    saved = load("unused", hf=str(tmp_path / "saved"), text_column="body", block_size=16)
    parquet = load("unused", hf=str(tmp_path / "rows.parquet"), text_column="body", block_size=16)
    expected = "\n\n".join(rows[150:] + rows[:150])  # splits in sorted order: test, train
    assert saved.notes["tokens"] == len(expected.encode()) and parquet.notes["tokens"] == len("\n\n".join(rows[:150]))
    with pytest.raises(UserError, match="no column 'text'"):
        load("unused", hf=str(tmp_path / "saved"), block_size=16)


def test_a_corpus_smaller_than_a_block_per_split_is_refused(tmp_path):
    (tmp_path / "tiny.txt").write_text("x" * 500)
    with pytest.raises(UserError, match="less than one block"):
        load("unused", path=str(tmp_path / "tiny.txt"), block_size=64)
    with pytest.raises(UserError, match="no such file"):
        load("unused", path=str(tmp_path / "absent.txt"))


def test_bigram_baseline_counts_train_pairs_with_add_one_smoothing(tmp_path):
    import math

    from overparam.data.text import bigram_bits_per_byte

    (tmp_path / "ab.txt").write_text("ab" * 1000)
    bundle = load("unused", path=str(tmp_path / "ab.txt"), block_size=8)
    # Train pairs alternate a->b and b->a; each seen pair gets count+1 out of count+256.
    pairs = bundle.train_x.numel()
    a_to_b = int((bundle.train_x == ord("a")).sum())
    b_to_a = pairs - a_to_b
    test_a = int((bundle.test_x == ord("a")).sum())
    test_b = bundle.test_x.numel() - test_a
    nats = -(test_a * math.log((a_to_b + 1) / (a_to_b + 256)) + test_b * math.log((b_to_a + 1) / (b_to_a + 256)))
    assert bigram_bits_per_byte(bundle) == pytest.approx(nats / bundle.test_x.numel() / math.log(2), rel=1e-9)


def test_the_gpt_text_preset_quotes_the_bigram_baseline_of_its_corpus():
    import re
    from pathlib import Path

    from overparam.data.text import bigram_bits_per_byte

    preset = (Path(__file__).resolve().parents[2] / "configs/experiment/gpt_text.yaml").read_text()
    quoted = float(re.search(r"test_bits_per_byte\(level=0\) < ([0-9.]+)", preset).group(1))
    # The corpus is the running Python's own help texts, which differ between Python versions (3.10: 459k
    # characters, bigram 3.641; 3.13: 511k, 3.710): the preset's numbers are those of the version it names.
    measured_on = re.search(r"CPython (3\.\d+)'s help texts", preset).group(1)
    bigram = bigram_bits_per_byte(load("unused", block_size=64))
    if f"{sys.version_info[0]}.{sys.version_info[1]}" != measured_on:
        pytest.skip(f"gpt_text's numbers are for CPython {measured_on}'s help texts; this Python's give {bigram:.3f}")
    assert quoted == pytest.approx(bigram, abs=5e-4)
