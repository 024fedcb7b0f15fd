"""How a time budget is spent: `train.time_budget_s` bounds the whole `train` command.

The budget is wall-clock time, as a learner's watch counts it: start-up (importing PyTorch,
preparing the data, measuring the precision), every evaluation and save, and the final
evaluation and sample are inside it, not only the training steps. `Clock` keeps that time;
the loop (loop.py) asks it three things:
- `position`: where the run stands on its learning-rate schedule. On a budget that is the wall
  clock plus the predicted cost of finishing (the final evaluation, save and sample), so the
  cosine reaches its minimum, and training stops, just when what remains still fits.
- `evaluation_due`: evaluations are what a run spends on looking at itself, so on a budget they
  take at most EVAL_SHARE of its wall clock; within that they come every eval_interval steps,
  and at least every EVAL_EVERY of the budget, whatever the machine's speed.
- `forecast` and `shortfall`: a line after the first steps with the steps this machine will
  get, and one at the end when the run got far fewer steps than its config was tuned for.

Design choices:
- A command's clock starts when the process started (Linux's /proc), so the seconds spent
  importing PyTorch count; from Python (a notebook) it starts when `train` is called.
- A resumed run's clock continues from the wall-clock seconds saved with it.
- Every rank takes rank 0's reading (loop.py), so all ranks evaluate and stop together.
- The clock reads `now()`, one function, so tests can run it on a clock of their own and never
  depend on the machine's speed.
"""

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

# On a budget, evaluations (with their saves) take at most this share of the wall clock ...
EVAL_SHARE = 0.1
# ... and one is due whenever this share of the budget has passed since the last.
EVAL_EVERY = 0.1
# The forecast is printed once this many steps have been timed after the first evaluation.
FORECAST_STEPS = 10
# A run that gets fewer than this share of the steps its config was tuned for says so at the end.
SHORT_RUN = 0.6
# What finishing costs is predicted this much larger than measured: a busy machine can be slower
# at the end than at the evaluation it was measured on ...
FINISH_MARGIN = 1.25
# ... plus the program's exit after the sample (PyTorch's teardown: 0.3 to 0.7 s measured here).
EXIT_S = 1.0


def now() -> float:
    """Seconds on a monotonic clock (time.perf_counter); tests replace it."""
    return time.perf_counter()


def process_age_s() -> float:
    """Seconds since this process started, read from Linux's /proc; 0 where that is unknown."""
    try:
        after_name = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_ticks = int(after_name[19])  # field 22, starttime, in clock ticks after boot
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


@dataclass
class Clock:
    """The wall clock of a run, and what its evaluations and its end cost.

    started: `now()` when this command began; base_s: the run's seconds before it (resumed).
    """

    started: float
    base_s: float = 0.0
    eval_s: float = 0.0  # seconds of evaluations and saves in this command
    evaluations: int = 0
    last_eval_s: float = 0.0  # the latest evaluation's seconds (with its save)
    last_eval_at: float = -math.inf  # the run's seconds when it ended
    last_eval_step: int = 0
    sample_s: float = 0.0  # predicted seconds of the final sample
    step_s: float = 0.0  # the latest training step's seconds
    steps_timed: tuple[int, float] | None = None  # (step, seconds) where step timing began

    def elapsed(self) -> float:
        """The run's wall-clock seconds so far."""
        return self.base_s + now() - self.started

    def finish_s(self) -> float:
        """Predicted seconds of what follows the last step: a final evaluation, save and sample, the exit."""
        return FINISH_MARGIN * (self.last_eval_s + self.sample_s) + EXIT_S

    def evaluated(self, seconds: float, elapsed: float, step: int) -> None:
        """Note an evaluation (with its save) at `step` that took `seconds` and ended at `elapsed`."""
        self.last_eval_step = step
        self.eval_s += seconds
        self.evaluations += 1
        self.last_eval_s = seconds
        self.last_eval_at = elapsed


def position(clock: Clock, step: int, elapsed: float, unit: str) -> float:
    """Where the run stands on its schedule, in the schedule's unit: the step, or on a budget the
    wall clock when this step will have ended plus what finishing will cost (so the schedule's end
    is when the last step has run and what remains still fits)."""
    return float(step) if unit == "steps" else elapsed + clock.step_s + clock.finish_s()


def evaluation_due(clock: Clock, step: int, elapsed: float, eval_interval: int, budget_s: float) -> bool:
    """Whether to evaluate before this step. Without a budget: every eval_interval steps (step 0,
    eval_interval, 2 x eval_interval, ...). On a budget: when eval_interval steps or EVAL_EVERY of the
    budget have passed since the last evaluation, whichever comes first, but never so often that
    evaluations would take more than EVAL_SHARE of the wall clock. The first is always due."""
    if clock.evaluations == 0:
        return True
    if budget_s <= 0:
        return step % eval_interval == 0
    regular = step - clock.last_eval_step >= eval_interval or elapsed - clock.last_eval_at >= EVAL_EVERY * budget_s
    return regular and clock.eval_s + clock.last_eval_s <= EVAL_SHARE * (elapsed + clock.last_eval_s)


def forecast(clock: Clock, step: int, elapsed: float, end_s: float) -> str | None:
    """Once FORECAST_STEPS steps have been timed, a line with the steps this run will reach on this
    machine; None before that, and after (it is said once)."""
    if clock.steps_timed is None:
        clock.steps_timed = (step, elapsed)
        return None
    first_step, first_elapsed = clock.steps_timed
    if step - first_step != FORECAST_STEPS:
        return None
    per_step = (elapsed - first_elapsed) / FORECAST_STEPS
    remaining = max(0.0, end_s - elapsed - clock.finish_s())
    # Evaluations still to come take their share of what remains.
    total = step + round(remaining * (1 - EVAL_SHARE) / per_step)
    return (f"speed: {per_step * 1000:,.0f} ms a step on this machine: about {total:,} steps in the "
            f"{end_s:,.0f} s budget")


def shortfall(steps: int, tuned_steps: int, budget_s: float) -> str | None:
    """A line when a budgeted run got under SHORT_RUN of the steps its config was tuned for."""
    if budget_s <= 0 or tuned_steps <= 0 or steps >= SHORT_RUN * tuned_steps:
        return None
    longer = math.ceil(budget_s * tuned_steps / max(steps, 1) / 10) * 10
    return (f"note: this machine trained {steps:,} steps in {budget_s:,.0f} s, far fewer than the {tuned_steps:,} "
            f"this config was tuned for, so expect a higher loss; for a better model here give it more time "
            f"(--set train.time_budget_s={longer}) or train a smaller model (--config configs/tiny.toml)")
