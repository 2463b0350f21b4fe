"""method=layer_drop: block influence, angular distance and FinerCut against direct computations; the smaller model
computes what the kept blocks of the original compute; HF shapes round-trip through transformers."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from overparam.errors import UserError
from overparam.models.blocks import decoder_blocks, keep_blocks, remove_sublayer
from overparam.models.gpt import gpt
from overparam.recipes.prune import block_scores


def _tiny_gpt(layers: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    model = gpt((8,), 40, width=16, heads=2, layers=layers).eval()
    with torch.no_grad():  # GPT-2's init makes residual branches tiny; larger ones make the scores differ
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return model


def _by_hand(model, x, blocks=None, skip=()):
    """The GPT's forward written out: embeddings, the listed blocks (sublayers in `skip` left out), head.
    Returns (states entering/leaving each block, logits)."""
    h = model.token(x) + model.position(torch.arange(x.shape[1]))
    states = [h]
    for index in (range(len(model.blocks)) if blocks is None else blocks):
        block = model.blocks[index]
        if (index, "attn") not in skip:
            h = h + block.attn(block.ln1(h))
        if (index, "mlp") not in skip:
            h = h + block.mlp_out(F.gelu(block.mlp_in(block.ln2(h)), approximate="tanh"))
        states.append(h)
    return states, model.head(model.ln_f(h))


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 40, (6, 8), generator=torch.Generator().manual_seed(1))


def test_block_influence_and_angular_distance_equal_a_direct_computation(tokens):
    model = _tiny_gpt()
    with torch.no_grad():
        states, _ = _by_hand(model, tokens)
    states = [s.double() for s in states]
    expected_bi = [float((1 - F.cosine_similarity(states[i], states[i + 1], dim=-1, eps=0)).mean())
                   for i in range(3)]
    got_bi = block_scores.block_influence(model, tokens, batch_size=4)  # two batches: 4 + 2 sequences
    assert got_bi.tolist() == pytest.approx(expected_bi, rel=1e-9, abs=1e-12)
    assert len(set(round(v, 6) for v in expected_bi)) == 3  # distinct scores: the order is informative
    for n in (1, 2):
        expected = [float(torch.arccos(F.cosine_similarity(states[l][:, -1], states[l + n][:, -1], dim=-1,
                                                           eps=0)).mean() / math.pi) for l in range(4 - n)]
        got = block_scores.angular_distances(model, tokens, n, batch_size=4)
        assert got.tolist() == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert block_scores.consecutive_choice(got, n) == list(range(int(torch.tensor(expected).argmin()),
                                                                     int(torch.tensor(expected).argmin()) + n))


def test_the_dropped_model_computes_the_kept_blocks_of_the_original(tokens):
    model = _tiny_gpt(4)
    small = keep_blocks(copy.deepcopy(model), [0, 3])
    assert len(small.blocks) == 2
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        _, expected = _by_hand(model, tokens, blocks=[0, 3])
        assert torch.allclose(small(tokens), expected, atol=1e-6)
        # A sublayer taken out: the stream passes it unchanged, and the block holds fewer parameters.
        remove_sublayer(small, 1, "attn")
        _, expected = _by_hand(model, tokens, blocks=[0, 3], skip={(3, "attn")})
        assert torch.allclose(small(tokens), expected, atol=1e-6)
    assert small.blocks[1].attn is None and small.blocks[1].ln1 is None
    # The saved shape rebuilds it: same names, same outputs.
    rebuilt = gpt((8,), 40, width=16, heads=2, layers=2, removed=["1.attn"]).eval()
    rebuilt.load_state_dict(small.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(tokens), small(tokens))
    with pytest.raises(UserError, match="at least one block"):
        keep_blocks(copy.deepcopy(model), [])


def test_finercut_picks_the_sublayer_whose_removal_changes_the_output_least(tokens):
    model = _tiny_gpt(2, seed=3)
    with torch.no_grad():
        _, full = _by_hand(model, tokens)
        reference = F.log_softmax(full.double(), -1)

        def change(skip):
            _, logits = _by_hand(model, tokens, skip=skip)
            return block_scores.js_divergence(reference, F.log_softmax(logits.double(), -1))

        candidates = [(b, k) for b in range(2) for k in ("attn", "mlp")]
        first = {c: change({c}) for c in candidates}
        best_first = min(first, key=first.get)
        second = {c: change({best_first, c}) for c in candidates if c != best_first}
        best_second = min(second, key=second.get)
    assert len(set(round(v, 9) for v in first.values())) == 4  # brute force separates the candidates
    steps = block_scores.finercut(copy.deepcopy(model), tokens, 2, batch_size=4)
    assert [(s["block"], s["sublayer"]) for s in steps] == [best_first, best_second]
    assert steps[0]["js_divergence"] == pytest.approx(first[best_first], rel=1e-9)
    assert steps[1]["js_divergence"] == pytest.approx(second[best_second], rel=1e-9)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_hf_blocks_dropped_and_sublayers_removed_export_with_the_same_logits(tmp_path, kind, tokens):
    from hf_models import save_tiny
    from transformers import AutoModelForCausalLM

    from overparam.cli.export_hf import hf_to_transformers
    from overparam.models.hf import hf
    from overparam.models.masked import densify

    folder = save_tiny(tmp_path / kind, kind, tokenizer=False, layers=3)
    full = hf((8,), 40, path=str(folder)).eval()
    small = hf((8,), 40, path=str(folder), layers=[0, 2], removed=["1.mlp"]).eval()
    assert len(decoder_blocks(small)) == 2 and small.lm.config.num_hidden_layers == 2
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in full.parameters())
    # The original model with layer 1 passing its input through and layer 2's MLP adding nothing (hooks).
    def identity(module, args, kwargs, output):
        return args[0] if args else kwargs["hidden_states"]

    layers = decoder_blocks(full)
    handles = [layers[1].register_forward_hook(identity, with_kwargs=True),
               layers[2].mlp.register_forward_hook(lambda module, args, output: torch.zeros_like(output))]
    with torch.no_grad():
        expected = small(tokens)
        assert torch.allclose(full(tokens), expected, atol=1e-5)
    for handle in handles:
        handle.remove()
    # transformers' cache is indexed by each attention's layer_idx: renumbered, cached decoding agrees.
    prompt = tokens[:2, :4]
    with torch.no_grad():
        greedy = small.lm.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=False)
        assert torch.equal(small.lm.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=True), greedy)
    densify(small)
    lm = hf_to_transformers(small)
    lm.save_pretrained(str(tmp_path / "out"), safe_serialization=True)
    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"), use_safetensors=True).eval()
    assert loaded.config.num_hidden_layers == 2
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=tokens).logits, expected, atol=1e-5)
        assert torch.equal(loaded.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=True), greedy)

