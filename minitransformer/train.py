"""Training: `train(config)` runs a visible `for step in ...` loop over small functions.

Read `train` first: it prepares data, builds the model and optimizers (or restores them with
`resume`), then loops: set the learning rate (`lr_at`), accumulate gradients over micro-batches
(`get_batch`), clip, step, and every `eval_interval` steps `evaluate` and `save_checkpoint`.

Design choices:
- The learning rate warms up linearly, then follows a cosine to `min_lr_ratio` of its peak. The
  cosine runs on steps, or, with `train.time_budget_s`, on elapsed training time, so that a run
  fills its budget on any machine.
- A resumed run restores weights, optimizer, step, elapsed time and both random-number
  generators (the batch sampler's and torch's, which drives dropout), so on CPU it follows the
  same loss curve as a run that was never stopped (tested). With a time budget the schedule
  depends on the clock, so only step-based runs repeat exactly.
- Ctrl-C only raises a flag that the loop checks between steps; the loop then saves `last/` and
  says how to resume. A checkpoint is never taken in the middle of an update.
"""

import json
import math
import signal
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from .config import RunConfig, TrainConfig
from .data import Dataset, check_split_length, get_batch, prepare_data
from .errors import UserError
from .generate import generate
from .model import GPT


def choose_device(name: str) -> torch.device:
    """'auto' picks cuda, then mps, then cpu; a named device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {name!r} asked for, but this machine has no MPS; use --device cpu or auto")
    return device


def cpu_has_amx() -> bool:
    """True on CPUs with AMX tiles for bfloat16 (Intel Sapphire Rapids and later), read from Linux."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


# Measured on a 2-core Sapphire Rapids CPU: bf16 autocast made 6-layer, 384-wide training about
# 3x faster and 4-layer, 128-wide training slower, because casting costs more than the small
# matrix products save. 256 wide is where bf16 started to win.
BF16_MIN_WIDTH_ON_CPU = 256


def choose_dtype(name: str, device: torch.device, n_embd: int) -> torch.dtype:
    """The autocast dtype: 'auto' picks bfloat16 where it is faster, float32 otherwise."""
    if name == "float32":
        return torch.float32
    if name == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and cpu_has_amx() and n_embd >= BF16_MIN_WIDTH_ON_CPU:
        return torch.bfloat16
    return torch.float32


def make_optimizers(model: GPT, train: TrainConfig) -> list[torch.optim.Optimizer]:
    """AdamW, with weight decay on matrices (2-D weights) only, or Muon for the blocks' matrices.

    Biases and LayerNorm parameters are 1-D: decaying them towards 0 only hurts. Muon
    orthogonalises each update of a matrix; the embedding (tied to the head) stays with AdamW, as
    Muon's authors advise. Each group remembers its peak learning rate in "peak_lr".
    """
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    muon_matrices = [p for p in model.blocks.parameters() if p.dim() >= 2] if train.optimizer == "muon" else []
    in_muon = {id(p) for p in muon_matrices}
    adamw = torch.optim.AdamW(
        [
            {"params": [p for p in matrices if id(p) not in in_muon], "weight_decay": train.weight_decay},
            {"params": vectors, "weight_decay": 0.0},
        ],
        lr=train.learning_rate,
        betas=(train.beta1, train.beta2),
    )
    optimizers = [adamw]
    if muon_matrices:
        muon = torch.optim.Muon(muon_matrices, lr=train.muon_learning_rate, weight_decay=train.weight_decay,
                                adjust_lr_fn="original")
        optimizers = [muon, adamw]
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["peak_lr"] = group["lr"]
    return optimizers


def lr_at(step: int, progress: float, train: TrainConfig) -> float:
    """The learning-rate multiplier (0, 1] at this step: linear warm-up, then a cosine.

    progress: the fraction of the run done, by steps or by time; the cosine goes from 1 at
    progress 0 to min_lr_ratio at progress 1.
    """
    if step < train.warmup_steps:
        return (step + 1) / train.warmup_steps
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))  # 1 -> 0
    return train.min_lr_ratio + (1.0 - train.min_lr_ratio) * cosine


