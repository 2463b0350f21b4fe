"""Tiny random Hugging Face causal LMs (GPT-2 and Llama, 2 layers) with a tokenizer trained here, saved to a folder."""

from __future__ import annotations

from pathlib import Path

from overparam.data.text import default_corpus


def train_tokenizer(vocab: int = 300):
    """A byte-level BPE tokenizer trained on the first 50k characters of the default corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([default_corpus()[:50_000]], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>")


def save_tiny(folder: Path, kind: str, *, tokenizer: bool = True, vocab: int = 300, context: int = 64,
              layers: int = 2) -> Path:
    """A randomly initialized `layers`-layer `kind` ("gpt2" or "llama") saved with save_pretrained (safetensors)."""
    import torch
    import transformers

    torch.manual_seed(0)
    if kind == "gpt2":
        config = transformers.GPT2Config(vocab_size=vocab, n_positions=context, n_embd=32, n_layer=layers, n_head=2,
                                         bos_token_id=0, eos_token_id=0)
        model = transformers.GPT2LMHeadModel(config)
    else:
        config = transformers.LlamaConfig(vocab_size=vocab, max_position_embeddings=context, hidden_size=32,
                                          intermediate_size=64, num_hidden_layers=layers, num_attention_heads=2,
                                          num_key_value_heads=1, bos_token_id=0, eos_token_id=0)
        model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(str(folder), safe_serialization=True)
    if tokenizer:
        train_tokenizer(vocab).save_pretrained(str(folder))
    return folder
