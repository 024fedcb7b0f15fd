"""Starting or restoring a run: everything a training carries from step to step, made ready.

- `RunState` is what a checkpoint remembers of a run besides weights and optimizer state;
  `Run` is everything the training loop carries from one step to the next.
- `start_run` makes a new run: fresh weights (or a pretrained model's, with `--init-from`),
  optimizers and random-number generators. `restore_run` continues the run in a folder from its
  `last/` checkpoint, under a config that may extend it.
- `training_dtype` decides `train.dtype = "auto"` by timing this model's whole step (optimizer
  included) in both precisions; the answer also sets Muon's Newton-Schulz precision.

Design choices:
- Under torchrun, rank 0 prepares the data and checks the folder first (`run_data`); the other
  ranks then reuse what it wrote.
- With `--init-from`, the architecture and the tokenizer are the checkpoint's; only `dropout`,
  `attention` and a smaller `block_size` (the position table is cropped, as nanoGPT's
  `crop_block_size`) may differ.
- A resumed run restores weights, optimizer moments, step, elapsed time, schedule, precision and
  both random-number generators; the config's hyperparameters apply to the restored optimizer.
"""

import copy
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .. import pieces
from ..formats.checkpoint import (damaged, pieces_note, find_checkpoint, load_checkpoint, load_weights, model_from_checkpoint,
                                  read_model_config, weights_of)
from ..config import ModelConfig, RunConfig, TrainConfig
from .data import Dataset, check_split_length, get_batch, prepare_data
from ..machine.device import autocast, best_seconds, choose_dtype
from .budget import Clock, now
from .distributed import Ranks
from ..errors import UserError
from ..formats.load import load_model
from .memory import check_memory
from ..model import GPT
from .optim import Schedule, check_same_optimizer, load_optimizer_state, make_optimizers, resumed_schedule, set_compute_dtype
from .run_folder import RunLock, check_has_run, check_no_run, keep_metrics_until

@dataclass
class RunState:
    """What a checkpoint remembers of a run besides weights and optimizer state."""

    schedule: Schedule
    step: int = 0  # optimizer steps taken
    elapsed_s: float = 0.0  # the run's wall-clock seconds, every command's (start-up, evaluations included)
    best_val_loss: float = math.inf
    ended_by: str | None = None  # "max_steps" or "budget" once the run has finished; None before
    clock: dict | None = None  # the saved Clock's fields (budget.py, checked) of a resumed run; None for a new one

    def now(self, unit: str) -> float:
        """Where the run stands, in steps or in wall-clock seconds."""
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
    clock: Clock = field(default_factory=lambda: Clock(now()))  # the run's wall clock (budget.py)
    train_s: float = 0.0  # seconds in training steps in this command (evaluations excluded), for tokens/s
    logged: tuple[int, float] = (0, 0.0)  # (step, train_s) at the last metrics row, for tokens/s
    lock: RunLock | None = None  # the run folder's lock (rank 0 only), checked before every write
    quiet: bool = False  # nothing printed: no final sample, so none is reserved on a budget
    bytes_per_token: float | None = None  # of the validation text, measured at the first evaluation
    scaler: torch.amp.GradScaler | None = None  # float16's loss scaler; a disabled one changes nothing
    # (step, loss, gradient norm) of the first step that was not finite, noted on the device (loop.py)
    nonfinite: torch.Tensor | None = None

    def __post_init__(self):
        set_compute_dtype(self.optimizers, self.dtype)  # one precision for the whole step
        if self.trainer is None:
            self.trainer = training_module(self.model, self.config.train, self.device, self.ranks)
        if self.scaler is None:
            self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        if self.nonfinite is None:
            self.nonfinite = torch.tensor([-1.0, 0.0, 0.0], dtype=torch.float64, device=self.device)


