"""Text for next-token prediction: a corpus cut into train/val/test spans, then into fixed-length blocks.

The corpus is, in this order: `hf` (any Hugging Face `datasets` source with a text column: a hub id, a
`save_to_disk` folder, parquet/json/csv files), `path` (a text file, or a folder whose .txt/.md/.rst files
are read in sorted order; links are not followed), else the default corpus: the English help texts CPython
ships in `pydoc_data.topics` (~465k characters). That module is part of every CPython install, stays the
same within a Python release, and is prose (with code examples) rather than source code, so a byte-level
model's perplexity on it means what it means on ordinary English text; nothing is downloaded.

Tokens are bytes (UTF-8, vocabulary 256) unless `tokenizer` names a folder with a Hugging Face tokenizer
(a `model=hf` run passes the model's own). The token stream is cut into three disjoint contiguous spans:
test and val (`test_fraction`, `val_fraction` of the tokens) start at an offset drawn from `split_seed`
alone, train is the rest (the spans wrap around the end of the stream). Each span is cut into
non-overlapping blocks of `block_size` inputs, whose targets are the same tokens shifted by one; no block
crosses a span boundary, so no target of train is an input or target of val or test.

`bytes_per_token` (UTF-8 bytes of the corpus over its token count; 1 for bytes) turns nats per token into
bits per byte, which compares models with different tokenizers.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from overparam.data.bundle import DataBundle
from overparam.errors import UserError

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".text")
# load_dataset passes val_fraction and split_seed to this loader: the split is of token spans, not rows.
owns_split = True


def default_corpus() -> str:
    """CPython's English help topics, in sorted topic order (the same text on every machine with this Python)."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))


def _read_path(path: str) -> str:
    root = Path(path).expanduser()
    if root.is_file():
        files = [root]
    elif root.is_dir():
        # os.walk does not descend into linked folders, and linked files are skipped: nothing outside is read.
        files = sorted(Path(folder) / name for folder, _, names in os.walk(root) for name in names
                       if Path(name).suffix.lower() in TEXT_SUFFIXES and not (Path(folder) / name).is_symlink())
        if not files:
            raise UserError(f"dataset.path={path}: no {'/'.join(TEXT_SUFFIXES)} files in this folder")
    else:
        raise UserError(f"dataset.path={path}: no such file or folder")
    try:
        return "\n\n".join(f.read_text(encoding="utf-8", errors="replace") for f in files)
    except OSError as exc:
        raise UserError(f"dataset.path={path}: cannot read ({exc.strerror or exc})") from None


def _read_hf(source: str, config_name: str | None, text_column: str, cache_dir: str | None) -> str:
    """Every row's text of every split (splits in sorted order), joined by blank lines."""
    from overparam.data.hf import _open

    splits = _open(source, config_name, "train", "test", cache_dir)
    parts = []
    for split_name in sorted(splits):
        split = splits[split_name]
        if text_column not in split.column_names:
            raise UserError(f"dataset.hf={source}: no column {text_column!r} in split {split_name!r}; "
                            f"columns: {', '.join(split.column_names)} (set dataset.text_column)")
        parts.extend(str(t) for t in split[text_column] if t)
    return "\n\n".join(parts)


def encode(text: str, tokenizer: str | None) -> tuple[torch.Tensor, int]:
    """(token ids as int64, vocabulary size): UTF-8 bytes, or the tokenizer saved in the folder `tokenizer`."""
    from overparam.models.hf import has_tokenizer

    if not tokenizer or not has_tokenizer(tokenizer):
        return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long(), 256
    from overparam.models.hf import load_tokenizer

    tok = load_tokenizer(tokenizer)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long), int(len(tok))


