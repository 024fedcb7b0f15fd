"""Training speed side by side with nanoGPT, on nanoGPT's shakespeare_char model shape.

python scripts/bench_train.py [--nanogpt ../shared/baselines/nanoGPT] [--steps 6] [--batch 8] [--device cuda --compile-nanogpt]

Ours: the real `minitransformer train` command on configs/shakespeare_char_gpu.toml (6 layers,
384 wide, context 256) set to nanoGPT's choices (learned positions, AdamW, dropout 0.2), with
`train.dtype` as given (default auto: bf16 where measured faster);
its tokens per second come from metrics.jsonl, over the steps after a warm-up. nanoGPT: its
model and its AdamW (`configure_optimizers`) in float32, as its train.py runs on a CPU, timed over
the same number of steps after the same warm-up. Prints both and the ratio.
"""

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).parent.parent
SHAPE = dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=65)


def ours(batch: int, steps: int, dtype: str, device: str) -> float:
    out = Path(tempfile.mkdtemp(prefix="bench-train-")) / "run"
    command = [sys.executable, "-m", "minitransformer", "train", "--config", str(ROOT / "configs" / "shakespeare_char_gpu.toml"),
               "--out", str(out), "--set", f"train.batch_size={batch}", "--set", f"train.max_steps={2 * steps}",
               "--set", f"train.eval_interval={steps}", "--set", "train.eval_batches=1", "--set", "train.sample_tokens=0",
               "--set", f"train.dtype={dtype}", "--device", device,
               # nanoGPT's choices, so that both train the same model the same way
               "--set", "model.position=learned", "--set", "train.optimizer=adamw", "--set", "model.dropout=0.2"]
    subprocess.run(command, check=True, capture_output=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    print(f"ours: {rows[-1]['tokens_per_s']:,.0f} tokens/s (MFU {rows[-1]['mfu']:.1%}) over steps {steps} to {2 * steps}")
    return rows[-1]["tokens_per_s"]


def nanogpt(folder: Path, batch: int, steps: int, device: str, compile_model: bool) -> float:
    spec = importlib.util.spec_from_file_location("nanogpt_model", folder / "model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["nanogpt_model"] = module
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.GPT(module.GPTConfig(**SHAPE, dropout=0.2, bias=False)).to(device)  # its shakespeare_char settings
    device_type = "cuda" if device.startswith("cuda") else "cpu"
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), device_type)
    trainer = torch.compile(model) if compile_model else model
    # As nanoGPT's train.py: bf16 autocast on GPUs that have it, float32 on a CPU.
    bf16 = device_type == "cuda" and torch.cuda.is_bf16_supported()
    x = torch.randint(0, 65, (batch, 256), device=device)
    y = torch.randint(0, 65, (batch, 256), device=device)
    for step in range(2 * steps):
        if step == steps:
            if device_type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            _, loss = trainer(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device_type == "cuda":
        torch.cuda.synchronize()
    rate = steps * batch * 256 / (time.perf_counter() - started)
    print(f"nanoGPT: {rate:,.0f} tokens/s ({'bf16' if bf16 else 'float32'}{', compiled' if compile_model else ''}) "
          f"over steps {steps} to {2 * steps}")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", default=str(ROOT.parent / "shared" / "baselines" / "nanoGPT"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (then ours compiles as train.compile=auto does)")
    parser.add_argument("--compile-nanogpt", action="store_true", help="torch.compile nanoGPT's model, as its train.py does")
    args = parser.parse_args()
    print(f"{args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}, batch {args.batch} x 256")
    mine = ours(args.batch, args.steps, args.dtype, args.device)
    theirs = nanogpt(Path(args.nanogpt), args.batch, args.steps, args.device, args.compile_nanogpt)
    print(f"ours / nanoGPT: {mine / theirs:.2f}x")


if __name__ == "__main__":
    main()