def training_module(model: GPT, cfg: TrainConfig, device: torch.device, ranks: Ranks) -> nn.Module:
    """What the training step calls: the model, compiled (train.compile; "auto" on CUDA only, where
    it fuses the many small kernels; on a CPU it gave nothing here; "reduce-overhead" also replays
    the passes as CUDA graphs), wrapped in DDP under torchrun.
    Checkpoints always save the plain model, so no `_orig_mod.` or `module.` prefixes reach them."""
    module: nn.Module = model
    if pieces.chosen():  # train --practice: the compiler would trace ours in place of hers (pieces.py)
        cfg = replace(cfg, compile=False)
    if cfg.compile == "reduce-overhead":
        if ranks.world > 1:
            raise UserError('train.compile = "reduce-overhead" (CUDA graphs) runs in one process; under torchrun '
                            "use train.compile = true")
        # The forward and backward passes recorded as CUDA graphs and replayed (torch's "CUDA graph
        # trees"): one launch instead of hundreds per pass. train_step marks where each step begins.
        module = torch.compile(module, mode="reduce-overhead")
    elif cfg.compile is True or cfg.compile == "auto" and device.type == "cuda":
        module = torch.compile(module)
    if ranks.world > 1:
        module = DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)
    return module


def compiled(trainer: nn.Module) -> bool:
    """Whether training_module compiled the model (OptimizedModule keeps the original as _orig_mod)."""
    inner = trainer.module if isinstance(trainer, DistributedDataParallel) else trainer
    return hasattr(inner, "_orig_mod")


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
                            say, tokenizer, config.data.split, progress if ranks.main else False, config.data.vocab_size)

    return ranks.main_first(work)


def start_run(config: RunConfig, out_dir: Path, device: torch.device, say, init_from: str | None = None,
              ranks: Ranks = Ranks(), progress: bool | None = None, remeasure: bool = False) -> Run:
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
    return Run(config, out_dir, device, training_dtype(cfg, device, model, dataset, ranks, say, remeasure), dataset, model,
               make_optimizers(model, cfg), torch.Generator().manual_seed(cfg.seed),
               RunState(Schedule.for_config(cfg)), say, ranks)


def restore_run(config: RunConfig, out_dir: Path, device: torch.device, say, ranks: Ranks = Ranks(),
                progress: bool | None = None, remeasure: bool = False) -> Run:
    """The run in out_dir, continued from `last/` under config (which may extend it).

    Everything is read and checked before any file changes: the memory check comes before the
    checkpoint is loaded (so it is not counted twice), and metrics.jsonl is trimmed to the saved
    step only once the whole training state has been restored.
    """
    cfg = config.train
    check_has_run(out_dir)
    path = find_checkpoint(out_dir / "last")
    saved_model = read_model_config(path)
    check_memory(saved_model, cfg, device)
    checkpoint = load_checkpoint(path, device, with_state=True)
    saved = checkpoint.train_state
    if saved is None:
        raise UserError(f"{checkpoint.path} holds no training state (an imported model); "
                        f"to train it, start a new run with --init-from {checkpoint.path}")
    try:
        check_same_optimizer(saved.get("optimizer", checkpoint.run_config["train"]["optimizer"]), cfg.optimizer)
        model = model_from_checkpoint(checkpoint, device)
        optimizers = make_optimizers(model, cfg)
        restore_optimizers(optimizers, saved["optimizers"])
        state = restore_state(saved, cfg, checkpoint.run_config)
        saved_end = saved["schedule"]["end"] if "schedule" in saved else None
        batch_generator = restore_generators(saved["rng"], device)
        dtype = getattr(torch, saved["dtype"]) if cfg.dtype == "auto" and "dtype" in saved and not remeasure else None
        if dtype not in (None, *TRAINING_DTYPES):
            raise ValueError(f"unknown dtype {saved['dtype']!r}")
        scaler_state = saved.get("scaler")
    except UserError:
        raise
    except Exception as error:  # a state.pt that is not this run's: missing entries, other shapes
        raise damaged(checkpoint.path, error)
    check_not_finished(state, saved_end, cfg, out_dir)
    check_same_data(checkpoint.run_config.get("data", {}), config, out_dir)
    dataset = run_data(config, out_dir, say, None, ranks, progress)
    model_config = model_config_for(config, dataset)
    if checkpoint.model_config != model_config:
        raise UserError(
            f"the run in {out_dir} has a different model ({checkpoint.model_config}); resume with "
            "the config it was started with"
        )
    trained_with = pieces_note(checkpoint.path, "resuming")
    if trained_with:
        say(trained_with)
    elif pieces.chosen():
        say(f"note: this run was trained with our pieces; it goes on with yours ({', '.join(pieces.chosen())})")
    # A resumed run keeps the precision it was measured to be fastest in, so it repeats exactly.
    if dtype is not None:
        say(f"precision: {str(dtype).removeprefix('torch.')}, kept from the run being resumed (so that it "
            "continues exactly); pass --remeasure to measure again")
    dtype = dtype or training_dtype(cfg, device, model, dataset, ranks, say, remeasure)
    if ranks.main:
        keep_metrics_until(out_dir / "metrics.jsonl", state.step, say)
    run = Run(config, out_dir, device, dtype, dataset, model, optimizers, batch_generator, state, say, ranks,
              logged=(state.step, 0.0))
    if scaler_state is not None and run.scaler.is_enabled():
        run.scaler.load_state_dict(scaler_state)  # the loss scale it had reached, not 65536 again
    return run


