"""The CUDA paths: decoding replayed from CUDA graphs, a training step that never waits for the
host, float16 with its gradient scaler. Skipped without a CUDA GPU; scripts/gpu_check.sh runs them.
"""

import pytest
import torch

from minitransformer import GPT, ModelConfig, generate, generate_batch
from minitransformer.generate import stream_tokens
from minitransformer.machine.cuda_graphs import GRAPHS_KEPT, recorded
from minitransformer.training.loop import check_finite, train_step
from tests.conftest import train_tiny
from tests.test_train_step import tiny_run_object

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh)")

CUDA = torch.device("cuda")


def decoding_model(position: str, attention: str, dtype=torch.float32) -> GPT:
    """nanoGPT's shakespeare_char shape with weights larger than at init: logits far from uniform."""
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=65, block_size=256, n_layer=6, n_head=6, n_embd=384, position=position,
                         attention=attention)
    model = GPT(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(3)
    return model.to(CUDA, dtype).eval()


@pytest.mark.parametrize("attention", ["manual", "sdpa"])
@pytest.mark.parametrize("position", ["learned", "rope"])
def test_graph_decoding_gives_the_eager_greedy_text(position, attention):
    """float32, past block_size (the window slides), batch 1 and generate_batch."""
    model = decoding_model(position, attention)
    prompt = torch.tensor([[1, 2, 3]], device=CUDA)
    graphed = generate(model, prompt, 300, temperature=0.0)
    eager = generate(model, prompt, 300, temperature=0.0, cuda_graph=False)
    assert torch.equal(graphed, eager)
    prompts = [[1], [5, 6, 7, 8, 9], list(range(10, 40))]
    assert generate_batch(model, prompts, 40, temperature=0.0) == \
        generate_batch(model, prompts, 40, temperature=0.0, cuda_graph=False)
    assert len(recorded[model]) == 2  # batch 1 and batch 3


def test_graph_logits_match_the_eager_step():
    model = decoding_model("rope", "sdpa")
    generator = torch.Generator(device=CUDA)
    prompt = torch.randint(0, 65, (2, 40), device=CUDA)
    a = generate(model, prompt, 60, temperature=1.0, generator=generator.manual_seed(1))
    b = generate(model, prompt, 60, temperature=1.0, generator=generator.manual_seed(1), cuda_graph=False)
    assert torch.equal(a, b)  # sampling draws the same numbers from the same logits


@pytest.mark.parametrize("sampling", [dict(temperature=0.0), dict(temperature=0.8, top_k=10),
                                      dict(temperature=1.0, top_p=0.9)])
def test_generating_never_waits_for_the_gpu(sampling):
    """Between tokens the host only queues work (torch.multinomial would read its input back on
    every token); so it runs ahead of the GPU, and a token costs the GPU's time, not both."""
    model = decoding_model("learned", "sdpa", torch.bfloat16)
    prompt = torch.tensor([[1, 2, 3]], device=CUDA)
    generate(model, prompt, 8, **sampling)  # records the graph
    torch.cuda.synchronize()
    stream = stream_tokens(model, prompt, 100, **sampling)
    torch.cuda.set_sync_debug_mode("error")
    try:
        tokens = [next(stream) for _ in range(100)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert next(stream, None) is None  # the end: one read, whether every step's scores were finite
    assert torch.cat(tokens, dim=1).shape == (1, 100)


def test_two_interleaved_generators_each_get_their_own_text_and_hooks_turn_graphs_off():
    """A graph's cache is one generator's at a time (the other decodes eagerly); a forward hook,
    which a replay would never call, keeps graphs off."""
    model = decoding_model("rope", "sdpa")
    prompts = [torch.tensor([[3, 4, 5]], device=CUDA), torch.tensor([[7, 1, 2]], device=CUDA)]
    alone = [torch.cat(list(stream_tokens(model, p, 20, temperature=0.0)), dim=1) for p in prompts]
    first, second = (stream_tokens(model, p, 20, temperature=0.0) for p in prompts)
    pairs = [(next(first), next(second)) for _ in range(20)]
    assert torch.equal(torch.cat([a for a, _ in pairs], dim=1), alone[0])
    assert torch.equal(torch.cat([b for _, b in pairs], dim=1), alone[1])
    calls = []
    hook = model.blocks[0].register_forward_hook(lambda module, args, out: calls.append(1))
    try:
        generate(model, prompts[0], 10, temperature=0.0)
    finally:
        hook.remove()
    assert len(calls) == 10  # every step ran the module, eagerly


def test_graphs_per_model_stay_bounded():
    model = decoding_model("learned", "sdpa", torch.bfloat16)
    prompt = [[1, 2, 3]]
    for _ in range(2):
        for batch in range(1, GRAPHS_KEPT + 3):
            generate_batch(model, prompt * batch, 4, temperature=0.0)
        torch.cuda.synchronize()
        allocated = torch.cuda.memory_allocated()
    assert len(recorded[model]) == GRAPHS_KEPT
    for batch in range(1, GRAPHS_KEPT + 3):
        generate_batch(model, prompt * batch, 4, temperature=0.0)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() <= allocated * 1.05  # a third round holds no more memory
    model.float()  # new weight tensors: the old graphs are dropped, one new one recorded
    generate(model, torch.tensor(prompt, device=CUDA), 4, temperature=0.0)
    assert len(recorded[model]) == 1


@pytest.mark.parametrize("optimizer, compiled, dtype", [("adamw", False, "bfloat16"), ("muon", False, "bfloat16"),
                                                       ("muon", True, "bfloat16"), ("muon", False, "float16")])
def test_a_training_step_never_waits_for_the_gpu(run_dir, optimizer, compiled, dtype):
    """torch.cuda.set_sync_debug_mode("error") turns every host synchronisation into an error
    (float16: the gradient scaler hands Muon its overflow flag on the device)."""
    run = tiny_run_object(run_dir, dtype, "cuda", f"train.optimizer={optimizer}",
                          f"train.compile={'true' if compiled else 'false'}")
    for _ in range(3):  # warm-up: compiling, allocating, loading kernels
        train_step(run)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            loss = train_step(run)
            run.state.step += 1
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item()
    check_finite(run, None)


def test_float16_forced_on_a_bf16_gpu_trains_and_resumes(run_dir):
    common = ("--device", "cuda", "--set", "train.dtype=float16", "--set", "train.eval_interval=20",
              "--set", "train.compile=false")
    assert train_tiny(run_dir, *common, "--set", "train.max_steps=40") == 0
    state = torch.load(run_dir / "last" / "state.pt", weights_only=True)
    assert state["dtype"] == "float16" and state["scaler"]["scale"] > 1
    assert train_tiny(run_dir, "--resume", *common, "--set", "train.max_steps=60") == 0
