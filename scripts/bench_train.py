"""Training speed side by side with nanoGPT: both whole training commands, steady steps only.

python scripts/bench_train.py [--nanogpt ../shared/baselines/nanoGPT] [--device cpu|cuda] [--batch 8] [--steps 6] [--rounds 2]
python scripts/bench_train.py --device cuda --batch 64 --steps 300 --compile auto,reduce-overhead --optimizers

Like with like: each side is its real training command on nanoGPT's shakespeare_char model
(6 layers, 384 wide, 6 heads, context 256) trained nanoGPT's way (learned positions, no biases,
AdamW, dropout 0.2, its learning rate and betas), for 2 x --steps steps, and only the second half counts
(no start-up, compilation, evaluation or saving in it), the two commands alternating --rounds
times with each one's fastest round counting, and then both models alone in this process:
- ours: `minitransformer train` on configs/shakespeare_char_gpu.toml set to those choices, with
  evaluations at steps 0, --steps and 2 x --steps; the seconds per step come from the last row of
  metrics.jsonl (its tokens per second: the training steps since the row before, without the
  evaluation and save between them).
- nanoGPT: its `train.py` as shipped, in a scratch folder with Tiny Shakespeare prepared as its
  `prepare.py` does (characters, 90/10 split, uint16), evaluating at step 0 only; the seconds per
  step are the wall clock between its log lines at steps --steps and 2 x --steps (each printed
  after reading the loss, so after the GPU finished those steps).
- one process: both models with their own AdamW (ours fused, nanoGPT's per-tensor loop on a
  CPU), forward, backward, clipping and the update only, in alternating rounds (the fastest
  round of each counts).
nanoGPT computes the exact GELU, so ours runs with model.gelu = "exact" (the same function).
On a GPU both commands compile and use bf16 autocast (nanoGPT's defaults); on a CPU neither.

--compile lists the `train.compile` settings to run our command with (each measured on its own).
--optimizers also times our training step on the GPU config itself (rotary positions) with Muon
against AdamW, in one process on one model compiled as the first --compile setting says (steps in
a row, the best of two runs).
"""

import argparse
import contextlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench_decode import load_nanogpt  # scripts/ is on the path when a script runs

ROOT = Path(__file__).parent.parent
GPU_CONFIG = ROOT / "configs" / "shakespeare_char_gpu.toml"
CORPUS = ROOT / "minitransformer" / "assets" / "tinyshakespeare.txt"
TOKENS_PER_STEP = 256  # x batch


def ours(batch: int, steps: int, device: str, compile_setting: str) -> float:
    """Seconds per step of our train command over steps (steps, 2 x steps]."""
    with tempfile.TemporaryDirectory(prefix="bench-train-") as scratch:
        out = Path(scratch) / "run"
        command = [sys.executable, "-m", "minitransformer", "train", "--config", str(GPU_CONFIG), "--out", str(out),
                   "--device", device, "--set", f"train.batch_size={batch}", "--set", f"train.max_steps={2 * steps}",
                   "--set", f"train.eval_interval={steps}", "--set", "train.eval_batches=1",
                   "--set", "train.sample_tokens=0", "--set", f"train.compile={compile_setting}",
                   # nanoGPT's choices, so that both train the same model the same way
                   "--set", "model.position=learned", "--set", "model.bias=false", "--set", "model.gelu=exact",
                   "--set", "train.optimizer=adamw",
                   "--set", "model.dropout=0.2", "--set", "train.learning_rate=1e-3", "--set", "train.beta2=0.99"]
        if device == "cpu":
            command += ["--set", "train.dtype=float32"]  # as nanoGPT's train.py on a CPU
        finished = subprocess.run(command, capture_output=True, text=True)
        if finished.returncode != 0:
            sys.exit("our train command failed:\n" + finished.stderr[-2000:])
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # The row's tokens per second count the training steps since the previous row only (the
    # evaluation and save at that row left out, as nanoGPT's interval holds none).
    return batch * TOKENS_PER_STEP / rows[-1]["tokens_per_s"]


