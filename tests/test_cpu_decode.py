"""The lean CPU decoding step (machine/cpu_decode.py), float32 packing (machine/packed.py) and
16-bit weights for CPUs that emulate 16-bit arithmetic (machine/half_weights.py)."""

import copy
import importlib

import pytest
import torch
from torch.testing import assert_close

from minitransformer import GPT, activations, generate, practice
from minitransformer.generate import decoding_dtype, prepare_for_decoding
from minitransformer.kv_cache import KVCache
from minitransformer.machine import cpu_decode
from minitransformer.errors import UserError
from minitransformer.machine.half_weights import FLOAT16_SAFE, ROWS_IN_HALF, HalfWeightsLinear, float16_bound, store_half_weights
from minitransformer.machine.device import choose_dtype
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


@pytest.mark.parametrize("weights", ["float32", "bf16 weights", "float16 weights", "bf16 model"])
@pytest.mark.parametrize("overrides", VARIANTS)
def test_lean_step_computes_the_models_logits_and_cache(overrides, weights):
    """The same numbers as the model's own step: in float32, with bf16 or float16 weights in a
    float32 model (whose products the lean step calls directly), and in a model all in bf16 (as
    `sample --dtype bfloat16` makes one where the CPU computes bf16). With float16 weights the
    lean step's GELU reads the float16 hidden layer, so a hidden value may round one float16 step
    (2^-11 of it) the other way, which these weights (0.3 of noise) carry to the logits as about
    1e-4 (cpu_decode.py)."""
    model = random_model(**overrides)
    if weights.endswith(" weights"):
        store_half_weights(model, torch.bfloat16 if weights == "bf16 weights" else torch.float16)
    elif weights == "bf16 model":
        model.to(torch.bfloat16)
    tokens = torch.randint(0, 37, (1, 20))
    ours, theirs = KVCache(model.config.n_layer, 24), KVCache(model.config.n_layer, 24)
    with torch.no_grad():
        model.next_token_logits(tokens[:, :3], ours)
        model.next_token_logits(tokens[:, :3], theirs)
        decoder = cpu_decode.lean_decoder(model, 1)
        # (logits, cache): one float16 step of a hidden value reaches the next layers' keys too
        tolerance, cache_tolerance = (1e-3, 1e-3) if weights == "float16 weights" else (1e-5, 1e-6)
        for t in range(3, 20):
            lean = decoder.step(tokens[:, t:t + 1], ours)
            assert_close(lean, model.next_token_logits(tokens[:, t:t + 1], theirs), atol=tolerance, rtol=tolerance)
    assert ours.length == theirs.length == 20
    for layer in range(model.config.n_layer):
        assert_close(ours.keys[layer][:, :, :20], theirs.keys[layer][:, :, :20], atol=cache_tolerance,
                     rtol=cache_tolerance)
        assert_close(ours.values[layer][:, :, :20], theirs.values[layer][:, :, :20], atol=cache_tolerance,
                     rtol=cache_tolerance)


@pytest.mark.parametrize("overrides", VARIANTS[:4])
def test_generation_with_the_lean_step_writes_the_uncached_models_text(overrides):
    model = random_model(**overrides)
    prompt = torch.randint(0, 37, (1, 4))
    assert torch.equal(generate(model, prompt, 40, temperature=0.0),  # past block_size 24: the window slides
                       generate(model, prompt, 40, temperature=0.0, use_cache=False))


