"""Training: `train(config)` runs a visible `for step in ...` loop over small named steps.

Read `train` first. It takes the run folder's lock, starts a run or restores one (`start_run`,
`restore_run` in setup.py), then loops: every `eval_interval` steps `evaluate_and_save`, and
every step `train_step` (set the learning rate, accumulate gradients over micro-batches, clip,
update). Everything a run carries from step to step is in a `Run`; what a checkpoint must
remember of it is its `RunState`.

Design choices:
- A resumed run restores weights, optimizer, step, elapsed time, schedule and both random-number
  generators (the batch sampler's and torch's, which drives dropout), so on CPU it follows the
  same loss curve as a run that was never stopped (tested). With a time budget the schedule
  depends on the clock, so only step-based runs repeat exactly. The config's hyperparameters
  (learning rates, weight decay, betas) apply to the restored optimizer (optim.py).
- A step never waits for the GPU: the loss stays on the device, and whether it (or the gradient
  norm) stopped being finite is noted there (`note_nonfinite`). The host reads the note when it
  reports progress (about once a second), before every evaluation and save, and at every step on
  a CPU or under torchrun; a non-finite step then stops the run with one line naming that step,
  and no checkpoint is written after it, so `last/` keeps the last finite state.
- float16 (GPUs without native bfloat16) trains with a gradient scaler, as nanoGPT does: the loss
  is multiplied before backward so small gradients survive float16, and a step whose gradients
  overflow is skipped by the scaler, not counted as divergence (only a non-finite loss, or a
  scale that collapses, is).
- Ctrl-C only raises a flag that the loop checks between steps; the loop then saves `last/` and
  says how to resume. A checkpoint is never taken in the middle of an update.
"""

import math
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from tqdm.auto import tqdm as auto_tqdm

from .. import pieces
from ..formats.checkpoint import save_checkpoint
from ..config import RunConfig, TrainConfig
from .data import Dataset, bits_per_byte, get_batch, mix_repeated
from ..machine.allocator import keep_freed_memory
from ..machine.device import autocast, matmul_peak, synchronize
from .distributed import Ranks, start_distributed, stop_distributed
from ..errors import UserError, short_cause, user_path
from ..generate import generate
from ..induction import in_context_score
from .memory import flops_per_token
from ..model import GPT
from .optim import lr_at, set_learning_rate
from ..machine.files import leftovers
from . import budget
from .budget import Clock, evaluation_due, forecast, position
from .run_folder import Made, RunLock, append_metrics, check_not_inside_ours, check_ours, make_run_folder
from .setup import Run, compiled, restore_run, start_run


class Diverged(UserError):
    """The loss or the gradients stopped being finite numbers (on every rank alike: the loss is averaged)."""

    everywhere = True


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


def check_folder(run: Run) -> None:
    """Stop (UserError) if the run folder or its lock vanished: never write into another run's folder."""
    if run.lock is not None:
        run.lock.check_held()


@contextmanager
def writing_into_folder(run: Run):
    """Check the folder before a write, and again when the write fails: a folder deleted in the
    middle of writing is said to be that, not a full disk."""
    check_folder(run)
    try:
        yield
    except (UserError, OSError):
        check_folder(run)
        raise


def save_run(run: Run, name: str) -> None:
    """Write the run's checkpoint `name` (last or best) into its folder."""
    rng = {"batches": run.batch_generator.get_state(), "torch": torch.get_rng_state()}
    if run.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(run.device)
    train_state = {
        "step": run.state.step, "elapsed_s": run.state.elapsed_s, "best_val_loss": run.state.best_val_loss,
        "schedule": run.state.schedule.to_dict(), "optimizer": run.config.train.optimizer,
        "ended_by": run.state.ended_by, "clock": run.clock.saved(),
        "dtype": str(run.dtype).removeprefix("torch."),
        "optimizers": [optimizer.state_dict() for optimizer in run.optimizers], "rng": rng,
    }
    if run.scaler.is_enabled():
        train_state["scaler"] = run.scaler.state_dict()
    with writing_into_folder(run):
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
        generator = torch.Generator().manual_seed((train.seed + 1) % 2**64)  # seeds go up to 2**64 - 1
        total = torch.zeros((), device=device)  # summed on the device, read once
        for _ in range(train.eval_batches):
            x, y = get_batch(split, train.batch_size, model.config.block_size, generator, device, ranks.rank, ranks.world)
            with autocast(device, dtype):
                _, loss = model(x, y)
            total += loss
        losses[name] = ranks.mean(total.item() / train.eval_batches)
    model.train()
    return losses


