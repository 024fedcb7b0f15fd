"""Generation: the key/value cache, cropping past block_size, and the sampling rules."""

import copy

import pytest
import torch
from torch.testing import assert_close

from minitransformer import GPT, generate, generate_batch
from minitransformer.errors import UserError
from minitransformer.machine.packed import PackedLinear, packing_available
from minitransformer.generate import draw, prepare_for_decoding, sample_next
from minitransformer.kv_cache import KVCache
from tests.helpers import ATTENTIONS, POSITIONS, small_config

TOL = dict(atol=1e-5, rtol=1e-5)


def trained_looking_model(**overrides) -> GPT:
    """A random model with larger weights than at init, so its logits are far from uniform."""
    model = GPT(small_config(**overrides)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(4)
    return model


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("position", POSITIONS)
def test_cached_logits_match_full_forward(position, attention):
    model = trained_looking_model(position=position, attention=attention)
    idx = torch.randint(0, 37, (2, 16))
    full, _ = model(idx)
    cache = KVCache(model.config.n_layer, model.config.block_size)
    pieces = [model(idx[:, :6], cache=cache)[0]]
    for t in range(6, 16):
        pieces.append(model(idx[:, t : t + 1], cache=cache)[0])
    assert cache.length == 16
    assert_close(torch.cat(pieces, dim=1), full, **TOL)


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_cached_generation_equals_uncached(position, temperature):
    model = trained_looking_model(position=position)
    prompt = torch.randint(0, 37, (2, 5))
    # 30 new tokens run well past block_size = 16, so the sliding window is exercised too.
    runs = []
    for use_cache in (True, False):
        generator = torch.Generator().manual_seed(7)
        runs.append(generate(model, prompt, 30, temperature=temperature, use_cache=use_cache, generator=generator))
    assert runs[0].shape == (2, 35)
    assert torch.equal(runs[0], runs[1])
    assert torch.equal(runs[0][:, :5], prompt)


def test_greedy_generation_picks_the_argmax_of_a_full_pass():
    model = trained_looking_model()
    prompt = torch.randint(0, 37, (1, 4))
    out = generate(model, prompt, 6, temperature=0.0)
    for t in range(4, 10):
        logits, _ = model(out[:, :t])
        assert out[0, t].item() == logits[0, -1].argmax().item()


def test_same_seed_same_sample_and_different_seed_differs():
    model = trained_looking_model()
    prompt = torch.randint(0, 37, (1, 3))
    a = generate(model, prompt, 20, generator=torch.Generator().manual_seed(1))
    b = generate(model, prompt, 20, generator=torch.Generator().manual_seed(1))
    c = generate(model, prompt, 20, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_generate_restores_training_mode():
    model = GPT(small_config()).train()
    generate(model, torch.zeros(1, 1, dtype=torch.long), 2)
    assert model.training


def test_top_k_only_samples_the_k_most_likely():
    logits = torch.randn(4, 37)
    allowed = torch.topk(logits, 3).indices
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        token = sample_next(logits, top_k=3, generator=generator)  # (4, 1)
        assert torch.all((allowed == token).any(dim=1))


def test_draw_is_torch_multinomial_draw_for_draw():
    """The same generator gives the same tokens as torch.multinomial and leaves it in the same
    state, with zero probabilities (top-k, top-p) and unnormalised rows."""
    torch.manual_seed(0)
    for trial in range(100):
        B, V = int(torch.randint(1, 6, ())), int(torch.randint(2, 200, ()))
        probs = torch.softmax(3 * torch.randn(B, V), dim=-1) * float(torch.rand(()) + 0.5)
        if trial % 2:
            probs[:, torch.randperm(V)[: V // 2]] = 0.0
        ours, theirs = torch.Generator().manual_seed(trial), torch.Generator().manual_seed(trial)
        assert torch.equal(draw(probs, ours), torch.multinomial(probs, 1, generator=theirs))
        assert torch.equal(ours.get_state(), theirs.get_state())


def test_draw_follows_the_probabilities():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0]).repeat(40_000, 1)  # (40000, 5): 40,000 draws at once
    counts = torch.bincount(draw(probs, torch.Generator().manual_seed(0)).flatten(), minlength=5)
    # Each frequency's standard deviation is at most 0.0025 here; 0.01 is four of them.
    assert torch.allclose(counts / 40_000, probs[0], atol=0.01)
    assert counts[4] == 0


def test_top_p_keeps_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    generator = torch.Generator().manual_seed(0)
    seen = {sample_next(logits, top_p=0.75, generator=generator).item() for _ in range(300)}
    assert seen == {0, 1}  # 0.5 < 0.75, 0.5 + 0.3 reaches it: tokens 2 and 3 are cut
    seen = {sample_next(logits, top_p=0.1, generator=generator).item() for _ in range(50)}
    assert seen == {0}  # the most likely token always stays


def test_temperature_zero_is_greedy():
    logits = torch.randn(5, 37)
    assert torch.equal(sample_next(logits, temperature=0.0), logits.argmax(-1, keepdim=True))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=-1.0), "temperature"),
        (dict(top_k=0), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(max_new_tokens=2.5), "max_new_tokens"),
        (dict(max_new_tokens=True), "max_new_tokens"),
    ],
)
def test_bad_sampling_settings_are_clear_errors(kwargs, message):
    model = GPT(small_config())
    kwargs = {"max_new_tokens": 3, **kwargs}
    with pytest.raises(UserError, match=message):
        generate(model, torch.zeros(1, 1, dtype=torch.long), **kwargs)
    with pytest.raises(UserError, match=message):
        generate_batch(model, [[0]], **kwargs)


