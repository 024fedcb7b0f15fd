"""Training: `train(config)` runs a visible `for step in ...` loop over small named steps.

Read `train` first. It takes the run folder's lock, starts a run (`start_run`) or restores one
(`restore_run`), then loops: every `eval_interval` steps `evaluate_and_save`, and every step
`train_step` (set the learning rate, accumulate gradients over micro-batches, clip, update).
Everything a run carries from step to step is in a `Run`; what a checkpoint must remember of it
is its `RunState`.

Design choices:
- A resumed run restores weights, optimizer, step, elapsed time, schedule and both random-number
  generators (the batch sampler's and torch's, which drives dropout), so on CPU it follows the
  same loss curve as a run that was never stopped (tested). With a time budget the schedule
  depends on the clock, so only step-based runs repeat exactly. The config's hyperparameters
  (learning rates, weight decay, betas) apply to the restored optimizer (optim.py).
- A non-finite loss or gradient stops the run at once with one line; no checkpoint is written
  after it, so `last/` keeps the last finite state.
- Ctrl-C only raises a flag that the loop checks between steps; the loop then saves `last/` and
  says how to resume. A checkpoint is never taken in the middle of an update.
"""

import math
import signal
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from .checkpoint import load_checkpoint, load_weights, model_from_checkpoint, save_checkpoint, weights_of
from .config import ModelConfig, RunConfig, TrainConfig
from .data import Dataset, check_split_length, get_batch, prepare_data
from .device import autocast, choose_dtype, matmul_peak, synchronize
from .distributed import Ranks, start_distributed, stop_distributed
from .errors import UserError
from .generate import generate
from .load import load_model
from .memory import check_memory, flops_per_token
from .model import GPT
from .optim import (Schedule, check_same_optimizer, load_optimizer_state, lr_at, make_optimizers,
                    resumed_schedule, set_learning_rate)
from .run_folder import (RunLock, append_metrics, check_has_run, check_no_run, clean_temporary, keep_metrics_until,
                         make_run_folder)


@dataclass
class RunState:
    """What a checkpoint remembers of a run besides weights and optimizer state."""

    schedule: Schedule
    step: int = 0  # optimizer steps taken
    elapsed_s: float = 0.0  # seconds spent in training steps (evaluations and saving excluded)
    best_val_loss: float = math.inf

    def now(self, unit: str) -> float:
        """Where the run stands, in steps or in seconds of training."""
        return float(self.step) if unit == "steps" else self.elapsed_s


@dataclass
class Run:
    """Everything a training carries from one step to the next."""

    config: RunConfig
    out_dir: Path
    device: torch.device
    dtype: torch.dtype
    dataset: Dataset
    model: GPT
    optimizers: list[torch.optim.Optimizer]
    batch_generator: torch.Generator
    state: RunState
    say: object = field(default=print)  # prints a line (through the progress bar while it shows)
    ranks: Ranks = field(default_factory=Ranks)  # this process among torchrun's (rank 0 of 1 without)
    trainer: nn.Module | None = None  # what the training step calls: the model, or DDP around it
    logged: tuple[int, float] = (0, 0.0)  # (step, elapsed_s) at the last metrics row, for tokens/s

    def __post_init__(self):
        if self.trainer is None:
            self.trainer = training_module(self.model, self.config.train, self.device, self.ranks)


def training_module(model: GPT, cfg: TrainConfig, device: torch.device, ranks: Ranks) -> nn.Module:
    """What the training step calls: the model, compiled (train.compile; "auto" on CUDA only, where
    it fuses the many small kernels; on a CPU it gave nothing here), wrapped in DDP under torchrun.
    Checkpoints always save the plain model, so no `_orig_mod.` or `module.` prefixes reach them."""
    module: nn.Module = model
    if cfg.compile is True or cfg.compile == "auto" and device.type == "cuda":
        module = torch.compile(module)
    if ranks.world > 1:
        module = DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)
    return module


class Diverged(UserError):
    """The loss or the gradients stopped being finite numbers."""


