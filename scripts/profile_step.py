"""Where a training step's time goes on a GPU: host (Python, launches) against device (kernels).

python scripts/profile_step.py [--optimizer adamw|muon|both] [--position learned] [--bias true|false]
                               [--compile default|reduce-overhead|none] [--steps 50] [--tables]

Builds the GPU config's model (configs/shakespeare_char_gpu.toml, with the settings given) as
`train` does (compiled, bf16 autocast), runs the real `train_step` and prints: the wall time per
step over steps in a row; the host's time to queue one step; the GPU's busy time per step (its
kernels, from torch.profiler); with --tables, the operators that cost the host and the GPU most.
--compile reduce-overhead is `train.compile = "reduce-overhead"`: the forward and backward passes
replayed as CUDA graphs.
"""

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from bench_train import GPU_CONFIG, optimizer_runs  # scripts/ is the first place Python looks
from minitransformer.config import load_config
from minitransformer.training.loop import train_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", default="both", choices=["adamw", "muon", "both"])
    parser.add_argument("--position", default="learned")
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--bias", default="true", choices=["true", "false"])
    parser.add_argument("--compile", default="default", choices=["default", "reduce-overhead", "none"])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--tables", action="store_true")
    args = parser.parse_args()
    device = torch.device("cuda")
    compile_value = {"default": "true", "none": "false"}.get(args.compile, args.compile)
    config = load_config(str(GPU_CONFIG), (f"model.position={args.position}", f"model.dropout={args.dropout}",
                                       f"model.bias={args.bias}", f"train.compile={compile_value}"))
    names = ["adamw", "muon"] if args.optimizer == "both" else [args.optimizer]
    for name, run in optimizer_runs(config, device, names):
        for _ in range(10):
            train_step(run)
        torch.cuda.synchronize()
        started = time.perf_counter()
        queued = 0.0
        for _ in range(args.steps):
            before = time.perf_counter()
            train_step(run)
            queued += time.perf_counter() - before
        torch.cuda.synchronize()
        wall = (time.perf_counter() - started) / args.steps
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(10):
                train_step(run)
            torch.cuda.synchronize()
        events = prof.key_averages()
        # Kernels only: the profiler also charges the time of annotated ranges (Optimizer.step)
        gpu = sum(e.device_time for e in prof.events() if e.device_type.name == "CUDA") / 10 / 1000
        print(f"== {args.position}, bias {args.bias}, compile {args.compile}, {name}: wall {wall * 1000:.2f} ms a step; host queues a step in "
              f"{queued / args.steps * 1000:.2f} ms (waits included); GPU busy {gpu:.2f} ms a step")
        if args.tables:
            print(events.table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=60))
            print(events.table(sort_by="self_device_time_total", row_limit=8, max_name_column_width=60))


if __name__ == "__main__":
    main()