def test_anyone_looking_inside_gets_the_models_own_forward_pass():
    """Taps, hooks, a learner's piece, training mode or a batch: the lean step
    would skip what they see or change, so the model's own step runs."""
    model = random_model()
    assert cpu_decode.lean_decoder(model, 1) is not None
    assert cpu_decode.lean_decoder(model, 2) is None
    with activations.record(model, ["blocks.0.mlp.hidden"]):
        assert cpu_decode.lean_decoder(model, 1) is None
    handle = model.blocks[1].register_forward_hook(lambda *args: None)
    assert cpu_decode.lean_decoder(model, 1) is None
    handle.remove()
    with practice.use(gelu=lambda x: gelu(x)):
        assert cpu_decode.lean_decoder(model, 1) is None
    assert cpu_decode.lean_decoder(model.train(), 1) is None


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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_weights_round_only_the_weights_and_keep_several_rows_in_float32(dtype):
    torch.manual_seed(8)
    linear = torch.nn.Linear(48, 20)
    stored = HalfWeightsLinear(linear, dtype)
    weight, bias = linear.weight.detach().to(dtype).float(), linear.bias.detach().to(dtype).float()
    rows = torch.randn(1, ROWS_IN_HALF + 1, 48)
    assert torch.equal(stored(rows), torch.nn.functional.linear(rows, weight, bias))  # widened: float32 products
    few = torch.randn(ROWS_IN_HALF, 1, 48)  # up to ROWS_IN_HALF rows: the 16-bit product, as for one
    assert torch.equal(stored(few), stored.low(few).float())
    one = torch.randn(1, 1, 48)
    out = stored(one)
    assert out.dtype == torch.float32 and torch.equal(out, stored.low(one).float())
    tolerance = 0.02 if dtype == torch.bfloat16 else 0.003  # float16 rounds 8x more finely
    assert_close(out, torch.nn.functional.linear(one, weight, bias), atol=tolerance, rtol=tolerance / 2)


def test_a_cpu_that_emulates_bf16_decodes_with_bf16_weights_and_float32_elsewhere(monkeypatch):
    monkeypatch.setattr(importlib.import_module("minitransformer.generate"), "cpu_computes_bf16", lambda: False)
    model = random_model(position="rope")
    low = prepare_for_decoding(copy.deepcopy(model), torch.bfloat16)
    assert sum(isinstance(module, HalfWeightsLinear) for module in low.modules()) == 4 * 2 + 1
    assert low.wte.weight.dtype == torch.float32 and low.ln_f.weight.dtype == torch.float32
    idx = torch.randint(0, 37, (2, 13))
    with torch.no_grad():
        reference = model.next_token_logits(idx)
        assert (low.next_token_logits(idx) - reference).abs().max() < 0.03 * reference.abs().max()
    prompt = torch.randint(0, 37, (1, 4))  # the lean step and the model's own agree in bf16 weights too
    assert torch.equal(generate(low, prompt, 40, temperature=0.0), generate(low, prompt, 40, temperature=0.0,
                                                                         use_cache=False))


def test_auto_decoding_precision_is_measured_on_a_cpu_that_emulates_bf16(monkeypatch):
    """Decoding is memory-bound, so "auto" times it in both precisions even without bf16
    instructions (and says why); training there stays float32 without measuring."""
    monkeypatch.setattr("minitransformer.machine.device.cpu_computes_bf16", lambda: False)
    said, calls = [], []

    def measure(dtype):
        calls.append(dtype)
        return 1.0 if dtype == torch.float32 else 0.5
    assert choose_dtype("auto", torch.device("cpu"), "a memory-bound test", measure, said.append,
                        memory_bound=True) == torch.bfloat16
    assert torch.bfloat16 in calls and "reading the weights" in said[0]
    calls.clear()
    assert choose_dtype("auto", torch.device("cpu"), "a training test", measure) == torch.float32 and not calls


@pytest.fixture
def emulating_cpu(monkeypatch) -> list:
    """A CPU without bf16 instructions, whose decoding timings say 16-bit weights run twice as
    fast as float32; returns the list of the dtypes timed."""
    generate_module = importlib.import_module("minitransformer.generate")
    monkeypatch.setattr("minitransformer.machine.device.cpu_computes_bf16", lambda: False)
    monkeypatch.setattr(generate_module, "cpu_computes_bf16", lambda: False)
    timed = []
    monkeypatch.setattr(generate_module, "decoding_timer", lambda model: lambda dtype: timed.append(dtype) or
                        (1.0 if dtype == torch.float32 else 0.5))
    return timed


