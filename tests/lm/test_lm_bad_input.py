"""Bad language-model input: one line on stderr, exit 2, nothing written (a table of cases)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_models import save_tiny
from lm_helpers import HF_RUN, TINY_LM, runner, tree_digest



def _not_causal(root: Path) -> list[str]:
    (root / "bert").mkdir()
    (root / "bert" / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    (root / "bert" / "model.safetensors").write_bytes(b"")
    return [*HF_RUN, f"model.path={root / 'bert'}"]


def _no_weights(root: Path) -> list[str]:
    save_tiny(root / "noweights", "gpt2", tokenizer=False, vocab=256)
    (root / "noweights" / "model.safetensors").unlink()
    return [*HF_RUN, f"model.path={root / 'noweights'}"]


def _small_vocabulary(root: Path) -> list[str]:
    return [*HF_RUN, f"model.path={save_tiny(root / 'v200', 'gpt2', tokenizer=False, vocab=200)}"]


def _long_block(root: Path) -> list[str]:
    return [*HF_RUN, f"model.path={save_tiny(root / 'ctx8', 'gpt2', tokenizer=False, vocab=256, context=8)}"]


def _gpt_context(root: Path) -> list[str]:
    return [*TINY_LM, "model.context=8"]


def _tiny_corpus(root: Path) -> list[str]:
    (root / "tiny.txt").write_text("a few words only " * 20)
    return [*TINY_LM, f"dataset.path={root / 'tiny.txt'}"]


def _remote_code(root: Path) -> list[str]:
    return [*HF_RUN, f"model.path={save_tiny(root / 'plain', 'gpt2', tokenizer=False, vocab=256)}",
            "model.trust_remote_code=true"]


def _classifier_on_text(root: Path) -> list[str]:
    return [o for o in TINY_LM if not o.startswith("model")]  # the default model, an MLP classifier


def _label_noise_on_text(root: Path) -> list[str]:
    return [*TINY_LM, "+dataset.label_noise=0.1"]


CASES = [
    (_not_causal, "not a causal language model"),
    (_no_weights, "no *.safetensors weights"),
    (_small_vocabulary, "vocabulary has 200 tokens"),
    (_long_block, "larger than the model's context of 8"),
    (_gpt_context, "larger than model.context=8"),
    (_tiny_corpus, "less than one block"),
    (_remote_code, "trust_remote_code=true is refused"),
    (_classifier_on_text, "model=mlp is not a language model"),
    (_label_noise_on_text, "dataset.label_noise=0.1 is for classifiers"),
]


@pytest.mark.parametrize("build,message", CASES, ids=[c[0].__name__.strip("_") for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, build, message):
    args = build(tmp_path)
    before = tree_digest(tmp_path)
    result = runner(["train", *args, "hydra.run.dir=outputs/run"], tmp_path)
    assert result.returncode == 2, result.stderr[-1500:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr[-1500:]
    assert tree_digest(tmp_path) == before