def evaluate_and_save(run: Run, saved_step: int | None) -> dict[str, float]:
    """Evaluate, log a metrics row, and save `best/` (on a new lowest val loss) and `last/`.

    Its seconds go on the run's clock (rank 0's, for every rank) before the save, so that the
    checkpoint's clock counts this evaluation; the save's seconds are added after. At a command's
    first evaluation on a budget the final sample's seconds are predicted too (budget.py reserves them).
    """
    cfg, state, clock = run.config.train, run.state, run.clock
    check_finite(run, saved_step)
    synchronize(run.device)  # what the GPU still has queued is training, not evaluation
    begun = run.ranks.from_main(clock.elapsed())
    state.elapsed_s = begun
    losses = evaluate(run.model, run.dataset, cfg, run.dtype, run.ranks)
    for name, value in losses.items():
        if not math.isfinite(value):
            raise diverged(state.step, f"{name} loss", value, cfg, saved_step)
    if run.bytes_per_token is None:
        run.bytes_per_token = run.dataset.bytes_per_token()
    bpb = bits_per_byte(losses["val"], run.bytes_per_token)
    with autocast(run.device, run.dtype):
        in_context = in_context_score(run.model)  # the same on every rank: the same weights and tokens
    run.say(f"step {state.step:>6}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f} "
            f"({bpb:.3f} bits per byte), in-context {in_context:.2f}, {state.elapsed_s:.0f}s")
    new_best = losses["val"] < state.best_val_loss
    if new_best:
        state.best_val_loss = losses["val"]
    if run.ranks.main:
        with writing_into_folder(run):
            append_metrics(run.out_dir / "metrics.jsonl", {**metrics_row(run, losses), "val_bpb": round(bpb, 5),
                                                           "in_context": round(in_context, 5)})
    run.logged = (state.step, run.train_s)
    if not clock.sample_measured and cfg.time_budget_s > 0:
        clock.sample_s = run.ranks.from_main(sample_seconds(run))  # every rank reserves the same
        clock.sample_measured = True
    ended = run.ranks.from_main(clock.elapsed())
    clock.evaluated(ended - begun, ended, state.step)
    # The checkpoint's seconds: a resumed run goes on from the end of this evaluation, a reopened
    # finished one from the end of its (predicted) sample.
    state.elapsed_s = ended + (clock.sample_s if state.ended_by is not None else 0.0)
    if run.ranks.main:
        if new_best:
            save_run(run, "best")
        save_run(run, "last")
    clock.evaluated_more(run.ranks.from_main(clock.elapsed()) - ended)
    return losses


def metrics_row(run: Run, losses: dict[str, float]) -> dict:
    """The metrics.jsonl row of an evaluation: step, losses, learning rate, the run's seconds and
    tokens, and the speed since the last row (tokens per second, model FLOPs utilisation)."""
    state = run.state
    row = {"step": state.step, "train_loss": losses["train"], "val_loss": losses["val"],
           "lr": run.optimizers[-1].param_groups[0]["lr"], "elapsed_s": round(state.elapsed_s, 3),
           "tokens": state.step * tokens_per_step(run)}
    steps, seconds = state.step - run.logged[0], run.train_s - run.logged[1]
    if steps > 0 and seconds > 0:
        rate = steps * tokens_per_step(run) / seconds  # tokens per second since the last row
        peak = matmul_peak(run.dtype, run.device) * run.ranks.world
        mfu = rate * flops_per_token(run.model.config) / peak
        row.update(tokens_per_s=round(rate, 1), **({"mfu": round(mfu, 4)} if math.isfinite(mfu) else {}))
    return row


def tokens_per_step(run: Run) -> int:
    """Tokens in one optimizer step, over all ranks."""
    cfg = run.config.train
    return cfg.batch_size * cfg.grad_accum * run.model.config.block_size * run.ranks.world