def span_bounds(total: int, val_fraction: float, test_fraction: float, split_seed: int) -> dict[str, list]:
    """{split: [(start, end), ...]}: test then val from a seeded offset, train the rest (wrapping around)."""
    for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise UserError(f"dataset.{key} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise UserError("dataset.val_fraction + dataset.test_fraction must leave tokens to train on")
    n_test, n_val = int(round(total * test_fraction)), int(round(total * val_fraction))
    offset = int(torch.randint(0, max(total, 1), (1,), generator=torch.Generator().manual_seed(int(split_seed) + 104729)))

    def ranges(start: int, length: int) -> list:
        start %= max(total, 1)
        end = start + length
        return [(start, end)] if end <= total else [(start, total), (0, end - total)]

    used = n_test + n_val
    return {"test": ranges(offset, n_test), "val": ranges(offset + n_test, n_val),
            "train": ranges(offset + used, total - used)}


def blocks(tokens: torch.Tensor, spans: list, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), each (N, block_size): non-overlapping blocks inside each span, targets shifted by one."""
    xs, ys = [], []
    for start, end in spans:
        piece = tokens[start:end]
        count = (len(piece) - 1) // block_size
        if count > 0:
            used = piece[: count * block_size + 1]
            xs.append(used[:-1].view(count, block_size))
            ys.append(used[1:].view(count, block_size))
    if not xs:
        return torch.zeros(0, block_size, dtype=torch.long), torch.zeros(0, block_size, dtype=torch.long)
    return torch.cat(xs), torch.cat(ys)


def load(data_dir: str, path: str | None = None, hf: str | None = None, config_name: str | None = None,
         text_column: str = "text", block_size: int = 64, val_fraction: float = 0.05, test_fraction: float = 0.05,
         split_seed: int = 0, tokenizer: str | None = None, max_chars: int | None = None,
         cache_dir: str | None = None) -> DataBundle:
    """Next-token blocks of the corpus (see the module docstring); x and y are (N, block_size) int64."""
    block_size = int(block_size)
    if block_size < 1:
        raise UserError(f"dataset.block_size must be a positive number of tokens, got {block_size}")
    if hf and path:
        raise UserError("dataset.hf and dataset.path name two corpora; give one")
    if hf:
        text, source = _read_hf(str(hf), config_name, str(text_column), cache_dir), f"hf:{hf}"
    elif path:
        text, source = _read_path(str(path)), f"text:{Path(str(path)).name}"
    else:
        text, source = default_corpus(), "text:pydoc_topics"
    if max_chars:
        text = text[: int(max_chars)]
    tokens, vocab = encode(text, tokenizer)
    bounds = span_bounds(len(tokens), float(val_fraction), float(test_fraction), int(split_seed))
    splits = {name: blocks(tokens, spans, block_size) for name, spans in bounds.items()}
    for name, (x, _) in splits.items():
        if len(x) == 0 and (name != "val" or val_fraction):
            raise UserError(f"dataset text: the corpus ({len(tokens):,} tokens) leaves {name} less than one block "
                            f"of {block_size + 1} tokens; use a larger corpus, a smaller dataset.block_size or a "
                            f"larger dataset.{name}_fraction")
    per_token = len(text.encode("utf-8")) / max(len(tokens), 1)
    (train_x, train_y), (test_x, test_y), (val_x, val_y) = splits["train"], splits["test"], splits["val"]
    return DataBundle(name=source, train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y,
                      num_classes=vocab, val_x=val_x if len(val_x) else None, val_y=val_y if len(val_x) else None,
                      bytes_per_token=per_token, notes={"tokens": len(tokens), "bytes_per_token": round(per_token, 6)})



def bigram_bits_per_byte(bundle: DataBundle, split: str = "test") -> float:
    """Bits per byte on `split` of an add-one (Laplace) smoothed bigram model counted on the train blocks.

    The baseline a language model must beat on the same corpus, split and tokens: p(next | token) from
    the (input, target) pairs of train, every pair of the vocabulary counted once more.
    """
    x, y = dict(bundle.splits())[split] if split != "train" else (bundle.train_x, bundle.train_y)
    vocab = int(bundle.num_classes)
    counts = torch.ones(vocab * vocab, dtype=torch.float64)
    counts.index_add_(0, (bundle.train_x.flatten() * vocab + bundle.train_y.flatten()).cpu(),
                      torch.ones(bundle.train_x.numel(), dtype=torch.float64))
    log_probs = (counts.view(vocab, vocab) / counts.view(vocab, vocab).sum(dim=1, keepdim=True)).log()
    nats = -log_probs[x.flatten().cpu(), y.flatten().cpu()].mean()
    return float(nats) / math.log(2) / float(bundle.bytes_per_token or 1.0)
