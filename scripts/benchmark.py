"""Training speed (steps and tokens per second) of a few model sizes, float32 against bfloat16.

python scripts/benchmark.py [--steps N]

Prints one line per setting. It times full training steps (forward, backward, optimizer) on
random windows of Tiny Shakespeare, after a few warm-up steps. Use it before choosing a config's
size or `train.dtype`: on small models, casting to bfloat16 can cost more than it saves.
"""

import argparse
import time
from pathlib import Path

import torch

from minitransformer import GPT, ModelConfig
from minitransformer.config import TrainConfig
from minitransformer.data import get_batch, prepare_data
from minitransformer.device import autocast, choose_device
from minitransformer.optim import make_optimizers

SETTINGS = [  # (n_layer, n_embd, n_head, block_size, batch_size, position, optimizer)
    (4, 128, 4, 64, 32, "learned", "adamw"),
    (4, 128, 4, 128, 16, "rope", "muon"),
    (4, 256, 4, 128, 16, "rope", "muon"),
    (6, 384, 6, 256, 8, "learned", "adamw"),
]


def time_steps(setting, dtype: torch.dtype, steps: int, data, device: torch.device) -> float:
    n_layer, n_embd, n_head, block_size, batch_size, position, optimizer = setting
    model_config = ModelConfig(vocab_size=data.tokenizer.vocab_size, block_size=block_size, n_layer=n_layer,
                               n_head=n_head, n_embd=n_embd, position=position, attention="sdpa")
    model = GPT(model_config).to(device)
    optimizers = make_optimizers(model, TrainConfig(optimizer=optimizer))
    generator = torch.Generator().manual_seed(0)
    for step in range(steps + 3):
        if step == 3:  # the first steps allocate memory and pick kernels
            started = time.perf_counter()
        x, y = get_batch(data.train, batch_size, block_size, generator, device)
        with autocast(device, dtype):
            _, loss = model(x, y)
        loss.backward()
        for opt in optimizers:
            opt.step()
            opt.zero_grad(set_to_none=True)
    return (time.perf_counter() - started) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = choose_device(args.device)
    data = prepare_data("tinyshakespeare", "char", 0.1, Path("runs/benchmark-data"))
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for setting in SETTINGS:
        n_layer, n_embd, n_head, block_size, batch_size, position, optimizer = setting
        for dtype in (torch.float32, torch.bfloat16):
            seconds = time_steps(setting, dtype, args.steps, data, device)
            print(f"{n_layer} layers x {n_embd} wide, context {block_size}, batch {batch_size}, {position}, "
                  f"{optimizer}, {str(dtype).removeprefix('torch.'):>8}: {1 / seconds:6.2f} steps/s, "
                  f"{batch_size * block_size / seconds / 1000:6.1f}k tokens/s", flush=True)


if __name__ == "__main__":
    main()