def train_step(run: Run) -> torch.Tensor:
    """One optimizer step: learning rate, grad_accum micro-batches, clipping, update.

    Returns the loss as a 0-d tensor on the device: nothing here reads a value back to the host,
    so on a GPU the host queues this step's work and goes on to prepare the next one.
    """
    cfg, state, model, scaler = run.config.train, run.state, run.model, run.scaler
    if cfg.compile == "reduce-overhead":
        # A new step: the outputs of the last one's recorded passes are no longer in use, so
        # their memory may be written again.
        torch.compiler.cudagraph_mark_step_begin()
    # Warm-up ends: the cosine starts here. ">=", not "==": a run resumed with a shorter warm-up
    # than the step it stands at is past its warm-up at once.
    where = position(run.clock, state.step, state.elapsed_s, state.schedule.unit)
    if state.step >= cfg.warmup_steps and state.schedule.decay_start is None:
        state.schedule.decay_start = where
    set_learning_rate(run.optimizers, lr_at(state.step, where, state.schedule, cfg))
    total = torch.zeros((), device=run.device)
    for micro in range(cfg.grad_accum):
        x, y = get_batch(run.dataset.train, cfg.batch_size, model.config.block_size, run.batch_generator, run.device,
                         run.ranks.rank, run.ranks.world)
        if run.config.data.repeated_share > 0:  # rows that grow induction heads (induction.py)
            x, y = mix_repeated(x, y, run.config.data, model.config.vocab_size, run.batch_generator, run.ranks.rank,
                                run.ranks.world)
        # Under DDP, gradients are averaged over ranks during backward; only the last micro-batch
        # needs that, the others just accumulate locally.
        last = micro == cfg.grad_accum - 1
        with autocast(run.device, run.dtype), (nullcontext() if last or run.ranks.world == 1 else run.trainer.no_sync()):
            _, loss = run.trainer(x, y)
            # Each micro-batch's loss is a mean over its tokens; dividing by grad_accum makes the
            # summed gradients those of the mean over the whole step's tokens. The scaler (float16
            # only; otherwise it changes nothing) multiplies the loss so small gradients survive.
            scaler.scale(loss / cfg.grad_accum).backward()
        total += loss.detach() / cfg.grad_accum
    run.ranks.average_(total)  # every rank sees the same loss, so all stop together if it is NaN
    for optimizer in run.optimizers:
        scaler.unscale_(optimizer)  # the true gradients, before clipping them
    # Clipping at infinity clips nothing but still measures the norm, which must be finite.
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
    note_nonfinite(run, total, norm)
    for optimizer in run.optimizers:
        scaler.step(optimizer)  # skipped by the scaler when its gradients overflowed float16
        optimizer.zero_grad(set_to_none=True)
    scaler.update()
    return total


def note_nonfinite(run: Run, loss: torch.Tensor, norm: torch.Tensor) -> None:
    """Note on the device the first step whose loss or gradient norm is not finite, without
    waiting for it (`check_finite` reads the note). Under the float16 scaler, overflowing
    gradients are the scaler's business (it skips the step), so only the loss counts."""
    bad = ~torch.isfinite(loss)
    if not run.scaler.is_enabled():
        bad |= ~torch.isfinite(norm)
    step = torch.full((), float(run.state.step), dtype=torch.float64, device=loss.device)
    first = bad & (run.nonfinite[0] < 0)  # nothing noted before
    run.nonfinite.copy_(torch.where(first, torch.stack((step, loss.double(), norm.double())), run.nonfinite))


# Below this loss multiplier the float16 scaler has skipped ~40 steps in a row: every gradient
# overflows, however small the scale, which is divergence.
MIN_LOSS_SCALE = 2.0**-24


def check_finite(run: Run, saved_step: int | None) -> None:
    """Stop (Diverged) when a step so far had a non-finite loss or gradient norm (this reads the
    device's note, so on a GPU it waits for the queued steps)."""
    step, loss, norm = run.nonfinite.tolist()
    cfg = run.config.train
    if step >= 0:
        what, value = ("loss", loss) if not math.isfinite(loss) else ("gradient norm", norm)
        raise diverged(int(step), what, value, cfg, saved_step)
    if run.scaler.is_enabled() and run.scaler.get_scale() < MIN_LOSS_SCALE:
        raise diverged(run.state.step, "float16 loss scale (every gradient overflowed for many steps)",
                       run.scaler.get_scale(), cfg, saved_step)