def diverged(step: int, what: str, value: float, train: TrainConfig, saved_step: int | None) -> Diverged:
    kept = f"last/ keeps step {saved_step}, the last finite state" if saved_step is not None else "nothing was saved"
    clipping = "gradient clipping is off (train.grad_clip = 0)" if train.grad_clip == 0 else \
        f"clipping at train.grad_clip = {train.grad_clip} was not enough"
    rates = f"train.learning_rate = {train.learning_rate}"
    if train.optimizer == "muon":
        rates += f", train.muon_learning_rate = {train.muon_learning_rate}"
    return Diverged(
        f"training diverged at step {step}: the {what} is {value}; likely causes: a learning rate too high "
        f"({rates}), {clipping}; {kept}. Lower the learning rate (or turn clipping on) and train again"
    )


def model_config_for(config: RunConfig, dataset: Dataset) -> ModelConfig:
    model_config = config.model_config(dataset.tokenizer.vocab_size)
    check_split_length(dataset.train, "train", model_config.block_size)
    check_split_length(dataset.val, "val", model_config.block_size)
    return model_config


# With --init-from the architecture is the checkpoint's; these [model] keys may still differ,
# because they change how the model is trained or computed, not what its weights mean.
FINE_TUNE_KEYS = ("dropout", "attention", "block_size")


def fine_tune_config(config: RunConfig, pretrained: ModelConfig, source: str) -> RunConfig:
    """config with the pretrained model's architecture; a [model] key that would change it is an error.

    A smaller block_size is allowed: the position table is cropped (as nanoGPT's crop_block_size).
    """
    for key, value in config.model.items():
        if key == "block_size" and value > pretrained.block_size:
            raise UserError(f"model.block_size = {value} is longer than the context {source} was trained "
                            f"for ({pretrained.block_size}); use at most that")
        if key not in FINE_TUNE_KEYS and value != getattr(pretrained, key):
            raise UserError(
                f"model.{key} = {value!r} would change the architecture of {source} (it has "
                f"{getattr(pretrained, key)!r}); with --init-from the architecture comes from the checkpoint: "
                f"remove [model] keys except {', '.join(FINE_TUNE_KEYS)} (a smaller block_size)"
            )
    model = {key: value for key, value in asdict(pretrained).items() if key != "vocab_size"}
    return replace(config, model={**model, **config.model})


def pretrained_model(path: str, config: RunConfig, device: torch.device) -> tuple[RunConfig, GPT, object]:
    """The model to fine-tune from path, fitted to config (dropout, cropped context), with its tokenizer."""
    loaded, tokenizer = load_model(path, device)
    description = tokenizer.describe()
    name = description.get("name", description["kind"])
    if config.data.tokenizer != name:
        raise UserError(f"{path} was trained with the {name!r} tokenizer, and fine-tuning must use it: "
                        f"set data.tokenizer = \"{name}\" (configs/finetune_gpt2_shakespeare.toml does)")
    config = fine_tune_config(config, loaded.config, path)
    model_config = config.model_config(loaded.config.vocab_size)
    state = weights_of(loaded)
    if "wpe.weight" in state:
        state["wpe.weight"] = state["wpe.weight"][: model_config.block_size]  # (T', C): crop the position table
    model = load_weights(GPT(model_config).to(device), state, Path(path))
    return config, model, tokenizer


def run_data(config: RunConfig, out_dir: Path, say, tokenizer, ranks: Ranks, progress: bool | None, check=None) -> Dataset:
    """The run's tokenised data, prepared by rank 0 (after check(), if given) and reused by the others."""
    def work() -> Dataset:
        if ranks.main and check is not None:
            check()
        return prepare_data(config.data.corpus, config.data.tokenizer, config.data.val_fraction, out_dir / "data",
                            say, tokenizer, config.data.split, progress if ranks.main else False)

    return ranks.main_first(work)


def start_run(config: RunConfig, out_dir: Path, device: torch.device, say, init_from: str | None = None,
              ranks: Ranks = Ranks(), progress: bool | None = None) -> Run:
    """A new run: fresh weights (or a pretrained model's, with init_from), optimizers and generators."""
    cfg = config.train
    torch.manual_seed(cfg.seed)
    model, tokenizer = None, None
    if init_from is not None:
        config, model, tokenizer = pretrained_model(init_from, config, device)
    dataset = run_data(config, out_dir, say, tokenizer, ranks, progress, check=lambda: check_no_run(out_dir))
    model_config = model_config_for(config, dataset)
    check_memory(model_config, cfg, device)
    if model is None:
        model = GPT(model_config).to(device)
    if ranks.main:
        (out_dir / "metrics.jsonl").unlink(missing_ok=True)
    return Run(config, out_dir, device, training_dtype(cfg, device, model, dataset, ranks), dataset, model,
               make_optimizers(model, cfg), torch.Generator().manual_seed(cfg.seed),
               RunState(Schedule.for_config(cfg)), say, ranks)


