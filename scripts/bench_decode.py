"""Sampling speed side by side with nanoGPT, on nanoGPT's shakespeare_char model shape.

python scripts/bench_decode.py [--nanogpt ../shared/baselines/nanoGPT] [--device cpu] [--repeats 3]

Both models get the same shape (6 layers, 6 heads, 384 wide, context 256, 65 tokens) and random
weights (speed does not depend on the values), and write 255 tokens after a one-token prompt at
batch 1: nanoGPT with its `generate` (no cache), ours with `generate` (key/value cache; on CUDA
each step replayed from a CUDA graph), in float32 and in the precision `sample --dtype auto` picks
here (on a CPU also in bfloat16, where "auto" picked float16 weights); on CUDA also with the graphs turned off (`cuda_graph=False`), to show what they bring. It
also times `generate_batch` on 8 prompts against 8 single calls (in the precision "auto" picks for 8 rows). Prints
tokens/s and the ratios; the best of --repeats runs counts, so other load matters less.
"""

import argparse
import copy
import importlib.util
import sys
from pathlib import Path

import torch

from minitransformer import GPT, ModelConfig, generate, generate_batch
from minitransformer.generate import decoding_dtype, prepare_for_decoding
from minitransformer.machine.device import best_seconds

SHAPE = dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=65)
NEW_TOKENS = 255


def load_nanogpt(folder: Path):
    spec = importlib.util.spec_from_file_location("nanogpt_model", folder / "model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["nanogpt_model"] = module
    spec.loader.exec_module(module)
    return module


def best_rate(run, tokens: int, repeats: int, device: torch.device) -> float:
    """Tokens per second of the fastest of `repeats` calls of run(), after one warm-up call."""
    return tokens / best_seconds(run, device, repeats=repeats, warmups=1)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", default=str(Path(__file__).parent.parent.parent / "shared" / "baselines" / "nanoGPT"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}")

    # nanoGPT computes the exact GELU (nn.GELU()), so ours does too: the same function on both sides.
    ours = GPT(ModelConfig(**SHAPE, position="learned", attention="sdpa", gelu="exact")).to(device).eval()
    prompt = torch.zeros(1, 1, dtype=torch.long, device=device)  # (1, 1)
    nano = load_nanogpt(Path(args.nanogpt))
    baseline = nano.GPT(nano.GPTConfig(**SHAPE, dropout=0.0, bias=True)).to(device).eval()
    nano_rate = best_rate(lambda: baseline.generate(prompt, NEW_TOKENS), NEW_TOKENS, args.repeats, device)
    print(f"nanoGPT, batch 1, {NEW_TOKENS} tokens: {nano_rate:.0f} tokens/s (float32, no cache)")
    auto = decoding_dtype(ours, "auto", device)
    graphs = [True, False] if device.type == "cuda" else [False]
    choices = [("float32", torch.float32), (f"auto ({str(auto).removeprefix('torch.')})", auto)]
    if device.type == "cpu" and auto != torch.bfloat16:  # beside float16 weights, the bf16 ones they replace
        choices.insert(1, ("bfloat16", torch.bfloat16))
    for name, dtype in choices:
        model = prepare_for_decoding(copy.deepcopy(ours), dtype)
        for graph in graphs:
            rate = best_rate(lambda: generate(model, prompt, NEW_TOKENS, temperature=1.0, cuda_graph=graph),
                             NEW_TOKENS, args.repeats, device)
            how = (", CUDA graphs" if graph else ", eager steps") if device.type == "cuda" else ""
            print(f"ours, {name}{how}: {rate:.0f} tokens/s: {rate / nano_rate:.1f}x nanoGPT")
    batch_dtype = decoding_dtype(ours, "auto", device, rows=8)  # float32 where bf16 is emulated (matrix products)
    ours = prepare_for_decoding(ours, batch_dtype)

    prompts = [[int(t) for t in torch.randint(0, 65, (length,))] for length in (1, 5, 9, 17, 33, 65, 100, 129)]
    single = best_rate(lambda: [generate(ours, torch.tensor([p], device=device), 64, temperature=1.0) for p in prompts],
                       64 * len(prompts), args.repeats, device)
    batched = best_rate(lambda: generate_batch(ours, prompts, 64, temperature=1.0), 64 * len(prompts), args.repeats, device)
    print(f"8 prompts of 1 to 129 tokens, 64 new each: generate_batch {batched:.0f} tokens/s, 8 generate calls "
          f"{single:.0f} tokens/s: {batched / single:.1f}x")


if __name__ == "__main__":
    main()
