"""The lean CPU decoding step (machine/cpu_decode.py) and float32 packing (machine/packed.py)."""

import copy

import pytest
import torch
from torch.testing import assert_close

from minitransformer import GPT, activations, generate, practice
from minitransformer.generate import prepare_for_decoding
from minitransformer.kv_cache import KVCache
from minitransformer.machine import cpu_decode
from minitransformer.machine.packed import PackedLinear, packing_available
from minitransformer.model import gelu
from tests.helpers import small_config

VARIANTS = [dict(position="learned"), dict(position="sinusoidal"), dict(position="rope"), dict(position="none"),
            dict(position="rope", attention="manual"), dict(bias=False, gelu="exact"), dict(mlp=False),
            dict(scale_attention=False, tie_weights=False), dict(position="learned", attention="sdpa", n_head=2)]


def random_model(**overrides) -> GPT:
    torch.manual_seed(11)
    model = GPT(small_config(block_size=24, **overrides)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)  # biases and LayerNorms away from 0 and 1
    return model


@pytest.mark.parametrize("overrides", VARIANTS)
def test_lean_step_computes_the_models_logits_and_cache(overrides):
    model = random_model(**overrides)
    tokens = torch.randint(0, 37, (1, 20))
    ours, theirs = KVCache(model.config.n_layer, 24), KVCache(model.config.n_layer, 24)
    with torch.no_grad():
        model.next_token_logits(tokens[:, :3], ours)
        model.next_token_logits(tokens[:, :3], theirs)
        for t in range(3, 20):
            assert cpu_decode.lean_step_applies(model, 1, ours)
            lean = cpu_decode.lean_step(model, tokens[:, t:t + 1], ours)
            assert_close(lean, model.next_token_logits(tokens[:, t:t + 1], theirs), atol=1e-5, rtol=1e-5)
    assert ours.length == theirs.length == 20
    for layer in range(model.config.n_layer):
        assert_close(ours.keys[layer][:, :, :20], theirs.keys[layer][:, :, :20], atol=1e-6, rtol=1e-6)
        assert_close(ours.values[layer][:, :, :20], theirs.values[layer][:, :, :20], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("overrides", VARIANTS[:4])
def test_generation_with_the_lean_step_writes_the_uncached_models_text(overrides):
    model = random_model(**overrides)
    prompt = torch.randint(0, 37, (1, 4))
    assert torch.equal(generate(model, prompt, 40, temperature=0.0),  # past block_size 24: the window slides
                       generate(model, prompt, 40, temperature=0.0, use_cache=False))


def test_anyone_looking_inside_gets_the_models_own_forward_pass():
    """Taps, hooks, a learner's piece, training mode, a batch or left padding: the lean step
    would skip what they see or change, so the model's own step runs."""
    model = random_model()
    cache = KVCache(2, 24)
    assert cpu_decode.lean_step_applies(model, 1, cache)
    assert not cpu_decode.lean_step_applies(model, 2, cache)
    assert not cpu_decode.lean_step_applies(model, 1, KVCache(2, 24, torch.tensor([1])))
    with activations.record(model, ["blocks.0.mlp.hidden"]):
        assert not cpu_decode.lean_step_applies(model, 1, cache)
    handle = model.blocks[1].register_forward_hook(lambda *args: None)
    assert not cpu_decode.lean_step_applies(model, 1, cache)
    handle.remove()
    with practice.use(gelu=lambda x: gelu(x)):
        assert not cpu_decode.lean_step_applies(model, 1, cache)
    assert not cpu_decode.lean_step_applies(model.train(), 1, cache)


def test_an_ablation_changes_generated_text_as_without_the_lean_step():
    """Ablating every head makes the text depend on positions only; the generation honours it."""
    model = random_model(position="learned")
    prompt = torch.randint(0, 37, (1, 3))
    plain = generate(model, prompt, 15, temperature=0.0)
    heads = [(layer, head) for layer in range(2) for head in range(4)]
    with activations.ablate(model, heads=heads):
        ablated = generate(model, prompt, 15, temperature=0.0)
        uncached = generate(model, prompt, 15, temperature=0.0, use_cache=False)
    assert torch.equal(ablated, uncached) and not torch.equal(ablated, plain)


@pytest.mark.skipif(not packing_available(torch.float32), reason="needs oneDNN on an x86 CPU")
def test_float32_packing_agrees_with_the_plain_model_to_rounding():
    model = random_model(position="rope")
    packed = prepare_for_decoding(copy.deepcopy(model), torch.float32)
    assert sum(isinstance(module, PackedLinear) for module in packed.modules()) == 4 * 2 + 1  # four in each of 2 blocks, and the head
    idx = torch.randint(0, 37, (3, 11))
    with torch.no_grad():
        assert_close(packed.next_token_logits(idx), model.next_token_logits(idx), atol=1e-5, rtol=1e-5)
    prompt = torch.randint(0, 37, (1, 5))
    assert torch.equal(generate(packed, prompt, 30, temperature=0.0), generate(model, prompt, 30, temperature=0.0))