def banning(model: GPT, banned: list[int], value: float):
    """A hook that sets the banned tokens' scores to value in every forward pass."""
    def hook(module, inputs, output):
        output = output.clone()
        output[..., banned] = value
        return output

    return model.lm_head.register_forward_hook(hook)


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.0, None, None), (1.0, None, None), (0.8, 5, 0.9)])
def test_a_banned_token_is_never_drawn_and_is_no_broken_model(temperature, top_k, top_p):
    """-inf is a ban, not a fault: the other tokens are drawn as usual, the banned one never."""
    model = trained_looking_model()
    prompt = torch.zeros(2, 1, dtype=torch.long)
    free = generate(model, prompt, 20, temperature=0.0)
    banned = sorted(set(free[:, 1:].flatten().tolist()))  # everything greedy would pick
    handle = banning(model, banned, float("-inf"))
    try:
        out = generate(model, prompt, 20, temperature=temperature, top_k=top_k, top_p=top_p,
                       generator=torch.Generator().manual_seed(0))
        rows = generate_batch(model, [[0], [1, 2]], 20, temperature=temperature, top_k=top_k, top_p=top_p,
                              generator=torch.Generator().manual_seed(0))
    finally:
        handle.remove()
    assert not set(out[:, 1:].flatten().tolist()) & set(banned)
    assert not set(rows[0][1:] + rows[1][2:]) & set(banned)


@pytest.mark.parametrize("value, banned", [(float("nan"), [3]), (float("inf"), [3]), (float("-inf"), "all")])
def test_nan_plus_inf_or_nothing_finite_is_a_broken_model(value, banned):
    model = trained_looking_model()
    handle = banning(model, list(range(model.config.vocab_size)) if banned == "all" else banned, value)
    try:
        for temperature in (0.0, 1.0):
            with pytest.raises(UserError, match="weights are broken"):
                generate(model, torch.zeros(1, 1, dtype=torch.long), 3, temperature=temperature)
    finally:
        handle.remove()


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("position", POSITIONS)
def test_generate_batch_equals_one_by_one_generation(position, attention):
    """Prompts of 1 to 20 tokens (block_size 16), 30 new tokens each: past block_size for every row."""
    model = trained_looking_model(position=position, attention=attention)
    prompts = [torch.randint(0, 37, (length,)).tolist() for length in (1, 4, 9, 16, 20)]
    rows = generate_batch(model, prompts, 30, temperature=0.0)
    for prompt, row in zip(prompts, rows):
        alone = generate(model, torch.tensor([prompt]), 30, temperature=0.0)[0].tolist()
        assert row == alone


def test_padded_rows_see_the_same_logits_as_alone():
    """Left padding, per-row positions and the padding mask: each row's next-token logits equal
    its own forward pass, before any sampling."""
    from minitransformer.kv_cache import KVCache

    model = trained_looking_model(position="rope")
    short, long = torch.randint(0, 37, (3,)), torch.randint(0, 37, (11,))
    padded = torch.stack([torch.cat([torch.zeros(8, dtype=torch.long), short]), long])  # (2, 11)
    cache = KVCache(model.config.n_layer, model.config.block_size, pads=torch.tensor([8, 0]))
    logits = model.next_token_logits(padded, cache)  # (2, V)
    assert_close(logits[0], model(short[None])[0][0, -1], **TOL)
    assert_close(logits[1], model(long[None])[0][0, -1], **TOL)
    step = torch.randint(0, 37, (2, 1))
    logits = model.next_token_logits(step, cache)  # one cached step for both rows
    assert_close(logits[0], model(torch.cat([short, step[0]])[None])[0][0, -1], **TOL)
    assert_close(logits[1], model(torch.cat([long, step[1]])[None])[0][0, -1], **TOL)


