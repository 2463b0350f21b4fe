"""`model=gpt` computes exactly what transformers' GPT2LMHeadModel computes with the same weights."""

from __future__ import annotations

import pytest
import torch

from overparam.errors import UserError
from overparam.models.gpt import gpt

transformers = pytest.importorskip("transformers")


def _gpt2_twin(model, vocab: int, context: int, width: int, heads: int, layers: int):
    """A GPT2LMHeadModel (untied head) holding `model`'s weights; GPT-2's Conv1D stores weights as (in, out)."""
    config = transformers.GPT2Config(vocab_size=vocab, n_positions=context, n_embd=width, n_layer=layers,
                                     n_head=heads, activation_function="gelu_new", tie_word_embeddings=False,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    twin = transformers.GPT2LMHeadModel(config).eval()
    state = {"transformer.wte.weight": model.token.weight, "transformer.wpe.weight": model.position.weight,
             "transformer.ln_f.weight": model.ln_f.weight, "transformer.ln_f.bias": model.ln_f.bias,
             "lm_head.weight": model.head.weight}
    for i, block in enumerate(model.blocks):
        prefix = f"transformer.h.{i}."
        attn = block.attn
        state[prefix + "attn.c_attn.weight"] = torch.cat([attn.q.weight, attn.k.weight, attn.v.weight]).T
        state[prefix + "attn.c_attn.bias"] = torch.cat([attn.q.bias, attn.k.bias, attn.v.bias])
        state[prefix + "attn.c_proj.weight"] = attn.out.weight.T
        state[prefix + "attn.c_proj.bias"] = attn.out.bias
        state[prefix + "mlp.c_fc.weight"] = block.mlp_in.weight.T
        state[prefix + "mlp.c_fc.bias"] = block.mlp_in.bias
        state[prefix + "mlp.c_proj.weight"] = block.mlp_out.weight.T
        state[prefix + "mlp.c_proj.bias"] = block.mlp_out.bias
        for ours, theirs in (("ln1", "ln_1"), ("ln2", "ln_2")):
            state[prefix + f"{theirs}.weight"] = getattr(block, ours).weight
            state[prefix + f"{theirs}.bias"] = getattr(block, ours).bias
    missing, unexpected = twin.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=False)
    assert not unexpected and all("attn.bias" in k or "masked_bias" in k for k in missing)
    return twin


def test_gpt_logits_equal_gpt2_with_the_same_weights():
    torch.manual_seed(0)
    model = gpt((16,), 50, width=32, heads=4, layers=2, context=24).eval()
    with torch.no_grad():  # non-trivial LayerNorm and bias values, so a mix-up of any pair shows
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    twin = _gpt2_twin(model, 50, 24, 32, 4, 2)
    tokens = torch.randint(0, 50, (3, 16))
    with torch.no_grad():
        ours, theirs = model(tokens), twin(tokens).logits
    assert ours.shape == (3, 16, 50)
    assert float((ours - theirs).abs().max()) < 1e-4
    # Causal: changing the last token changes no earlier position's logits.
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 50
    with torch.no_grad():
        assert torch.equal(model(changed)[:, :-1], ours[:, :-1])


def test_every_projection_is_a_linear_and_the_block_must_fit_the_context():
    model = gpt((8,), 256, width=16, heads=2, layers=3)
    linears = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 3 * 6 + 1 and linears[-1] == "head"
    with pytest.raises(UserError, match="larger than model.context=4"):
        gpt((8,), 256, width=16, heads=2, layers=1, context=4)
    with pytest.raises(UserError, match="token ids"):
        gpt((1, 40), 10)
