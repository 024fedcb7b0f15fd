"""Where a training step's time goes on this CPU, and how many steps a time budget buys.

python scripts/bench_cpu_step.py [--config configs/shakespeare_char.toml] [--set KEY=VALUE ...]
                                 [--dtypes float32,bfloat16] [--steps 8] [--budget 285]

For each optimizer (AdamW, Muon) and precision, the real training step of the config's model
(`train_step`'s pieces: forward with autocast, backward, clipping, optimizer) is timed piece by
piece over --steps steps in a row, the best of three rounds, and printed as milliseconds per
piece with the steps --budget seconds of training would take. Precisions are alternated round
by round, so a burst of load on a shared machine slows every column alike.

To see a laptop without bfloat16 instructions on a CPU that has them, make PyTorch and oneDNN
use AVX2 kernels only (bfloat16 is then emulated, as there):
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python scripts/bench_cpu_step.py
"""

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np

import torch

from minitransformer.config import load_config
from minitransformer.machine.device import autocast, cpu_computes_bf16
from minitransformer.model import GPT
from minitransformer.training.data import get_batch, prepare_data
from minitransformer.training.optim import make_optimizers, set_compute_dtype

PIECES = ("forward", "backward", "clip", "optimizer")


def timed_step(model, optimizers, x, y, dtype) -> dict[str, float]:
    """One training step, each piece's seconds."""
    times = {}
    started = time.perf_counter()
    with autocast(x.device, dtype):
        _, loss = model(x, y)
    times["forward"] = time.perf_counter() - started
    started = time.perf_counter()
    loss.backward()
    times["backward"] = time.perf_counter() - started
    started = time.perf_counter()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    times["clip"] = time.perf_counter() - started
    started = time.perf_counter()
    for optimizer in optimizers:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    times["optimizer"] = time.perf_counter() - started
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--optimizers", default="adamw,muon")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=285.0)
    args = parser.parse_args()
    config = load_config(args.config, tuple(args.overrides))
    cfg = config.train
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory(prefix="bench-cpu-step-") as scratch:
        dataset = prepare_data(config.data.corpus, config.data.tokenizer, config.data.val_fraction,
                               Path(scratch) / "data", lambda message: None, None, config.data.split, False,
                               config.data.vocab_size)
        train_tokens = np.array(dataset.train)  # out of the scratch folder before it goes
    model_config = config.model_config(dataset.tokenizer.vocab_size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU kernels "
          f"{torch.backends.cpu.get_cpu_capability()}, native bfloat16: {cpu_computes_bf16()}")
    print(f"model: {model_config.n_layer} layers x {model_config.n_embd} wide, context {model_config.block_size}, "
          f"batch {cfg.batch_size} x {cfg.grad_accum}")
    setups = {}
    for name in args.optimizers.split(","):
        for dtype_name in args.dtypes.split(","):
            torch.manual_seed(0)
            model = GPT(model_config)
            optimizers = make_optimizers(model, load_config(args.config, (*args.overrides, f"train.optimizer={name}")).train)
            set_compute_dtype(optimizers, getattr(torch, dtype_name))  # as a run in that precision
            setups[name, dtype_name] = (model, optimizers, getattr(torch, dtype_name))
    generator = torch.Generator().manual_seed(0)
    x, y = get_batch(train_tokens, cfg.batch_size, model_config.block_size, generator, device)
    best = {key: {piece: math.inf for piece in PIECES} for key in setups}
    for _ in range(args.rounds):
        for key, (model, optimizers, dtype) in setups.items():
            timed_step(model, optimizers, x, y, dtype)  # warm-up: first calls allocate
            totals = dict.fromkeys(PIECES, 0.0)
            for _ in range(args.steps):
                for piece, seconds in timed_step(model, optimizers, x, y, dtype).items():
                    totals[piece] += seconds
            for piece in PIECES:
                best[key][piece] = min(best[key][piece], totals[piece] / args.steps)
    print(f"{'optimizer':>9} {'dtype':>9} " + " ".join(f"{piece:>9}" for piece in PIECES)
          + f" {'step ms':>8} {'steps in ' + str(round(args.budget)) + ' s':>14}")
    for (name, dtype_name), times in best.items():
        step = sum(times.values())
        print(f"{name:>9} {dtype_name:>9} " + " ".join(f"{times[piece] * 1000:9.1f}" for piece in PIECES)
              + f" {step * 1000:8.1f} {args.budget / step:14,.0f}")


if __name__ == "__main__":
    main()
