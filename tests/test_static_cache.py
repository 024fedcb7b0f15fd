"""The static key/value cache behind CUDA-graph decoding, checked on a CPU.

A DecodeGraph with record=False runs the very steps a recorded graph replays (the StaticKVCache's
tensor positions and masks, the host's bookkeeping), eagerly: substituted for the recorded one,
generation must give what the plain KVCache gives. The recording itself needs a GPU
(tests/test_gpu.py, run by scripts/gpu_check.sh).
"""

import importlib

import pytest
import torch
from torch.testing import assert_close

from minitransformer import generate, generate_batch
from minitransformer.kv_cache import KVCache, StaticKVCache
from minitransformer.machine.cuda_graphs import DecodeGraph, decode_graph
from tests.helpers import ATTENTIONS, POSITIONS
from tests.test_generate import trained_looking_model

generate_module = importlib.import_module("minitransformer.generate")  # the module, not the function


@pytest.fixture
def eager_graphs(monkeypatch):
    """generate.py's decode_graph replaced by eager stand-ins; returns the list of those made."""
    made = []

    def stand_in(model, B):
        made.append(DecodeGraph(model, B, record=False))
        return made[-1]

    monkeypatch.setattr(generate_module, "decode_graph", stand_in)
    return made


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("position", POSITIONS)
def test_static_cache_logits_match_full_forward(position, attention):
    model = trained_looking_model(position=position, attention=attention)
    m = model.config
    idx = torch.randint(0, 37, (2, 16))
    full, _ = model(idx)
    cache = StaticKVCache(m.n_layer, 2, m.n_head, m.block_size, m.head_size, torch.float32, torch.device("cpu"))
    pieces = [model(idx[:, :6], cache=cache)[0]]
    for t in range(6, 16):
        pieces.append(model(idx[:, t : t + 1], cache=cache)[0])
    assert cache.length == 16 and int(cache.stored) == 16
    assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("position", POSITIONS)
def test_graph_steps_generate_what_the_plain_cache_generates(position, attention, eager_graphs):
    """Greedy and sampled, past block_size (16) so that the window slides and the cache is rebuilt."""
    model = trained_looking_model(position=position, attention=attention)
    prompt = torch.randint(0, 37, (2, 5))
    for temperature in (0.0, 1.0):
        runs = []
        for graph in (True, False):
            generator = torch.Generator().manual_seed(3)
            runs.append(generate(model, prompt, 30, temperature=temperature, generator=generator, cuda_graph=graph))
        assert torch.equal(runs[0], runs[1])
    assert len(eager_graphs) == 2  # one stand-in per graph call; cuda_graph=False asked for none


@pytest.mark.parametrize("position", POSITIONS)
def test_graph_steps_in_generate_batch_match_the_plain_cache(position, eager_graphs):
    model = trained_looking_model(position=position)
    prompts = [[1], [2, 3, 4, 5, 6, 7, 8], [9, 10, 11]]
    with_graph = generate_batch(model, prompts, 25, temperature=0.0)
    plain = generate_batch(model, prompts, 25, temperature=0.0, cuda_graph=False)
    assert with_graph == plain
    for prompt, row in zip(prompts, plain):  # and each row is what its prompt alone gives
        alone = generate(model, torch.tensor([prompt]), 25, temperature=0.0, cuda_graph=False)
        assert row == alone[0].tolist()
    assert len(eager_graphs) == 1


def test_static_mask_hides_unwritten_and_padding_positions():
    cache = StaticKVCache(1, 2, 1, 8, 4, torch.float32, torch.device("cpu"))
    cache.reset(torch.tensor([0, 2]))
    k = torch.randn(2, 1, 3, 4)
    cache.update(0, k, k)
    mask = cache.mask(3, causal=True, device=torch.device("cpu"))  # (B, 1, T, S)
    assert mask.shape == (2, 1, 3, 8)
    assert not mask[..., 3:].any()  # nothing after the written positions
    assert mask[0, 0, :, :3].tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    assert mask[1, 0, 2, :3].tolist() == [False, False, True]  # row 1's first two are padding
    assert mask[1, 0, 0, :3].tolist() == [True, False, False]  # a padding query sees itself only
    assert cache.positions(3, torch.device("cpu")).tolist() == [[0, 1, 2], [0, 0, 0]]
    cache.advance(3)
    assert cache.mask(1, causal=True, device=torch.device("cpu"))[0, 0, 0].tolist() == [True] * 4 + [False] * 4
    cache.reset()
    assert cache.length == 0 and int(cache.stored) == 0 and cache.pads.tolist() == [0, 0]


def test_plain_cache_builds_one_mask_per_pass():
    cache = KVCache(2, 8)
    first = cache.mask(3, True, torch.device("cpu"))
    assert cache.mask(3, True, torch.device("cpu")) is first  # every layer of the pass shares it
    cache.advance(3)
    assert cache.mask(1, True, torch.device("cpu")) is None  # one new token sees everything stored


def test_no_graph_off_cuda_or_when_listening():
    model = trained_looking_model()
    assert decode_graph(model, 1) is None  # a CPU model runs its steps eagerly


def test_graph_step_refuses_a_full_cache():
    model = trained_looking_model()
    graph = DecodeGraph(model, 1, record=False)
    cache = graph.start()
    model.next_token_logits(torch.zeros(1, 16, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="whole length"):
        graph.step(torch.zeros(1, 1, dtype=torch.long))


def test_a_model_without_the_causal_mask_sees_every_written_position(eager_graphs):
    model = trained_looking_model(causal=False)
    prompt = torch.randint(0, 37, (1, 4))
    assert torch.equal(generate(model, prompt, 20, temperature=0.0),
                       generate(model, prompt, 20, temperature=0.0, cuda_graph=False))


def test_two_generators_of_one_model_never_share_a_graphs_cache(monkeypatch):
    """decode_graph hands a model's graph (and its StaticKVCache) to one generator at a time: a
    second, interleaved with the first, decodes eagerly instead of overwriting the cache. Here the
    graphs are eager stand-ins, kept as decode_graph keeps them (one per model and batch size)."""
    kept = {}

    def registry(model, B):
        graph = kept.setdefault(B, DecodeGraph(model, B, record=False))
        return None if graph.in_use else graph

    monkeypatch.setattr(generate_module, "decode_graph", registry)
    model = trained_looking_model(position="rope").eval()
    prompts = [torch.tensor([[3, 4, 5]]), torch.tensor([[7, 1]])]
    alone = [[int(t) for t in generate_module.stream_tokens(model, p, 6, temperature=0.0)] for p in prompts]
    first, second = (generate_module.stream_tokens(model, p, 6, temperature=0.0) for p in prompts)
    interleaved = [[], []]
    for _ in range(6):
        interleaved[0].append(int(next(first)))
        assert kept[1].in_use  # the first generator holds the graph ...
        interleaved[1].append(int(next(second)))  # ... so the second runs eagerly
    for stream in (first, second):
        assert next(stream, None) is None  # both finish
    assert interleaved == alone and not kept[1].in_use