def restore_run(config: RunConfig, out_dir: Path, device: torch.device, say, ranks: Ranks = Ranks(),
                progress: bool | None = None) -> Run:
    """The run in out_dir, continued from `last/` under config (which may extend it)."""
    cfg = config.train
    check_has_run(out_dir)
    checkpoint = load_checkpoint(out_dir / "last", device, with_state=True)
    saved = checkpoint.train_state
    if saved is None:
        raise UserError(f"{checkpoint.path} holds no training state (an imported model); "
                        f"to train it, start a new run with --init-from {checkpoint.path}")
    check_same_optimizer(saved.get("optimizer", checkpoint.run_config["train"]["optimizer"]), cfg.optimizer)
    dataset = run_data(config, out_dir, say, None, ranks, progress)
    model_config = model_config_for(config, dataset)
    if checkpoint.model_config != model_config:
        raise UserError(
            f"the run in {out_dir} has a different model ({checkpoint.model_config}); resume with "
            "the config it was started with"
        )
    check_memory(model_config, cfg, device)
    model = model_from_checkpoint(checkpoint, device)
    optimizers = make_optimizers(model, cfg)
    for optimizer, optimizer_state in zip(optimizers, saved["optimizers"]):
        load_optimizer_state(optimizer, optimizer_state)
    batch_generator = torch.Generator()
    batch_generator.set_state(saved["rng"]["batches"])
    torch.set_rng_state(saved["rng"]["torch"])
    if device.type == "cuda" and "cuda" in saved["rng"]:
        torch.cuda.set_rng_state(saved["rng"]["cuda"], device)
    if "schedule" in saved:
        old = Schedule(**saved["schedule"])
    else:  # checkpoints of version 0.1 saved no schedule; their cosine started at step 0
        old = Schedule.for_config(TrainConfig(**checkpoint.run_config["train"]))
        old.decay_start = 0.0
    state = RunState(old, saved["step"], saved["elapsed_s"], saved["best_val_loss"])
    state.schedule = resumed_schedule(old, state.step, state.now(old.unit), state.now(Schedule.for_config(cfg).unit), cfg)
    if state.step >= cfg.max_steps or state.now(state.schedule.unit) >= state.schedule.end:
        raise UserError(
            f"the run in {out_dir} has finished (step {state.step}, {state.elapsed_s:.0f}s of training); "
            "to train it further, raise train.max_steps or train.time_budget_s, e.g. --set train.max_steps=N"
        )
    if ranks.main:
        keep_metrics_until(out_dir / "metrics.jsonl", state.step, say)
    # A resumed run keeps the precision it was measured to be fastest in, so it repeats exactly.
    dtype = getattr(torch, saved["dtype"]) if cfg.dtype == "auto" and "dtype" in saved else \
        training_dtype(cfg, device, model, dataset, ranks)
    return Run(config, out_dir, device, dtype, dataset, model, optimizers, batch_generator, state, say, ranks,
               logged=(state.step, state.elapsed_s))


# Sequences in the batch that measures a training step's speed: enough to be representative,
# few enough that measuring both precisions takes a second or two even for larger models.
PROBE_BATCH = 4


def time_training_step(model: GPT, dataset: Dataset, device: torch.device, dtype: torch.dtype) -> float:
    """Seconds of one forward and backward pass of model on a real batch of PROBE_BATCH sequences
    in dtype (the best of two, after a warm-up). The weights are not updated, and torch's random
    state is restored after."""
    rng = torch.get_rng_state()
    x, y = get_batch(dataset.train, PROBE_BATCH, model.config.block_size, torch.Generator().manual_seed(0), device)
    best = math.inf
    for attempt in range(3):
        synchronize(device)
        started = time.perf_counter()
        with autocast(device, dtype):
            _, loss = model(x, y)
        loss.backward()
        synchronize(device)
        if attempt > 0:
            best = min(best, time.perf_counter() - started)
    model.zero_grad(set_to_none=True)
    torch.set_rng_state(rng)
    return best


