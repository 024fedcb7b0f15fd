"""The `bench` command: how fast this machine trains and samples a config's model.

Prints, for the config's model on this machine:
- training tokens per second through the real training step (`train.train_step`), in the
  precision `train.dtype` chooses here, and the model FLOP utilisation: the arithmetic the model
  needs per token (memory.flops_per_token) against a measured large matrix product in that dtype;
- sampling tokens per second with the key/value cache, at batch 1 and batch 8, in the precision
  `sample --dtype auto` chooses, beside the memory bound at batch 1: every token reads every
  weight, so it cannot go faster than a measured copy bandwidth over the weights' bytes.

Design choice: it measures the code paths the commands use, on random weights and the config's
real data (speed does not depend on the weights' values), after a warm-up.
"""

import tempfile
from pathlib import Path

import torch

from ..config import load_config
from ..errors import UserError
from ..machine.device import best_seconds, choose_device, copy_bandwidth, matmul_peak
from ..training.distributed import Ranks
from ..generate import decoding_dtype, generate, generate_batch, prepare_for_decoding
from ..training.memory import check_memory, flops_per_token
from ..model import GPT
from ..training.optim import Schedule, make_optimizers
from ..training.setup import Run, RunState, model_config_for, run_data, training_dtype
from ..training.loop import train_step

DECODE_TOKENS = 64


def measure_training(run: Run, steps: int) -> float:
    """Seconds per optimizer step over `steps` steps in a row, as the training loop runs them (on
    a GPU the host queues each step while the GPU runs the one before); the faster of two
    such runs, after the warm-up."""
    def steps_in_a_row() -> None:
        for _ in range(steps):
            train_step(run)

    return best_seconds(steps_in_a_row, run.device, repeats=2, warmups=1) / steps


@torch.no_grad()
def measure_decoding(model: GPT, batch: int) -> float:
    """Tokens per second of cached generation, batch 1 (`generate`) or more (`generate_batch`)."""
    device = model.wte.weight.device
    prompts = [[int(t) for t in torch.randint(0, model.config.vocab_size, (1 + 7 * row,))] for row in range(batch)]

    def run() -> None:
        if batch == 1:
            generate(model, torch.tensor(prompts, device=device), DECODE_TOKENS, temperature=1.0)
        else:
            generate_batch(model, prompts, DECODE_TOKENS, temperature=1.0)

    return batch * DECODE_TOKENS / best_seconds(run, device, repeats=1)


def bench(config_path: str | None, device_name: str, steps: int = 5, say=print, remeasure: bool = False) -> dict:
    """Measure and print training and sampling speed; returns the figures. remeasure: measure the
    precisions "auto" picks again, instead of the remembered verdicts."""
    if steps < 1:
        raise UserError(f"--steps must be at least 1, got {steps}")
    config = load_config(config_path)
    cfg = config.train
    device = choose_device(device_name)
    with tempfile.TemporaryDirectory(prefix="minitransformer-bench-") as folder:
        dataset = run_data(config, Path(folder), say, None, Ranks(), False)
        model_config = model_config_for(config, dataset)
        check_memory(model_config, cfg, device)
        torch.manual_seed(cfg.seed)
        model = GPT(model_config).to(device)
        run = Run(config, Path(folder), device, training_dtype(cfg, device, model, dataset, Ranks(), say, remeasure), dataset, model,
                  make_optimizers(model, cfg), torch.Generator().manual_seed(cfg.seed), RunState(Schedule.for_config(cfg)))
        m = model_config
        say(f"model: {model.num_parameters():,} parameters, {m.n_layer} layers, {m.n_embd} wide, context "
            f"{m.block_size}, batch {cfg.batch_size} x {cfg.grad_accum}; device {device}, {torch.get_num_threads()} threads")
        seconds = measure_training(run, steps)
        tokens_per_s = cfg.batch_size * cfg.grad_accum * m.block_size / seconds
        peak = matmul_peak(run.dtype, device, remeasure)
        mfu = tokens_per_s * flops_per_token(m) / peak
        dtype_name = str(run.dtype).removeprefix("torch.")
        say(f"training: {tokens_per_s:,.0f} tokens/s ({seconds * 1000:.0f} ms a step) in {dtype_name}; "
            f"MFU {mfu:.1%} of a measured {dtype_name} matrix-product peak of {peak / 1e12:.2f} TFLOP/s")
        model.eval()
        decode_dtype = decoding_dtype(model, "auto", device, say, remeasure)
        model = prepare_for_decoding(model, decode_dtype)
        one, eight = measure_decoding(model, 1), measure_decoding(model, 8)
        weight_bytes = sum(tensor.numel() * tensor.element_size() for tensor in (*model.parameters(), *model.buffers()))
        bandwidth = copy_bandwidth(device)
        bound = bandwidth / weight_bytes
        say(f"sampling in {str(decode_dtype).removeprefix('torch.')}: {one:,.0f} tokens/s at batch 1, "
            f"{eight:,.0f} tokens/s at batch 8 (generate_batch), {DECODE_TOKENS} new tokens")
        say(f"  the memory bound at batch 1: {bound:,.0f} tokens/s ({weight_bytes / 1e6:.3g} MB of weights a token at "
            f"a measured copy bandwidth of {bandwidth / 1e9:.1f} GB/s); batch 1 runs at {100 * one / bound:.2g}% of it")
    return {"train_tokens_per_s": tokens_per_s, "mfu": mfu, "decode_1": one, "decode_8": eight, "decode_bound": bound,
            "train_dtype": dtype_name, "decode_dtype": str(decode_dtype).removeprefix("torch.")}