def large_model() -> GPT:
    """A model whose linear weights reach MEMORY_BOUND_BYTES: 12 C^2 x 4 bytes = 18.75 MiB."""
    return GPT(small_config(n_layer=1, n_embd=640, n_head=4, vocab_size=37))


def test_only_a_model_whose_weights_outgrow_the_caches_measures_bf16_on_an_emulating_cpu(emulating_cpu):
    """A small model's text never depends on a timing: float32, unmeasured. A large one is measured."""
    timed, cpu = emulating_cpu, torch.device("cpu")
    assert decoding_dtype(random_model(), "auto", cpu) == torch.float32 and not timed
    large = large_model()
    assert decoding_dtype(large, "auto", cpu, remeasure=True) == torch.float16
    assert torch.float16 in timed  # float16 weights: float16_bound proves this model cannot overflow them
    timed.clear()  # several rows at once: matrix-matrix products, float32 without measuring
    assert decoding_dtype(large, "auto", cpu, rows=8) == torch.float32 and not timed


@pytest.mark.parametrize("overrides", VARIANTS)
def test_float16_bound_holds_every_number_going_into_or_out_of_a_linear_layer(overrides):
    model = random_model(**overrides)
    seen = []
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(lambda _, inputs, out: seen.append(max(inputs[0].abs().max(), out.abs().max())))
    with torch.no_grad():
        model(torch.randint(0, 37, (8, 24)))
        model(torch.full((1, 24), 5))  # one token repeated: every position alike
    assert len(seen) == sum(isinstance(module, torch.nn.Linear) for module in model.modules()) * 2
    assert max(seen) <= float16_bound(model)


def test_a_layer_norms_output_reaches_sqrt_of_c_minus_1_and_no_further():
    """The fact float16_bound rests on: a LayerNorm of C numbers is at most sqrt(C - 1) in size,
    reached when one number stands apart from all the others, however far."""
    C = 48
    spike = torch.zeros(C)
    spike[7] = 1e6
    ones = torch.ones(C)
    out = torch.nn.functional.layer_norm(spike, (C,), ones, None, 1e-5)
    assert_close(out.abs().max(), torch.tensor((C - 1) ** 0.5))
    spread = torch.nn.functional.layer_norm(torch.randn(1000, C) * 1e3, (C,), ones, None, 1e-5)
    assert spread.abs().max() <= (C - 1) ** 0.5


def test_float16_weights_only_where_nothing_can_overflow(emulating_cpu):
    timed, large = emulating_cpu, large_model()
    assert float16_bound(large) < FLOAT16_SAFE
    with torch.no_grad():
        large.ln_f.weight.fill_(1e4)  # the logits could reach millions
    assert float16_bound(large) >= FLOAT16_SAFE
    assert decoding_dtype(large, "auto", torch.device("cpu"), remeasure=True) == torch.bfloat16
    assert timed and torch.float16 not in timed
    with pytest.raises(UserError, match="bfloat16"):
        prepare_for_decoding(large, torch.float16)
    with torch.no_grad():
        large.ln_f.weight.fill_(float("nan"))  # broken weights: no bound at all
    assert float16_bound(large) == float("inf")


def test_float16_weights_write_the_same_greedy_text_with_and_without_the_cache():
    model = prepare_for_decoding(random_model(position="rope"), torch.float16)
    assert {module.weight.dtype for module in model.modules() if isinstance(module, HalfWeightsLinear)} == {torch.float16}
    assert model.wte.weight.dtype == torch.float32
    prompt = torch.randint(0, 37, (1, 4))
    assert torch.equal(generate(model, prompt, 40, temperature=0.0), generate(model, prompt, 40, temperature=0.0,
                                                                           use_cache=False))