def training_dtype(cfg: TrainConfig, device: torch.device, model: GPT, dataset: Dataset, ranks: Ranks) -> torch.dtype:
    """train.dtype, with "auto" decided by measuring this model's step (device.choose_dtype).
    Under torchrun rank 0 measures and every rank takes its answer."""
    m = model.config
    what = (f"training {m.n_layer} layers x {m.n_embd} wide, {m.n_head} heads, context {m.block_size}, "
            f"vocab {m.vocab_size}, {m.position}, {m.attention}")
    bf16 = 0.0
    if ranks.main:
        dtype = choose_dtype(cfg.dtype, device, what, lambda dt: time_training_step(model, dataset, device, dt))
        bf16 = float(dtype == torch.bfloat16)
    return torch.bfloat16 if ranks.from_main(bf16) else torch.float32


def save_run(run: Run, name: str) -> None:
    """Write the run's checkpoint `name` (last or best) into its folder."""
    rng = {"batches": run.batch_generator.get_state(), "torch": torch.get_rng_state()}
    if run.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(run.device)
    train_state = {
        "step": run.state.step, "elapsed_s": run.state.elapsed_s, "best_val_loss": run.state.best_val_loss,
        "schedule": run.state.schedule.to_dict(), "optimizer": run.config.train.optimizer,
        "dtype": str(run.dtype).removeprefix("torch."),
        "optimizers": [optimizer.state_dict() for optimizer in run.optimizers], "rng": rng,
    }
    save_checkpoint(run.out_dir / name, run.model, run.config.to_dict(), run.dataset.tokenizer, train_state)


@torch.no_grad()
def evaluate(model: GPT, dataset: Dataset, train: TrainConfig, dtype: torch.dtype, ranks: Ranks = Ranks()) -> dict[str, float]:
    """Mean loss over eval_batches batches of each split (each rank takes its slice; averaged over ranks).

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
            x, y = get_batch(split, train.batch_size, model.config.block_size, generator, device, ranks.rank, ranks.world)
            with autocast(device, dtype):
                _, loss = model(x, y)
            total += loss.item()
        losses[name] = ranks.mean(total / train.eval_batches)
    model.train()
    return losses


def evaluate_and_save(run: Run, saved_step: int | None) -> dict[str, float]:
    """Evaluate, log a metrics row, and save `best/` (on a new lowest val loss) and `last/`."""
    cfg, state = run.config.train, run.state
    losses = evaluate(run.model, run.dataset, cfg, run.dtype, run.ranks)
    for name, value in losses.items():
        if not math.isfinite(value):
            raise diverged(state.step, f"{name} loss", value, cfg, saved_step)
    run.say(f"step {state.step:>6}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}, "
            f"{state.elapsed_s:.0f}s")
    new_best = losses["val"] < state.best_val_loss
    if new_best:
        state.best_val_loss = losses["val"]
    if run.ranks.main:
        row = {"step": state.step, "train_loss": losses["train"], "val_loss": losses["val"],
               "lr": run.optimizers[-1].param_groups[0]["lr"], "elapsed_s": round(state.elapsed_s, 3),
               "tokens": state.step * tokens_per_step(run)}
        steps, seconds = state.step - run.logged[0], state.elapsed_s - run.logged[1]
        if steps > 0 and seconds > 0:
            rate = steps * tokens_per_step(run) / seconds  # tokens per second since the last row
            peak = matmul_peak(run.dtype, run.device) * run.ranks.world
            row.update(tokens_per_s=round(rate, 1), mfu=round(rate * flops_per_token(run.model.config) / peak, 4))
        append_metrics(run.out_dir / "metrics.jsonl", row)
        run.logged = (state.step, state.elapsed_s)
        if new_best:
            save_run(run, "best")
        save_run(run, "last")
    return losses


def tokens_per_step(run: Run) -> int:
    """Tokens in one optimizer step, over all ranks."""
    cfg = run.config.train
    return cfg.batch_size * cfg.grad_accum * run.model.config.block_size * run.ranks.world


def train_step(run: Run, saved_step: int | None) -> float:
    """One optimizer step: learning rate, grad_accum micro-batches, clipping, update. Returns the loss."""
    cfg, state, model = run.config.train, run.state, run.model
    if state.step == cfg.warmup_steps and state.schedule.decay_start is None:
        state.schedule.decay_start = state.now(state.schedule.unit)  # warm-up ends: the cosine starts here
    set_learning_rate(run.optimizers, lr_at(state.step, state.now(state.schedule.unit), state.schedule, cfg))
    total = 0.0
    for micro in range(cfg.grad_accum):
        x, y = get_batch(run.dataset.train, cfg.batch_size, model.config.block_size, run.batch_generator, run.device,
                         run.ranks.rank, run.ranks.world)
        # Under DDP, gradients are averaged over ranks during backward; only the last micro-batch
        # needs that, the others just accumulate locally.
        last = micro == cfg.grad_accum - 1
        with autocast(run.device, run.dtype), (nullcontext() if last or run.ranks.world == 1 else run.trainer.no_sync()):
            _, loss = run.trainer(x, y)
            # Each micro-batch's loss is a mean over its tokens; dividing by grad_accum makes the
            # summed gradients those of the mean over the whole step's tokens.
            (loss / cfg.grad_accum).backward()
        total += loss.item() / cfg.grad_accum
    total = run.ranks.mean(total)  # every rank sees the same loss, so all stop together if it is NaN
    # Clipping at infinity clips nothing but still measures the norm, which must be finite.
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
    if not math.isfinite(total) or not math.isfinite(norm.item()):
        what, value = ("loss", total) if not math.isfinite(total) else ("gradient norm", norm.item())
        raise diverged(state.step, what, value, cfg, saved_step)
    for optimizer in run.optimizers:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return total


class StopRequest:
    """Turns the first Ctrl-C (or SIGTERM: `kill`, or torchrun stopping its workers) into a flag
    that the loop checks between steps; a second one stops at once.

    Python lets only the main thread set signal handlers; in another thread (a notebook's worker,
    a test) Ctrl-C is not delivered there anyway, so the flag simply never rises.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self.previous = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self.previous = {number: signal.signal(number, self.handle) for number in self.SIGNALS}
        return self

    def handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for number, previous in self.previous.items():
            signal.signal(number, previous)


