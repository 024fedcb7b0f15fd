"""Optimizers and the learning-rate schedule.

- `make_optimizers`: AdamW, or Muon (muon.py) for the blocks' matrices with AdamW for everything else.
- `set_compute_dtype`: Muon's Newton-Schulz in the run's precision.
- `load_optimizer_state`: restore a saved optimizer, then re-apply the config's hyperparameters.
- `Schedule` and `lr_at`: linear warm-up, then a cosine from the peak down to `min_lr_ratio`.

Design choices:
- Weight decay applies to every matrix, the token and position embeddings included, as nanoGPT and
  GPT-2's training do: the token embedding is also the output layer's matrix (tied), and decay
  keeps its rows from growing without bound. Biases and LayerNorm parameters (vectors) get none:
  pulling a LayerNorm's scale towards 0 only hurts.
- The cosine starts where warm-up ends (as nanoGPT's `get_lr`) and runs either on steps or on
  seconds of training (`train.time_budget_s`), so a run fills its budget on any machine.
- A resumed run keeps its schedule. When the run's end moves (a larger `max_steps` or
  `time_budget_s`), the cosine is re-anchored where the run stands: it continues from the current
  rate, with no jump, and decays to `min_lr_ratio` at the new end. A finished run stands at the
  minimum, so extending it trains on at `min_lr_ratio` x the peak (nanoGPT does the same past
  `lr_decay_iters`).
"""

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..config import TrainConfig
from ..errors import UserError
from .muon import Muon


def make_optimizers(model: nn.Module, train: TrainConfig) -> list[torch.optim.Optimizer]:
    """AdamW, with weight decay on matrices (2-D weights) only, or Muon for the blocks' matrices.

    Muon (muon.py) orthogonalises each update of a matrix; the embedding (tied to the head) stays with AdamW,
    as Muon's authors advise. Each group remembers its peak learning rate in "peak_lr". On CUDA
    and on CPUs AdamW runs fused: one pass over each tensor instead of a dozen operations. On a
    2-core AVX2 CPU, one update of nanoGPT's 10.6M-parameter model took 7.6 ms fused against 45 ms
    in PyTorch's default loop (nanoGPT's choice on a CPU); the update is the same up to rounding.
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
        fused=next(model.parameters()).device.type in ("cuda", "cpu"),
    )
    optimizers = [adamw]
    if muon_matrices:
        muon = Muon(muon_matrices, lr=train.muon_learning_rate, weight_decay=train.weight_decay)
        optimizers = [muon, adamw]
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["peak_lr"] = group["lr"]
    return optimizers


def set_compute_dtype(optimizers: list[torch.optim.Optimizer], dtype: torch.dtype) -> None:
    """Muon's Newton-Schulz products follow the run's precision: bfloat16 when the run computes in
    it (so it is native or measured faster here), else float32. float16 never: its range is too
    small for the iteration's intermediate products."""
    for optimizer in optimizers:
        if isinstance(optimizer, Muon):
            optimizer.ns_dtype = torch.bfloat16 if dtype == torch.bfloat16 else torch.float32


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Restore the optimizer's moments from state, keeping the hyperparameters it was built with.

    `Optimizer.load_state_dict` also restores the saved groups' learning rate, weight decay and
    betas, which would silently undo `--resume --set train.learning_rate=...`. The optimizer was
    built from the current config, so its groups are what the user asked for: put them back.
    """
    wanted = [{key: value for key, value in group.items() if key != "params"} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, settings in zip(optimizer.param_groups, wanted):
        group.update(settings)


def set_learning_rate(optimizers: list[torch.optim.Optimizer], factor: float) -> None:
    """Every group's learning rate becomes its peak times factor."""
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = group["peak_lr"] * factor


@dataclass
class Schedule:
    """Where the cosine runs, in the unit the run measures its progress in.

    unit: "steps", or "seconds" of training with a time budget; end: max_steps or the budget.
    decay_start: where the cosine starts (warm-up's end, or where a resumed run's end moved);
    None while warming up. decay_from: the multiplier there (1 at warm-up's end).
    """

    unit: str
    end: float
    decay_start: float | None = None
    decay_from: float = 1.0

    @classmethod
    def for_config(cls, train: TrainConfig) -> "Schedule":
        if train.time_budget_s > 0:
            return cls("seconds", train.time_budget_s)
        return cls("steps", float(train.max_steps))

    def to_dict(self) -> dict:
        return asdict(self)


def lr_at(step: int, now: float, schedule: Schedule, train: TrainConfig) -> float:
    """The learning-rate multiplier (0, 1] for this step.

    now: where the run stands in the schedule's unit (the step, or seconds of training).
    """
    if step < train.warmup_steps:
        return (step + 1) / train.warmup_steps
    start = now if schedule.decay_start is None else schedule.decay_start
    span = schedule.end - start
    progress = min(max((now - start) / span, 0.0), 1.0) if span > 0 else 1.0
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return train.min_lr_ratio + (schedule.decay_from - train.min_lr_ratio) * cosine


def resumed_schedule(saved: Schedule, step: int, saved_now: float, now: float, train: TrainConfig) -> Schedule:
    """The schedule a resumed run continues with, given the config it resumes under.

    saved_now and now: where the run stands in the saved schedule's unit and in the new one.
    An unchanged end keeps the saved schedule. A moved end re-anchors the cosine at the current
    multiplier, so the rate continues without a jump and reaches the minimum at the new end.
    """
    wanted = Schedule.for_config(train)
    if (wanted.unit, wanted.end) == (saved.unit, saved.end):
        return saved
    if saved.decay_start is None:  # still warming up: the cosine has not started yet
        return wanted
    wanted.decay_start = now
    wanted.decay_from = lr_at(step, saved_now, saved, train)
    return wanted


def check_same_optimizer(saved: str, wanted: str) -> None:
    """An optimizer's state cannot become another optimizer's: refuse a switch on resume."""
    if saved != wanted:
        raise UserError(
            f"this run was trained with train.optimizer = {saved!r}; its state cannot continue as {wanted!r}. "
            f"Resume with {saved!r}, or start a new run from its weights with --init-from"
        )
