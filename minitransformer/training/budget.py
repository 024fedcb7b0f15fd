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
  importing PyTorch count; only for a process started to run the command, though: from Python
  (a notebook, `%run`, a program calling main()) it starts when `train` is called.
- The clock is saved with every checkpoint: a resumed run continues from the wall-clock seconds,
  the evaluations' seconds and the predicted cost of finishing saved with it, so it keeps every
  promise of a run never stopped. A run that its budget (or max_steps) ended is saved as
  finished, and resumes only when given more time (or steps).
- An evaluation is never due at the last step: the final one follows it.
- Every rank takes rank 0's reading (loop.py), so all ranks evaluate and stop together.
- The clock reads `now()`, one function, so tests can run it on a clock of their own and never
  depend on the machine's speed.
"""

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError, real_number, whole_number

# On a budget, evaluations (with their saves) take at most this share of the wall clock ...
EVAL_SHARE = 0.1
# ... and one is due whenever this share of the budget has passed since the last.
EVAL_EVERY = 0.1
# The forecast is printed once this many steps have been timed in a command, or this share of the
# budget spent on timed steps (a run of very slow steps).
FORECAST_STEPS = 10
FORECAST_SHARE = 0.05
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


def started_for_command() -> bool:
    """Whether this process was started to run the command it runs: its command line (Linux's
    /proc) ends with sys.argv's arguments after `minitransformer` (the console script, or
    `python -m minitransformer`, as torchrun starts its workers). Not in a notebook's kernel
    (`%run`), nor in a Python program that calls main()."""
    try:
        words = [word.decode(errors="replace") for word in Path("/proc/self/cmdline").read_bytes().split(b"\0")[:-1]]
    except OSError:
        return False
    arguments = sys.argv[1:]
    program = len(words) - len(arguments) - 1
    if program < 1 or words[program + 1:] != arguments:
        return False
    return Path(words[program]).name == "minitransformer" or words[program - 1:program + 1] == ["-m", "minitransformer"] \
        or words[program] == "-mminitransformer"


def command_started() -> float:
    """When the command began, on now()'s clock: the process's start for a process started to run
    it (so the seconds spent importing PyTorch count), else now."""
    return now() - process_age_s() if started_for_command() else now()


@dataclass
class Clock:
    """The wall clock of a run, and what its evaluations and its end cost.

    started: `now()` when this command began; base_s: the run's seconds before it (resumed).
    The fields in SAVED are the whole run's and travel with its checkpoint (`saved`, `resumed`),
    so a resumed run reserves its end and shares out its evaluations as if never stopped; the
    others are this command's own.
    """

    started: float
    base_s: float = 0.0
    eval_s: float = 0.0  # seconds of evaluations and saves, the whole run's
    evaluations: int = 0  # the whole run's
    last_eval_s: float = 0.0  # the latest evaluation's seconds (with its save)
    last_eval_at: float = -math.inf  # the run's seconds when it ended
    last_eval_step: int = 0
    sample_s: float = 0.0  # predicted seconds of the final sample (0 when none is printed)
    step_s: float = 0.0  # the latest training step's seconds
    timed_steps: int = 0  # steps timed in this command, for the forecast ...
    timed_s: float = 0.0  # ... and their seconds
    forecast_said: bool = False
    sample_measured: bool = False  # whether this command has timed the sample (at its first evaluation)

    SAVED = ("eval_s", "evaluations", "last_eval_s", "last_eval_at", "last_eval_step", "sample_s", "step_s")

    def saved(self) -> dict:
        """What a checkpoint keeps of the clock."""
        return {name: getattr(self, name) for name in self.SAVED}

    @classmethod
    def checked(cls, saved: object) -> dict:
        """A checkpoint's saved clock, its SAVED fields checked (ValueError or KeyError otherwise:
        restore_run calls the checkpoint damaged)."""
        values = {name: saved[name] for name in cls.SAVED}
        numbers = [value for name, value in values.items() if name != "last_eval_at"]
        if not all(real_number(value) and math.isfinite(value) and value >= 0 for value in numbers) \
                or not whole_number(values["evaluations"]):
            raise ValueError(f"the saved clock {saved!r} is not a run's")
        return values

    @classmethod
    def resumed(cls, started: float, base_s: float, saved: dict | None, step: int) -> "Clock":
        """The clock of a run resumed at `step` after base_s seconds, from its checked saved clock. A
        checkpoint without one (version 0.3 and older) counts as evaluated at its step, nothing else known."""
        if saved is None:
            return cls(started, base_s, evaluations=1, last_eval_at=base_s, last_eval_step=step)
        return cls(started, base_s, **saved)

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

    def evaluated_more(self, seconds: float) -> None:
        """Add seconds (the save after it) to the latest evaluation."""
        self.eval_s += seconds
        self.last_eval_s += seconds
        self.last_eval_at += seconds

    def stepped(self, seconds: float) -> None:
        """Note a training step that took `seconds` (its evaluation, if any, not included)."""
        self.step_s = seconds
        self.timed_steps += 1
        self.timed_s += seconds


def position(clock: Clock, step: int, elapsed: float, unit: str) -> float:
    """Where the run stands on its schedule, in the schedule's unit: the step, or on a budget the
    wall clock when this step will have ended plus what finishing will cost (so the schedule's end
    is when the last step has run and what remains still fits)."""
    return float(step) if unit == "steps" else elapsed + clock.step_s + clock.finish_s()


def evaluation_due(clock: Clock, step: int, elapsed: float, eval_interval: int, budget_s: float,
                   max_steps: int | None = None) -> bool:
    """Whether to evaluate before this step. The first is always due; none twice at one step (a
    resumed run was evaluated at its step), and none before the last step, since the final
    evaluation follows it. Without a budget: every eval_interval steps (step 0, eval_interval,
    2 x eval_interval, ...). On a budget: when eval_interval steps or EVAL_EVERY of the budget have
    passed since the last evaluation, whichever comes first, but never so often that evaluations,
    this one and the final one included, would take more than EVAL_SHARE of the wall clock."""
    if clock.evaluations == 0:
        return True
    if step == clock.last_eval_step or max_steps is not None and step + 1 >= max_steps:
        return False
    if budget_s <= 0:
        return step % eval_interval == 0
    after = elapsed + clock.last_eval_s  # the run's seconds when this evaluation would end
    if after + 2 * clock.step_s + clock.finish_s() >= budget_s:
        return False  # its step would be the last: the final evaluation comes right after
    regular = step - clock.last_eval_step >= eval_interval or elapsed - clock.last_eval_at >= EVAL_EVERY * budget_s
    return regular and clock.eval_s + 2 * clock.last_eval_s <= EVAL_SHARE * after


def forecast(clock: Clock, step: int, elapsed: float, end_s: float) -> str | None:
    """Once FORECAST_STEPS steps (or FORECAST_SHARE of the budget) have been timed in this command,
    a line with the steps this run will reach on this machine; None before that, and after (it is
    said once)."""
    if clock.forecast_said or clock.timed_steps == 0 or \
            clock.timed_steps < FORECAST_STEPS and clock.timed_s < FORECAST_SHARE * end_s:
        return None
    clock.forecast_said = True
    per_step = clock.timed_s / clock.timed_steps
    remaining = max(0.0, end_s - elapsed - clock.finish_s())
    # Evaluations still to come take their share of what remains.
    total = step + round(remaining * (1 - EVAL_SHARE) / per_step) if per_step > 0 else step
    return (f"speed: {per_step * 1000:,.0f} ms a step on this machine: about {total:,} steps in the "
            f"{end_s:,.0f} s budget")


# A fresh run whose start-up (imports, data, model, precision) has taken this share of its budget
# before the first evaluation is refused: what is left could not train it.
STARTUP_SHARE = 0.5


def check_start_up(startup_s: float, budget_s: float) -> None:
    """Refuse (UserError) a budget that start-up alone has mostly spent."""
    if budget_s > 0 and startup_s >= STARTUP_SHARE * budget_s:
        enough = max(math.ceil(4 * startup_s), 1)
        raise UserError(f"train.time_budget_s = {budget_s:g} is too short: start-up alone takes {startup_s:.1f} s "
                        f"here; give it at least {enough} s (--set train.time_budget_s={enough}), or train by "
                        "steps (--set train.time_budget_s=0)")


def shortfall(steps: int, tuned_steps: int, budget_s: float) -> str | None:
    """A line when a budgeted run got under SHORT_RUN of the steps its config was tuned for."""
    if budget_s <= 0 or tuned_steps <= 0 or steps >= SHORT_RUN * tuned_steps:
        return None
    longer = math.ceil(budget_s * tuned_steps / max(steps, 1) / 10) * 10
    return (f"note: this machine trained {steps:,} steps in {budget_s:,.0f} s, far fewer than the {tuned_steps:,} "
            f"this config was tuned for, so expect a higher loss; for a better model here give it more time "
            f"(--set train.time_budget_s={longer}) or train a smaller model (--config configs/tiny.toml)")