def describe(run: Run) -> str:
    m = run.model.config
    return (f"model: {run.model.num_parameters():,} parameters, {m.n_layer} layers, {m.n_embd} wide, "
            f"context {m.block_size}, {m.position} positions; device {run.device}, "
            f"{str(run.dtype).removeprefix('torch.')}; {len(run.dataset.train):,} train and "
            f"{len(run.dataset.val):,} val tokens")


def train(config: RunConfig, resume: bool = False, pause_after: int | None = None, quiet: bool = False,
          init_from: str | None = None) -> dict:
    """Train as `config` says; returns the step reached, the last evaluation's losses, and why it stopped.

    pause_after: stop after this many steps in this call (saving `last/`), to be continued later
    with resume=True; the schedule is unaffected. init_from: a checkpoint, run or Hugging Face
    GPT-2 folder whose model a new run starts from (fine-tuning).
    """
    cfg = config.train
    if pause_after is not None and pause_after < 1:
        raise UserError(f"--pause-after must be at least 1 step, got {pause_after}")
    if resume and init_from is not None:
        raise UserError("--resume continues a run and --init-from starts a new one: pass only one of them")
    out_dir = Path(cfg.out_dir)
    ranks, device = start_distributed(cfg.device)
    if device.type == "cuda":
        # TF32 matrix products: float32 range with a 10-bit mantissa, several times faster on
        # Ampere and later, and what bf16 autocast leaves in float32 is not precision-critical.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    finished = False
    quiet = quiet or not ranks.main  # under torchrun, rank 0 alone speaks
    say = (lambda message: None) if quiet else print
    try:
        if ranks.main:
            make_run_folder(out_dir)
        with RunLock(out_dir, say) if ranks.main else nullcontext():
            if ranks.main:
                clean_temporary(out_dir)
            progress = False if quiet else None  # None: data bars only on a terminal
            run = restore_run(config, out_dir, device, say, ranks, progress) if resume else \
                start_run(config, out_dir, device, say, init_from, ranks, progress)
            say(describe(run))
            # disable=None: no bar when stderr is not a terminal (a log file, a pipe, a notebook).
            bar = tqdm(total=100, initial=round(100 * progress_of(run)), disable=True if quiet else None,
                       dynamic_ncols=True, bar_format="{percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}")
            if not quiet:
                run.say = bar.write
            try:
                result = loop(run, bar, resume, pause_after)
            except RuntimeError as error:
                if not ranks.lost_peer(error):
                    raise
                raise UserError(f"another training process stopped ({str(error).splitlines()[0][:120]}); "
                                f"{out_dir / 'last'} is intact; resume with: {resume_command(out_dir, ranks)}")
            finally:
                bar.close()
        state = run.state
        if result["stopped_by"] is not None:
            verb = "interrupted" if result["stopped_by"] == "interrupt" else "paused"
            say(f"{verb} at step {state.step}; saved {out_dir / 'last'}. "
                f"Resume with: {resume_command(out_dir, ranks)}")
        elif cfg.sample_tokens > 0 and not quiet:
            print_sample(run.model, run.dataset, cfg.sample_tokens, device, cfg.seed)
        finished = True
        return result
    finally:
        stop_distributed(finished)