def prepare_nanogpt(folder: Path, nanogpt: Path) -> None:
    """nanoGPT's files and its data/shakespeare_char, as its prepare.py writes them."""
    for name in ("train.py", "model.py", "configurator.py"):
        shutil.copy(nanogpt / name, folder / name)
    shutil.copytree(nanogpt / "config", folder / "config")
    text = CORPUS.read_text()
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    data = folder / "data" / "shakespeare_char"
    data.mkdir(parents=True)
    cut = int(len(text) * 0.9)
    np.array([stoi[c] for c in text[:cut]], dtype=np.uint16).tofile(data / "train.bin")
    np.array([stoi[c] for c in text[cut:]], dtype=np.uint16).tofile(data / "val.bin")
    with open(data / "meta.pkl", "wb") as file:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, file)


def nanogpt(folder: Path, batch: int, steps: int, device: str) -> float:
    """Seconds per step of nanoGPT's train.py over steps (steps, 2 x steps], by the wall clock of its log."""
    log_interval = 1 if steps < 50 else 10
    command = [sys.executable, "train.py", "config/train_shakespeare_char.py", f"--device={device}",
               f"--batch_size={batch}", f"--max_iters={2 * steps}", f"--lr_decay_iters={2 * steps}",
               "--eval_interval=1000000", "--eval_iters=2", f"--log_interval={log_interval}", "--out_dir=out"]
    if device == "cpu":
        command += ["--compile=False", "--dtype=float32"]
    seen, lines = {}, []
    with tempfile.TemporaryDirectory(prefix="bench-nanogpt-") as scratch:
        prepare_nanogpt(Path(scratch), folder)
        process = subprocess.Popen(command, cwd=scratch, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        for line in process.stdout:
            lines.append(line)
            if line.startswith("iter "):
                seen[int(line.split()[1].rstrip(":"))] = time.perf_counter()
        failed = process.wait() != 0
    if failed or steps not in seen or 2 * steps not in seen:
        sys.exit("nanoGPT's train.py failed:\n" + "".join(lines[-20:]))
    return (seen[2 * steps] - seen[steps]) / steps


def one_process(nanogpt_folder: Path, batch: int, steps: int, device: torch.device, rounds: int = 4) -> tuple[float, float]:
    """Seconds per step of the two models alone, ours and nanoGPT's, in this process: the same
    shape and choices as above, forward, backward, clipping and each side's own AdamW (same settings),
    alternating rounds of --steps steps and keeping each one's
    fastest, so a burst of load slows both alike."""
    from minitransformer import GPT, ModelConfig
    from minitransformer.config import TrainConfig
    from minitransformer.training.optim import make_optimizers

    shape = dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=65)
    nano = load_nanogpt(nanogpt_folder)
    torch.manual_seed(0)
    models = {"ours": GPT(ModelConfig(**shape, position="learned", bias=False, dropout=0.2, gelu="exact",
                                      attention="sdpa")).to(device),
              "nanoGPT": nano.GPT(nano.GPTConfig(**shape, dropout=0.2, bias=False)).to(device)}
    x = torch.randint(0, 65, (batch, 256), device=device)  # (B, T)
    y = torch.randint(0, 65, (batch, 256), device=device)  # (B, T)
    # Each side's own AdamW, as its training command builds it (ours fused on CPUs too, nanoGPT's on
    # CUDA only), with the same settings.
    train = TrainConfig(optimizer="adamw", learning_rate=1e-3, beta2=0.99, weight_decay=0.1)
    with contextlib.redirect_stdout(io.StringIO()):  # nanoGPT prints its parameter counts
        optimizers = {"ours": make_optimizers(models["ours"], train)[0],
                      "nanoGPT": models["nanoGPT"].configure_optimizers(train.weight_decay, train.learning_rate,
                                                                        (train.beta1, train.beta2), device.type)}

    def step(name: str) -> None:
        _, loss = models[name](x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(models[name].parameters(), 1.0)
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)

    best = dict.fromkeys(models, float("inf"))
    for name in models:
        step(name)  # warm-up: the first steps allocate
    for _ in range(rounds):
        for name in models:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            for _ in range(steps):
                step(name)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], (time.perf_counter() - started) / steps)
    return best["ours"], best["nanoGPT"]