@torch.no_grad()
def evaluate(model: GPT, dataset: Dataset, train: TrainConfig, dtype: torch.dtype) -> dict[str, float]:
    """Mean loss over eval_batches batches of each split.

    A fresh generator with a fixed seed draws the same batches at every evaluation, so the
    numbers move only because the model does, and the training batches are left undisturbed.
    """
    model.eval()
    device = model.wte.weight.device
    losses = {}
    for name, split in (("train", dataset.train), ("val", dataset.val)):
        generator = torch.Generator().manual_seed(train.seed + 1)
        total = 0.0
        for _ in range(train.eval_batches):
            x, y = get_batch(split, train.batch_size, model.config.block_size, generator, device)
            with autocast(device, dtype):
                _, loss = model(x, y)
            total += loss.item()
        losses[name] = total / train.eval_batches
    model.train()
    return losses


def autocast(device: torch.device, dtype: torch.dtype):
    """Run matrix products in dtype (bfloat16), or change nothing for float32."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


class StopRequest:
    """Turns the first Ctrl-C into a flag that the loop checks between steps; a second one stops at once."""

    def __init__(self):
        self.requested = False

    def __enter__(self) -> "StopRequest":
        self.previous = signal.signal(signal.SIGINT, self.handle)
        return self

    def handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self.previous)


def append_metrics(path: Path, row: dict) -> None:
    with path.open("a") as file:
        file.write(json.dumps(row) + "\n")


def keep_metrics_until(path: Path, step: int) -> None:
    """Drop rows logged after `step`: a resumed run logs those steps again."""
    if path.exists():
        rows = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(row + "\n" for row in rows))


def train(config: RunConfig, resume: bool = False, pause_after: int | None = None, quiet: bool = False) -> dict:
    """Train as `config` says; returns the last evaluation's losses and the step reached.

    pause_after: stop after this many steps in this call (saving `last/`), to be continued later
    with resume=True; the schedule is unaffected.
    """
    cfg = config.train
    out_dir = Path(cfg.out_dir)
    metrics_path = out_dir / "metrics.jsonl"
    if not resume and (out_dir / "last").exists():
        raise UserError(
            f"{out_dir} already holds a run; pass --resume to continue it, or --out DIR to train elsewhere"
        )
    device = choose_device(cfg.device)
    torch.manual_seed(cfg.seed)
    dataset = prepare_data(config.data.corpus, config.data.tokenizer, config.data.val_fraction, out_dir / "data")
    model_config = config.model_config(dataset.tokenizer.vocab_size)
    check_split_length(dataset.train, "train", model_config.block_size)
    check_split_length(dataset.val, "val", model_config.block_size)
    batch_generator = torch.Generator().manual_seed(cfg.seed)
    state = {"step": 0, "elapsed_s": 0.0, "best_val_loss": float("inf")}
    if resume:
        checkpoint = load_checkpoint(out_dir / "last", device)
        if checkpoint.model_config != model_config:
            raise UserError(
                f"the run in {out_dir} has a different model ({checkpoint.model_config}); resume with "
                "the config it was started with"
            )
        model = model_from_checkpoint(checkpoint, device)
        optimizers = make_optimizers(model, cfg)
        saved = checkpoint.train_state
        for optimizer, optimizer_state in zip(optimizers, saved["optimizers"]):
            optimizer.load_state_dict(optimizer_state)
        batch_generator.set_state(saved["rng"]["batches"])
        torch.set_rng_state(saved["rng"]["torch"])
        if device.type == "cuda" and "cuda" in saved["rng"]:
            torch.cuda.set_rng_state(saved["rng"]["cuda"], device)
        state = {key: saved[key] for key in state}
        if state["step"] >= cfg.max_steps or cfg.time_budget_s > 0 and state["elapsed_s"] >= cfg.time_budget_s:
            raise UserError(
                f"the run in {out_dir} has finished (step {state['step']}, {state['elapsed_s']:.0f}s of training); "
                "to train it further, raise train.max_steps or train.time_budget_s, e.g. --set train.max_steps=N"
            )
        keep_metrics_until(metrics_path, state["step"])
    else:
        model = GPT(model_config).to(device)
        optimizers = make_optimizers(model, cfg)
        out_dir.mkdir(parents=True, exist_ok=True)
        metrics_path.unlink(missing_ok=True)

    dtype = choose_dtype(cfg.dtype, device, model_config.n_embd)
    tokens_per_step = cfg.batch_size * cfg.grad_accum * model_config.block_size

    def save(name: str) -> None:
        train_state = {
            **state,
            "optimizers": [optimizer.state_dict() for optimizer in optimizers],
            "rng": {"batches": batch_generator.get_state(), "torch": torch.get_rng_state()},
        }
        if device.type == "cuda":
            train_state["rng"]["cuda"] = torch.cuda.get_rng_state(device)
        save_checkpoint(out_dir / name, model, config.to_dict(), dataset.tokenizer, train_state)

    def progress() -> float:
        if cfg.time_budget_s > 0:
            return state["elapsed_s"] / cfg.time_budget_s
        return state["step"] / cfg.max_steps

    def log_evaluation() -> dict[str, float]:
        losses = evaluate(model, dataset, cfg, dtype)
        row = {"step": state["step"], "train_loss": losses["train"], "val_loss": losses["val"],
               "lr": optimizers[-1].param_groups[0]["lr"], "elapsed_s": round(state["elapsed_s"], 2),
               "tokens": state["step"] * tokens_per_step}
        append_metrics(metrics_path, row)
        bar.write(f"step {state['step']:>6}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}, "
                  f"{state['elapsed_s']:.0f}s")
        if losses["val"] < state["best_val_loss"]:
            state["best_val_loss"] = losses["val"]
            save("best")
        save("last")
        return losses

    if not quiet:
        print(f"model: {model.num_parameters():,} parameters, {model_config.n_layer} layers, "
              f"{model_config.n_embd} wide, context {model_config.block_size}, {model_config.position} positions; "
              f"device {device}, {str(dtype).removeprefix('torch.')}; "
              f"{len(dataset.train):,} train and {len(dataset.val):,} val tokens")
    bar = tqdm(total=100, initial=round(100 * progress()), disable=quiet, dynamic_ncols=True,
               bar_format="{percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}")
    model.train()
    stopped_by = None
    losses = None
    start_step = state["step"]
    with StopRequest() as stop:
        for step in range(start_step, cfg.max_steps):
            if progress() >= 1.0:
                break
            # A resumed run's first step was evaluated before the run stopped.
            if step % cfg.eval_interval == 0 and not (resume and step == start_step):
                losses = log_evaluation()
            if stop.requested or (pause_after is not None and step - start_step >= pause_after):
                stopped_by = "interrupt" if stop.requested else "pause"
                break
            started = time.perf_counter()
            factor = lr_at(step, progress(), cfg)
            for optimizer in optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = group["peak_lr"] * factor
            for _ in range(cfg.grad_accum):
                x, y = get_batch(dataset.train, cfg.batch_size, model_config.block_size, batch_generator, device)
                with autocast(device, dtype):
                    _, loss = model(x, y)
                # Each micro-batch's loss is a mean over its tokens; dividing by grad_accum makes
                # the summed gradients those of the mean over the whole step's tokens.
                (loss / cfg.grad_accum).backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            for optimizer in optimizers:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - started
            state["step"] = step + 1
            state["elapsed_s"] += seconds
            bar.set_postfix_str(f"step {step + 1}, loss {loss.item():.3f}, lr {optimizers[-1].param_groups[0]['lr']:.2e}, "
                                f"{tokens_per_step / seconds / 1000:.1f}k tok/s", refresh=False)
            bar.update(round(100 * min(progress(), 1.0)) - bar.n)
    if stopped_by is None:
        losses = log_evaluation()
    else:
        save("last")
    bar.close()
    if stopped_by == "interrupt":
        print(f"interrupted at step {state['step']}; saved {out_dir / 'last'}. "
              f"Resume with: minitransformer train --out {out_dir} --resume")
    elif stopped_by is None and cfg.sample_tokens > 0 and not quiet:
        print_sample(model, dataset, cfg.sample_tokens, device, cfg.seed)
    return {"step": state["step"], "losses": losses, "stopped_by": stopped_by}


def print_sample(model: GPT, dataset: Dataset, n_tokens: int, device: torch.device, seed: int) -> None:
    """Print a short sample from the model, starting from a newline."""
    start = torch.tensor([dataset.tokenizer.encode("\n")], device=device)  # (1, 1)
    generator = torch.Generator(device=device).manual_seed(seed)
    out = generate(model, start, n_tokens, temperature=0.8, top_k=None, generator=generator)
    print("sample:\n" + dataset.tokenizer.decode(out[0].tolist()))