def resume_command(out_dir: Path, ranks: Ranks) -> str:
    launcher = f"torchrun --nproc_per_node={ranks.world} -m minitransformer" if ranks.world > 1 else "minitransformer"
    return f"{launcher} train --out {out_dir} --resume"


def progress_of(run: Run) -> float:
    """The fraction of the run done, by steps or by seconds of training."""
    schedule = run.state.schedule
    return min(run.state.now(schedule.unit) / schedule.end, 1.0)


def loop(run: Run, bar: tqdm, resume: bool, pause_after: int | None) -> dict:
    """The training loop itself: evaluate and save every eval_interval steps, step, repeat."""
    cfg, state = run.config.train, run.state
    start_step = state.step
    saved_step = state.step if resume else None  # the step that last/ holds
    stopped_by, losses = None, None
    with StopRequest() as stop:
        for step in range(start_step, cfg.max_steps):
            if state.now(state.schedule.unit) >= state.schedule.end:
                break
            # A resumed run's first step was evaluated before the run stopped.
            if step % cfg.eval_interval == 0 and not (resume and step == start_step):
                losses = evaluate_and_save(run, saved_step)
                saved_step = step
            interrupted = run.ranks.any(stop.requested)  # a Ctrl-C seen by any rank stops them all here
            if interrupted or (pause_after is not None and step - start_step >= pause_after):
                stopped_by = "interrupt" if interrupted else "pause"
                break
            started = time.perf_counter()
            loss = train_step(run, saved_step)
            seconds = run.ranks.from_main(time.perf_counter() - started)  # rank 0's clock decides
            state.step = step + 1
            state.elapsed_s += seconds
            bar.set_postfix_str(f"step {state.step}, loss {loss:.3f}, lr {run.optimizers[-1].param_groups[0]['lr']:.2e}, "
                                f"{tokens_per_step(run) / seconds / 1000:.1f}k tok/s", refresh=False)
            bar.update(round(100 * progress_of(run)) - bar.n)
        if stopped_by is None:
            losses = evaluate_and_save(run, saved_step)
        elif saved_step != state.step and run.ranks.main:
            save_run(run, "last")
    return {"step": state.step, "losses": losses, "stopped_by": stopped_by}


def print_sample(model: GPT, dataset: Dataset, n_tokens: int, device: torch.device, seed: int) -> None:
    """Print a short sample from the model, starting from a newline, or from the corpus's first
    token when the vocabulary has no newline."""
    try:
        first = dataset.tokenizer.encode("\n")[:1]
    except UserError:
        first = []
    start = torch.tensor([first or [int(np.asarray(dataset.train[0]))]], device=device)  # (1, 1)
    generator = torch.Generator(device=device).manual_seed(seed)
    out = generate(model, start, n_tokens, temperature=0.8, top_k=None, generator=generator)
    print("sample:\n" + dataset.tokenizer.decode(out[0].tolist()))
