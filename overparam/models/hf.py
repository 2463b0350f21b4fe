"""`model=hf model.path=<folder>`: a Hugging Face causal LM saved on disk, as a model of the zoo.

The folder is data, never code: it is read with `transformers` offline (`local_files_only`), weights from
safetensors only (`use_safetensors=True`), and `trust_remote_code` is never passed (a config whose
`auto_map` asks for code of its own is refused). What it must hold is checked first, so a folder that
lacks something is one line: config.json naming a causal-LM architecture, *.safetensors weights.

GPT-2 stores its projections as `transformers.pytorch_utils.Conv1D` (weight (in, out)); they become
`nn.Linear` (weight (out, in)) on loading, so masks, LoRA and merges reach them as they reach every other
Linear, and `export_folder` turns them back. The output head is untied from the token embedding (its own
copy), so pruning or merging one never silently changes the other; an exported folder says so in its
config (`tie_word_embeddings: false`).

The model's own tokenizer (tokenizer.json / tokenizer_config.json in the folder) tokenizes dataset=text
(configs/model/hf.yaml passes the folder as `dataset.tokenizer`); a folder without one reads bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from overparam.errors import UserError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def quiet() -> None:
    """transformers without progress bars and warnings: a run's log stays the runner's own."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def _folder(path) -> Path:
    if not path:
        raise UserError("model=hf needs model.path=<folder with config.json and *.safetensors>")
    folder = Path(str(path)).expanduser()
    if not folder.is_dir():
        raise UserError(f"model.path={path}: no such folder")
    return folder


def check_folder(path) -> dict:
    """The folder's config.json as a dict, once it is known to describe a causal LM with safetensors weights."""
    folder = _folder(path)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise UserError(f"model.path={path}: no config.json; save the model with save_pretrained")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"model.path={path}: config.json is not readable JSON ({exc})") from None
    if not isinstance(config, dict):
        raise UserError(f"model.path={path}: config.json is not a JSON object")
    if config.get("auto_map"):
        raise UserError(f"model.path={path}: the config asks for code of its own (auto_map); trust_remote_code "
                        f"is never used")
    architectures = config.get("architectures") or []
    if not any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        raise UserError(f"model.path={path}: not a causal language model (architectures: "
                        f"{', '.join(map(str, architectures)) or 'none'})")
    if not any(folder.glob("*.safetensors")):
        raise UserError(f"model.path={path}: no *.safetensors weights (other weight formats are not loaded)")
    return config


def has_tokenizer(path) -> bool:
    folder = Path(str(path)).expanduser()
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def load_tokenizer(path):
    """The tokenizer saved in the folder `path` (offline, no remote code)."""
    from transformers import AutoTokenizer

    quiet()

    if not has_tokenizer(path):
        raise UserError(f"tokenizer {path}: no tokenizer files ({', '.join(TOKENIZER_FILES)}) in this folder")
    try:
        return AutoTokenizer.from_pretrained(str(Path(str(path)).expanduser()), local_files_only=True,
                                             trust_remote_code=False)
    except Exception as exc:  # noqa: BLE001 - a broken or foreign tokenizer folder is one line
        raise UserError(f"tokenizer {path}: cannot load ({str(exc).strip().splitlines()[0][:200]})") from None


def _conv1d_to_linear(model: nn.Module) -> list[str]:
    """Swap every GPT-2 Conv1D for an equal nn.Linear; returns the swapped modules' names."""
    from transformers.pytorch_utils import Conv1D

    from overparam.models.paths import replace_module

    names = [name for name, m in model.named_modules() if isinstance(m, Conv1D)]
    for name in names:
        conv = model.get_submodule(name)
        linear = nn.Linear(conv.weight.shape[0], conv.weight.shape[1], bias=conv.bias is not None,
                           device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(conv.weight.T)
            if conv.bias is not None:
                linear.bias.copy_(conv.bias)
        replace_module(model, name, linear)
    return names


class HFCausalLM(nn.Module):
    """(N, T) token ids -> (N, T, vocabulary) logits of the wrapped transformers model `lm`."""

    language_model = True
    output_layer = "lm.lm_head"

    def __init__(self, lm: nn.Module, conv1d_names: list[str], context: int | None):
        super().__init__()
        self.lm = lm
        self.conv1d_names = conv1d_names
        self.context = context

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():  # a shape probe (FLOP counting, dry runs) passes zeros as floats
            x = x.long()
        return self.lm(input_ids=x, use_cache=False).logits

    def permutation_spec(self):
        raise UserError("model hf has no permutation spec; merge runs that share one initialization instead")


def _context(config: dict) -> int | None:
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        if isinstance(config.get(key), int):
            return int(config[key])
    return None


def hf(input_shape, num_classes: int, path: str | None = None, tokenizer: str | None = None,
       trust_remote_code: bool = False, dtype: str = "float32", layers=None, removed=None) -> nn.Module:
    """The causal LM saved in the folder `path`, checked against the data's blocks and vocabulary.

    `layers` (the folder's decoder layers kept) and `removed` (sublayers taken out) give the smaller shape
    `method=layer_drop` saves."""
    if trust_remote_code:
        raise UserError("model.trust_remote_code=true is refused: a model folder is data, never code to run")
    config = check_folder(path)
    if len(tuple(input_shape)) != 1:
        raise UserError(f"model hf needs blocks of token ids (dataset=text); the dataset gives inputs of shape "
                        f"{tuple(input_shape)}")
    vocab, context = config.get("vocab_size"), _context(config)
    if isinstance(vocab, int) and num_classes > vocab:
        raise UserError(f"model.path={path}: its vocabulary has {vocab} tokens but the data's tokens run to "
                        f"{num_classes}; tokenize with the model's own tokenizer (dataset.tokenizer)")
    if context is not None and int(input_shape[0]) > context:
        raise UserError(f"dataset.block_size={input_shape[0]} is larger than the model's context of {context}")
    from transformers import AutoModelForCausalLM

    quiet()
    try:
        lm = AutoModelForCausalLM.from_pretrained(str(_folder(path)), use_safetensors=True, local_files_only=True,
                                                  trust_remote_code=False, dtype=getattr(torch, str(dtype)))
    except Exception as exc:  # noqa: BLE001 - an incomplete or foreign folder is one line
        raise UserError(f"model.path={path}: cannot load ({str(exc).strip().splitlines()[0][:200]})") from None
    head = lm.get_output_embeddings()
    if head is not None and head.weight is lm.get_input_embeddings().weight:
        head.weight = nn.Parameter(head.weight.detach().clone())
    lm.config.tie_word_embeddings = False
    lm.train()
    model = HFCausalLM(lm, _conv1d_to_linear(lm), context)
    if layers is not None or removed:
        from overparam.models.blocks import apply_shape

        apply_shape(model, layers, removed)
    return model


hf.language_model = True  # takes (N, T) token ids and gives (N, T, vocabulary) logits