# The data settings that decide the tokens a run trains on (vocab_size only for a learned BPE).
DATA_KEYS = ("corpus", "tokenizer", "val_fraction", "split", "vocab_size")


def check_same_data(saved: dict, config: RunConfig, out_dir: Path) -> None:
    """Refuse, before the data folder is touched, a resume whose data settings differ from the run's."""
    current = asdict(config.data)
    for key in DATA_KEYS:
        if key == "vocab_size" and current["tokenizer"] != "bpe":
            continue
        if key in saved and saved[key] != current[key]:
            raise UserError(f"--resume with data.{key} = {current[key]!r}: the run in {out_dir} was trained with "
                            f"{saved[key]!r}, and its model and data cannot change their tokens on the way; resume "
                            f"without that setting, or start a new run with --init-from {out_dir}")


def check_not_finished(state: RunState, saved_end: float | None, cfg: TrainConfig, out_dir: Path) -> None:
    """Refuse to resume a finished run unless the config moves its end: more steps for a run that
    max_steps ended, a longer budget (or none, with more steps) for one that its budget ended."""
    wanted = Schedule.for_config(cfg)
    if state.ended_by == "budget":
        if state.step < cfg.max_steps and (wanted.unit == "steps" or saved_end is None or wanted.end > saved_end):
            return
        longer = max(cfg.time_budget_s, saved_end or 0.0) * 2
        raise UserError(f"the run in {out_dir} has finished: its time budget of {saved_end or cfg.time_budget_s:g} s "
                        f"ended it at step {state.step}; to train it further, give it a longer budget, e.g. "
                        f"--set train.time_budget_s={longer:g}")
    if state.step >= cfg.max_steps or state.now(wanted.unit) >= wanted.end:
        fix = f"train.max_steps, e.g. --set train.max_steps={state.step * 2}" if state.step >= cfg.max_steps else \
            f"train.time_budget_s, e.g. --set train.time_budget_s={wanted.end * 2:g}"
        raise UserError(f"the run in {out_dir} has finished (step {state.step}, {state.elapsed_s:.0f}s); "
                        f"to train it further, raise {fix}")


def restore_optimizers(optimizers: list[torch.optim.Optimizer], saved: list[dict]) -> None:
    """Load each optimizer's saved state, checking that every moment has its parameter's shape
    (Optimizer.load_state_dict checks only the counts, and a mismatch would fail mid-step)."""
    if not isinstance(saved, list) or len(saved) != len(optimizers):
        raise ValueError(f"state.pt holds {len(saved) if isinstance(saved, list) else 'no list of'} optimizer "
                         f"states; this run has {len(optimizers)}")
    for optimizer, optimizer_state in zip(optimizers, saved):
        load_optimizer_state(optimizer, optimizer_state)
        for group in optimizer.param_groups:
            for param in group["params"]:
                for name, value in optimizer.state.get(param, {}).items():
                    if torch.is_tensor(value) and value.dim() > 0 and value.shape != param.shape:
                        raise ValueError(f"an optimizer's {name} is {tuple(value.shape)}, its parameter "
                                         f"{tuple(param.shape)}")