class StopRequest:
    """Turns the first Ctrl-C (or SIGTERM: `kill`, or torchrun stopping its workers) into a flag
    that the loop checks between steps; a second one stops at once. With a learner's pieces in
    the model (train --practice) the first stops at once: her loop may never end the step.

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
        if self.requested or pieces.chosen():
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for number, previous in self.previous.items():
            signal.signal(number, previous)


class Printer:
    """Prints a line with `write` (print, or the progress bar's write, which keeps the bar below).

    When the reader of stdout goes away (`minitransformer train | head -1`), printing raises
    BrokenPipeError: the printer then falls silent and raises `closed`, which the loop treats as
    it treats Ctrl-C (it saves last/), and the run ends with one line on stderr saying so.
    """

    def __init__(self, write):
        self.write = write
        self.closed = False

    def __call__(self, message: str) -> None:
        if self.closed:
            return
        try:
            self.write(message)
        except BrokenPipeError:
            self.closed = True
            # Point stdout at nothing, so that no later print or flush fails again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def describe(run: Run) -> str:
    m = run.model.config
    # Choices that trade GPT-2's exact function or torch's own random numbers for speed are said here.
    gelu = ", exact GELU" if m.gelu == "exact" else ""
    dropout = ""
    if m.dropout > 0:
        # dropout.py: on a CPU the masks are drawn with numpy, except in a compiled model. What
        # counts is whether the model was compiled (train --practice never compiles), not the setting.
        fast = run.device.type == "cpu" and not compiled(run.trainer)
        masks = "numpy's SFC64, seeded by torch" if fast else "torch"
        dropout = f", dropout {m.dropout:g} (masks from {masks})"
    return (f"model: {run.model.num_parameters():,} parameters, {m.n_layer} layers, {m.n_embd} wide, "
            f"context {m.block_size}, {m.position} positions{gelu}{dropout}; device {run.device}, "
            f"{str(run.dtype).removeprefix('torch.')}; {len(run.dataset.train):,} train and "
            f"{len(run.dataset.val):,} val tokens")


def train(config: RunConfig, resume: bool = False, pause_after: int | None = None, quiet: bool = False,
          init_from: str | None = None, remeasure: bool = False, progress_bar: str | None = None,
          resume_hint=None, started: float | None = None) -> dict:
    """Train as `config` says; returns the step reached, the last evaluation's losses, why it
    stopped, and the model (its weights are those saved in `last/`) with its tokenizer.

    pause_after: stop after this many steps in this call (saving `last/`), to be continued later
    with resume=True; the schedule is unaffected. init_from: a checkpoint, run or Hugging Face
    GPT-2 folder whose model a new run starts from (fine-tuning). remeasure: measure the precision
    that train.dtype = "auto" picks again, instead of taking the remembered verdict. progress_bar:
    None shows the bar on a terminal only; "auto" also in Jupyter (tqdm.auto), as training/api.py asks.
    resume_hint(out_dir): how to resume, in the caller's terms (default: the command line).
    started: when the command began, on budget.now()'s clock (the command line passes its process's
    start); a time budget counts from there. Default: now.
    """
    started = budget.now() if started is None else started
    cfg = config.train
    if not resume:  # before anything is made: a budget that the imports alone have mostly spent
        budget.check_start_up(budget.now() - started, cfg.time_budget_s)
    if pause_after is not None and (isinstance(pause_after, bool) or not isinstance(pause_after, int) or pause_after < 1):
        raise UserError(f"--pause-after must be a whole number of steps, at least 1; got {pause_after!r}")
    if resume and init_from is not None:
        raise UserError("--resume continues a run and --init-from starts a new one: pass only one of them")
    out_dir = user_path(cfg.out_dir)
    ranks, device = start_distributed(cfg.device)
    how_to_resume = resume_hint(out_dir) if resume_hint is not None else resume_command(out_dir, ranks)
    if device.type == "cuda":
        # TF32 matrix products: float32 range with a 10-bit mantissa, several times faster on
        # Ampere and later, and what bf16 autocast leaves in float32 is not precision-critical.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    finished = False
    quiet = quiet or not ranks.main  # under torchrun, rank 0 alone speaks
    say = Printer((lambda message: None) if quiet else print)
    made = Made(out_dir) if ranks.main else None  # what this start makes, to take back if it is refused
    try:
        if ranks.main:
            check_not_inside_ours(out_dir)
            make_run_folder(out_dir)
            made.note_made()
            check_ours(out_dir)
        with RunLock(out_dir, say) if ranks.main else nullcontext() as lock:
            try:
                if ranks.main:
                    found = leftovers(out_dir)
                    if found:
                        say(f"note: {out_dir} holds {', '.join(path.name for path in found[:3])}"
                            f"{' and more' if len(found) > 3 else ''}, named like minitransformer's temporaries, of a "
                            "process that no longer runs (a crash?); they are left alone: delete them if they are not yours")
                progress = False if quiet else None  # None: data bars only on a terminal
                run = restore_run(config, out_dir, device, say, ranks, progress, remeasure) if resume else \
                    start_run(config, out_dir, device, say, init_from, ranks, progress, remeasure)
                run.lock = lock
                run.quiet = quiet
                run.clock = Clock.resumed(started, run.state.elapsed_s, run.state.clock, run.state.step) if resume \
                    else Clock(started)
                say(describe(run))
                # disable=None: no bar when stderr is not a terminal (a log file, a pipe); "auto" picks
                # Jupyter's widget in a notebook, the text bar elsewhere.
                bar_type, shown = (auto_tqdm, not quiet) if progress_bar == "auto" else (tqdm, False if quiet else None)
                bar = bar_type(total=100, initial=round(100 * progress_of(run)), disable=None if shown is None else not shown,
                               dynamic_ncols=True, bar_format="{percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}")
                if not quiet:
                    say.write = bar.write
                try:
                    with keep_freed_memory():  # each step reuses the last one's memory (machine/allocator.py)
                        result = loop(run, bar, resume, pause_after)
                except RuntimeError as error:
                    if not ranks.lost_peer(error):
                        raise
                    raise UserError(f"another training process stopped ({short_cause(error)}); "
                                    f"{out_dir / 'last'} is intact; resume with: {how_to_resume}")
                finally:
                    bar.close()
            except Exception:
                if made is not None and not resume:  # a refused start leaves nothing of the run
                    made.take_back(lock)
                raise

        state = run.state
        if result["stopped_by"] == "output closed":
            raise UserError(f"standard output was closed (the program reading it exited), so training stopped at "
                            f"step {state.step}; saved {out_dir / 'last'}. Resume with: {how_to_resume}")
        if result["stopped_by"] is not None:
            verb = "interrupted" if result["stopped_by"] == "interrupt" else "paused"
            say(f"{verb} at step {state.step}; saved {out_dir / 'last'}. "
                f"Resume with: {how_to_resume}")
        else:
            if cfg.sample_tokens > 0 and not quiet:
                print_sample(run.model, run.dataset, cfg.sample_tokens, device, cfg.seed, say)
            note = budget.shortfall(state.step, cfg.tuned_steps, cfg.time_budget_s)
            if note is not None and state.ended_by == "budget":  # not when max_steps ended it
                say(note)
        finished = True
        return result
    except BaseException:
        if made is not None:
            made.remove_empty_folders()
        raise
    finally:
        stop_distributed(finished)


def resume_command(out_dir: Path, ranks: Ranks) -> str:
    launcher = f"torchrun --nproc_per_node={ranks.world} -m minitransformer" if ranks.world > 1 else "minitransformer"
    return f"{launcher} train --out {out_dir} --resume"


def progress_of(run: Run) -> float:
    """The fraction of the run done, by steps or by the wall clock (with what finishing will cost)."""
    state = run.state
    return min(position(run.clock, state.step, state.elapsed_s, state.schedule.unit) / state.schedule.end, 1.0)


# Seconds between progress reports (the bar's loss and speed), each of which waits for the GPU.
REPORT_S = 1.0


def loop(run: Run, bar: tqdm, resume: bool, pause_after: int | None) -> dict:
    """The training loop itself: evaluate and save when due (budget.py), step, repeat."""
    cfg, state, clock = run.config.train, run.state, run.clock
    start_step = state.step
    saved_step = state.step if resume else None  # the step that last/ holds
    stopped_by, losses = None, None
    ended_by = "max_steps"  # unless the budget ends the loop first
    read_every_step = reads_every_step(run)
    reported = (time.perf_counter(), state.step, run.train_s)
    stepped_from = None  # the run's seconds when the last step began (rank 0's, like every reading)
    with StopRequest() as stop:
        for step in range(start_step, cfg.max_steps):
            state.elapsed_s = run.ranks.from_main(clock.elapsed())  # rank 0's clock decides, for all
            if stepped_from is not None:
                # Derived from rank 0's readings, so every rank predicts the same end and stops together.
                clock.stepped(state.elapsed_s - stepped_from)
            if clock.evaluations == 0:  # a fresh run, before anything of it is saved
                budget.check_start_up(state.elapsed_s, cfg.time_budget_s)
            if position(clock, step, state.elapsed_s, state.schedule.unit) >= state.schedule.end:
                ended_by = "budget"
                break
            if cfg.time_budget_s > 0:
                line = forecast(clock, step, state.elapsed_s, state.schedule.end)
                if line is not None:
                    run.say(line)
            stepped_from = state.elapsed_s
            if evaluation_due(clock, step, state.elapsed_s, cfg.eval_interval, cfg.time_budget_s, cfg.max_steps):
                losses = evaluate_and_save(run, saved_step)
                saved_step = step
                stepped_from = clock.last_eval_at  # the step begins when the evaluation has ended
            # A Ctrl-C seen by any rank, or rank 0's stdout closed, stops them all here, together.
            interrupted = run.ranks.any(stop.requested or run.say.closed)
            if interrupted or (pause_after is not None and step - start_step >= pause_after):
                stopped_by = ("output closed" if run.say.closed else "interrupt") if interrupted else "pause"
                break
            started = time.perf_counter()
            loss = train_step(run)
            # On a GPU this is the time to queue the step; once the queue is full the host waits
            # for the GPU, so over many steps it adds up to the GPU's time (tokens per second).
            run.train_s += time.perf_counter() - started
            state.step = step + 1
            check_folder(run)
            if read_every_step or time.perf_counter() - reported[0] >= REPORT_S:
                check_finite(run, saved_step)
                reported = report(run, bar, loss, reported)
        synchronize(run.device)
        state.elapsed_s = run.ranks.from_main(clock.elapsed())
        if stopped_by is None:
            state.ended_by = ended_by  # saved with last/: a finished run resumes only when extended
            losses = evaluate_and_save(run, saved_step)
        elif (saved_step != state.step or cfg.time_budget_s > 0) and run.ranks.main:
            # On a budget the checkpoint's seconds include this command's exit, which follows the save
            # (the run's clock is every command's wall clock), so last/ is saved again with them.
            state.elapsed_s += budget.EXIT_S if cfg.time_budget_s > 0 else 0.0
            check_finite(run, saved_step)
            save_run(run, "last")
    return {"step": state.step, "losses": losses, "stopped_by": stopped_by, "model": run.model,
            "tokenizer": run.dataset.tokenizer}


def reads_every_step(run: Run) -> bool:
    """On a CPU reading a value costs nothing; under torchrun every step already waits for the
    others. On one GPU the host reads the device only when it reports, about once a second."""
    return run.device.type != "cuda" or run.ranks.world > 1


def report(run: Run, bar: tqdm, loss: torch.Tensor, reported: tuple[float, int, float]) -> tuple[float, int, float]:
    """Show the step, loss, learning rate and speed since the last report on the progress bar;
    returns what the next report counts from."""
    state = run.state
    steps, seconds = state.step - reported[1], run.train_s - reported[2]
    speed = f", {steps * tokens_per_step(run) / seconds / 1000:.1f}k tok/s" if seconds > 0 else ""
    bar.set_postfix_str(f"step {state.step}, loss {loss.item():.3f}, lr {run.optimizers[-1].param_groups[0]['lr']:.2e}"
                        f"{speed}", refresh=False)
    bar.update(round(100 * progress_of(run)) - bar.n)
    return time.perf_counter(), state.step, run.train_s


def sample_start(dataset: Dataset, device: torch.device) -> torch.Tensor:
    """(1, 1): a newline, or the corpus's first token when the vocabulary has no newline."""
    try:
        first = dataset.tokenizer.encode("\n")[:1]
    except UserError:
        first = []
    return torch.tensor([first or [int(np.asarray(dataset.train[0]))]], device=device)  # (1, 1)


def print_sample(model: GPT, dataset: Dataset, n_tokens: int, device: torch.device, seed: int, say=print) -> None:
    """Print a short sample from the model, starting from a newline (sample_start)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    out = generate(model, sample_start(dataset, device), n_tokens, temperature=0.8, top_k=None, generator=generator)
    say("sample:\n" + dataset.tokenizer.decode(out[0].tolist()))


# Tokens generated to predict what the final sample will cost.
SAMPLE_PROBE_TOKENS = 8


def sample_seconds(run: Run) -> float:
    """Predicted seconds of the final sample: SAMPLE_PROBE_TOKENS tokens timed, scaled up (a
    generator of its own, so no random state of the run moves); 0 when none is printed (quiet)."""
    tokens = run.config.train.sample_tokens
    if tokens == 0 or run.quiet:
        return 0.0
    generator = torch.Generator(device=run.device).manual_seed(0)
    begun = budget.now()
    generate(run.model, sample_start(run.dataset, run.device), SAMPLE_PROBE_TOKENS, temperature=0.8, generator=generator)
    synchronize(run.device)
    return (budget.now() - begun) * tokens / SAMPLE_PROBE_TOKENS