def test_generate_batch_samples_reproducibly_and_keeps_the_prompts():
    model = trained_looking_model()
    prompts = [[1, 2, 3], [4], [5, 6, 7, 8, 9]]
    first = generate_batch(model, prompts, 12, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(3))
    again = generate_batch(model, prompts, 12, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(3))
    assert first == again and [row[: len(p)] for row, p in zip(first, prompts)] == prompts
    assert [len(row) for row in first] == [3 + 12, 1 + 12, 5 + 12]


def test_generate_batch_refuses_empty_prompts():
    with pytest.raises(UserError, match="every prompt"):
        generate_batch(trained_looking_model(), [[1], []], 3)


def test_next_token_logits_equal_the_last_position_of_forward():
    model = trained_looking_model()
    idx = torch.randint(0, 37, (3, 9))
    assert_close(model.next_token_logits(idx), model(idx)[0][:, -1], **TOL)


def test_bf16_decoding_follows_float32_closely():
    """A bf16 copy of the weights (the fast path on CPUs with bf16 instructions) computes logits
    within bf16's precision of float32's."""
    model = trained_looking_model()
    idx = torch.randint(0, 37, (2, 12))
    reference = model.next_token_logits(idx)
    low = copy.deepcopy(model).to(torch.bfloat16).next_token_logits(idx).float()
    assert (low - reference).abs().max() < 0.05 * reference.abs().max()


@pytest.mark.skipif(not packing_available(), reason="needs oneDNN and a CPU with bf16 instructions")
def test_packed_linears_compute_what_the_bf16_model_computes():
    model = trained_looking_model(position="rope")
    plain = copy.deepcopy(model).to(torch.bfloat16)
    packed = prepare_for_decoding(copy.deepcopy(model), torch.bfloat16)
    assert any(isinstance(module, PackedLinear) for module in packed.modules())
    idx = torch.randint(0, 37, (3, 11))
    assert_close(packed.next_token_logits(idx), plain.next_token_logits(idx), atol=0, rtol=0)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10]]
    assert generate_batch(packed, prompts, 20, temperature=0.0) == generate_batch(plain, prompts, 20, temperature=0.0)


@pytest.mark.skipif(not packing_available(), reason="no bf16 matrix products on this CPU")
def test_bf16_batch_rows_differ_from_single_prompts_only_at_near_ties():
    """What the README states for bfloat16: a batch's products may round differently from one
    prompt's (some CPUs' bf16 kernels depend on the batch size), so greedy rows can part from the
    single-prompt text, but only where its two best scores lie within bf16 rounding (here: 3% of
    the largest score); the first step's logits agree to that tolerance too."""
    tolerance = 0.03
    for seed in range(4):
        torch.manual_seed(seed)
        model = GPT(small_config(position=POSITIONS[seed % 3], n_embd=64, block_size=32, vocab_size=65)).eval()
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.mul_(4)
        model = prepare_for_decoding(model, torch.bfloat16)
        prompts = [torch.randint(0, 65, (length,)).tolist() for length in (1, 5, 12, 31, 40)]
        cache = KVCache(model.config.n_layer, model.config.block_size,
                        torch.tensor([31 - min(len(p), 31) for p in prompts]))
        padded = torch.tensor([[0] * (31 - min(len(p), 31)) + p[-31:] for p in prompts])
        with torch.no_grad():
            batched = model.next_token_logits(padded, cache).float()  # (B, V)
        for prompt, rows in zip(prompts, batched):
            with torch.no_grad():
                alone = model.next_token_logits(torch.tensor([prompt[-31:]])).float()[0]
            assert (rows - alone).abs().max() <= tolerance * alone.abs().max()
        for prompt, row in zip(prompts, generate_batch(model, prompts, 20, temperature=0.0)):
            alone = generate(model, torch.tensor([prompt]), 20, temperature=0.0)[0].tolist()
            if row != alone:
                at = next(i for i in range(len(row)) if row[i] != alone[i])
                with torch.no_grad():
                    logits = model.next_token_logits(torch.tensor([alone[:at][-32:]])).float()[0]
                assert logits[alone[at]] - logits[row[at]] <= tolerance * logits.abs().max()