def restore_state(saved: dict, cfg: TrainConfig, run_config: dict) -> RunState:
    """The RunState a checkpoint saved, with its schedule fitted to the config it resumes under."""
    step, elapsed, best = saved["step"], float(saved["elapsed_s"]), float(saved["best_val_loss"])
    if not isinstance(step, int) or step < 0 or not math.isfinite(elapsed) or elapsed < 0:
        raise ValueError(f"step {step!r} and elapsed_s {elapsed!r} are not a run's")
    if "schedule" in saved:
        old = Schedule(**saved["schedule"])
    else:  # checkpoints of version 0.1 saved no schedule; their cosine started at step 0
        old = Schedule.for_config(TrainConfig(**run_config["train"]))
        old.decay_start = 0.0
    ended_by = saved.get("ended_by")
    if ended_by not in (None, "max_steps", "budget"):
        raise ValueError(f"ended_by {ended_by!r} is not a run's")
    clock = Clock.checked(saved["clock"]) if saved.get("clock") is not None else None
    state = RunState(old, step, elapsed, best, ended_by, clock)
    state.schedule = resumed_schedule(old, step, state.now(old.unit), state.now(Schedule.for_config(cfg).unit), cfg)
    return state


def restore_generators(rng: dict, device: torch.device) -> torch.Generator:
    """Set torch's random state as saved; returns the batch sampler's generator, restored."""
    batch_generator = torch.Generator()
    batch_generator.set_state(rng["batches"])
    torch.set_rng_state(rng["torch"])
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], device)
    return batch_generator


# The precisions a training computes in (train.dtype), as rank 0 tells the others.
TRAINING_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def time_training_step(model: GPT, cfg: TrainConfig, dataset: Dataset, device: torch.device, dtype: torch.dtype) -> float:
    """Seconds of one whole training step of model on a real micro-batch (train.batch_size
    sequences) in dtype: forward and backward under autocast, then the optimizer's update computed as the run
    would compute it in dtype (Muon's Newton-Schulz included). The best of two, after a warm-up.

    The step runs on a copy of the model with optimizers of its own, so the model and its
    optimizers are untouched; torch's random state is restored after.
    """
    rng = torch.get_rng_state()
    x, y = get_batch(dataset.train, cfg.batch_size, model.config.block_size, torch.Generator().manual_seed(0), device)
    probe = copy.deepcopy(model)
    optimizers = make_optimizers(probe, cfg)
    set_compute_dtype(optimizers, dtype)

    def step() -> None:
        with autocast(device, dtype):
            _, loss = probe(x, y)
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    best = best_seconds(step, device)
    torch.set_rng_state(rng)
    return best


def training_dtype(cfg: TrainConfig, device: torch.device, model: GPT, dataset: Dataset, ranks: Ranks,
                   say=None, remeasure: bool = False) -> torch.dtype:
    """train.dtype, with "auto" decided by measuring this model's step (device.choose_dtype), the
    choice and its reason said. Under torchrun rank 0 measures and every rank takes its answer."""
    m = model.config
    what = (f"training {m.n_layer} layers x {m.n_embd} wide, {m.n_head} heads, context {m.block_size}, "
            f"vocab {m.vocab_size}, {m.position}, {m.attention}, {cfg.optimizer} step")
    choice = 0.0
    if ranks.main:
        dtype = choose_dtype(cfg.dtype, device, what, lambda dt: time_training_step(model, cfg, dataset, device, dt),
                             say, remeasure, float16_fallback=True)
        choice = float(TRAINING_DTYPES.index(dtype))
    return TRAINING_DTYPES[int(ranks.from_main(choice))]