def optimizer_runs(config, device: torch.device, names: list[str]):
    """Yield (optimizer name, Run) for each name: one model of config, compiled once (as
    train.compile says) and shared, on its real data, in a scratch folder; as `train` builds a run."""
    from minitransformer.model import GPT
    from minitransformer.training.distributed import Ranks
    from minitransformer.training.optim import Schedule, make_optimizers
    from minitransformer.training.setup import Run, RunState, model_config_for, run_data, training_dtype, training_module

    with tempfile.TemporaryDirectory(prefix="bench-optimizers-") as folder:
        dataset = run_data(config, Path(folder), lambda message: None, None, Ranks(), False)
        torch.manual_seed(0)
        model = GPT(model_config_for(config, dataset)).to(device)
        dtype = training_dtype(config.train, device, model, dataset, Ranks(), None)
        trainer = training_module(model, config.train, device, Ranks())
        for name in names:
            run_config = replace(config, train=replace(config.train, optimizer=name))
            yield name, Run(run_config, Path(folder), device, dtype, dataset, model,
                            make_optimizers(model, run_config.train), torch.Generator().manual_seed(0),
                            RunState(Schedule.for_config(run_config.train)), trainer=trainer)


def optimizer_steps(device: torch.device, steps: int, compile_setting: str) -> dict[str, float]:
    """Seconds per training step of the GPU config's model with Muon and with AdamW."""
    from minitransformer.commands.bench import measure_training
    from minitransformer.config import load_config

    config = load_config(str(GPU_CONFIG), (f"train.compile={compile_setting}",))
    best = {}
    for name, run in optimizer_runs(config, device, ["adamw", "muon", "adamw", "muon"]):
        best[name] = min(best.get(name, float("inf")), measure_training(run, steps))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", default=str(ROOT.parent / "shared" / "baselines" / "nanoGPT"))
    parser.add_argument("--steps", type=int, default=6, help="steps measured, after as many unmeasured")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each command; the fastest counts")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--compile", default="auto", help="train.compile settings for ours, comma-separated")
    parser.add_argument("--optimizers", action="store_true", help="also Muon against AdamW on the GPU config")
    args = parser.parse_args()
    settings = args.compile.split(",")
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"{name}, torch {torch.__version__}, batch {args.batch} x 256, steps {args.steps} to {2 * args.steps}")
    # The two commands alternate, --rounds times, and each one's fastest round counts: a spell of
    # other load on a shared machine then slows one round, not one side's only measurement.
    mine, theirs = dict.fromkeys(settings, float("inf")), float("inf")
    for round_ in range(1, args.rounds + 1):
        for setting in settings:
            seconds = ours(args.batch, args.steps, args.device, setting)
            mine[setting] = min(mine[setting], seconds)
            print(f"round {round_}: ours (train command, train.compile={setting}): {seconds * 1000:.2f} ms a step, "
                  f"{args.batch * TOKENS_PER_STEP / seconds:,.0f} tokens/s")
        seconds = nanogpt(Path(args.nanogpt), args.batch, args.steps, args.device)
        theirs = min(theirs, seconds)
        print(f"round {round_}: nanoGPT (train.py): {seconds * 1000:.2f} ms a step, "
              f"{args.batch * TOKENS_PER_STEP / seconds:,.0f} tokens/s")
    for setting, seconds in mine.items():
        print(f"ours (train.compile={setting}) is {theirs / seconds:.2f}x as fast as nanoGPT")
    alone, nano_alone = one_process(Path(args.nanogpt), args.batch, max(2, args.steps // 2), torch.device(args.device))
    print(f"one process, the models and AdamW only: ours {alone * 1000:.2f} ms a step, nanoGPT {nano_alone * 1000:.2f} ms: "
          f"ours is {nano_alone / alone:.2f}x as fast")
    if args.optimizers:
        best = optimizer_steps(torch.device(args.device), args.steps, settings[0])
        print(f"GPU config's step (rotary, train.compile={settings[0]}): Muon {best['muon'] * 1000:.2f} ms, AdamW {best['adamw'] * 1000:.2f} ms: "
              f"Muon costs {best['muon'] / best['adamw']:.2f}x AdamW")


if __name__ == "__main__":
    main()
