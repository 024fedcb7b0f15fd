"""A time budget is the whole command's wall clock (training/budget.py), tested on a clock of the
test's own, so that nothing here depends on the machine's speed or load."""

import subprocess
import sys

import pytest

from minitransformer import train
from minitransformer.training import budget, loop
from minitransformer.training.budget import Clock, evaluation_due, forecast, shortfall
from tests.conftest import TINY

QUICK = dict(sample_tokens=0, eval_batches=2)


class FakeClock:
    """A clock that moves only when the test says: `spend` adds seconds (a step's, an evaluation's)."""

    def __init__(self):
        self.time = 1000.0

    def __call__(self) -> float:
        return self.time

    def spend(self, seconds: float) -> None:
        self.time += seconds


@pytest.fixture
def out(tmp_path, tiny_data):
    import shutil

    folder = tmp_path / "nb"
    shutil.copytree(tiny_data, folder / "data")
    return folder


def fake_clock(monkeypatch, tick: float, eval_s: float = 0.0) -> FakeClock:
    """Run training on a fake clock: each training step costs tick seconds of it, each evaluation eval_s."""
    clock = FakeClock()
    monkeypatch.setattr(budget, "now", clock)
    monkeypatch.setattr(budget, "EXIT_S", 0.0)  # budgets of a second or two here: no exit to allow for
    real_evaluate, real_step = loop.evaluate, loop.train_step

    def costly_step(*args, **kwargs):
        clock.spend(tick)
        return real_step(*args, **kwargs)

    def costly_evaluate(*args, **kwargs):
        clock.spend(eval_s)
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(loop, "evaluate", costly_evaluate)
    monkeypatch.setattr(loop, "train_step", costly_step)
    return clock


def test_a_budget_evaluates_on_time_whatever_the_step_rate(out, monkeypatch):
    """eval_interval far beyond the run: a row at least every tenth of the budget, steps slow or fast."""
    for tick in (0.02, 0.05):
        fake_clock(monkeypatch, tick)
        folder = out.parent / f"run{tick}"
        _, _, metrics = train(TINY, out=folder, quiet=True, time_budget_s=1.0, max_steps=10**6, eval_interval=10**6,
                              **QUICK)
        gaps = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(metrics, metrics[1:])]
        assert len(metrics) >= int(1.0 / (0.1 + tick)) and max(gaps) <= 0.1 + tick + 1e-9  # a tenth, plus a step
        assert metrics[-1]["elapsed_s"] <= 1.0


def test_evaluations_take_at_most_a_tenth_of_the_budget(out, monkeypatch):
    """Evaluations costing 40 ms on a 1 s budget with one due every step: about 3 of them, not 100s."""
    fake_clock(monkeypatch, 0.01, eval_s=0.04)
    _, _, metrics = train(TINY, out=out, quiet=True, time_budget_s=1.0, max_steps=10**6, eval_interval=1, **QUICK)
    evaluations = len(metrics)
    # At most a tenth of the second in evaluations of 0.04 s, and the final one.
    assert 2 <= evaluations <= 0.1 * 1.0 / 0.04 + 1
    assert metrics[-1]["elapsed_s"] <= 1.0


def test_the_whole_command_fits_the_budget_and_the_schedule_ends_with_it(out, monkeypatch):
    """Start-up and the final evaluation are inside the budget: the last row (written after the final
    evaluation) lies within it, and the learning rate has reached its minimum there."""
    clock = fake_clock(monkeypatch, 0.02, eval_s=0.05)
    _, _, metrics = train(TINY, out=out, quiet=True, time_budget_s=2.0, max_steps=10**6, warmup_steps=5,
                          min_lr_ratio=0.1, learning_rate=1e-3, **QUICK)
    # The command ends within the budget, having filled it but for the margin kept for finishing.
    assert 1.95 <= clock.time - 1000.0 <= 2.0
    assert metrics[-1]["lr"] == pytest.approx(1e-4, rel=0.05)


def test_the_first_evaluation_is_due_then_every_interval_without_a_budget():
    clock = Clock(0.0)
    assert evaluation_due(clock, 7, 0.0, 5, 0.0)
    clock.evaluated(100.0, 100.0, 7)  # a costly evaluation changes nothing without a budget
    assert [step for step in range(1, 21) if evaluation_due(clock, step, 200.0, 5, 0.0)] == [5, 10, 15, 20]


def test_on_a_budget_the_evaluations_share_decides():
    clock = Clock(0.0)
    clock.evaluated(2.0, 2.0, 0)
    # A tenth of a 100 s budget has passed since, but 2 s + 2 s of evaluation is over a tenth of 12 s.
    assert not evaluation_due(clock, 3, 12.0, 10**6, 100.0)
    assert evaluation_due(clock, 3, 38.0, 10**6, 100.0)  # 4 s within a tenth of 40 s
    assert not evaluation_due(clock, 3, 5.0, 10**6, 100.0)  # not due: 3 s since the last
    # eval_interval counts from the last evaluation, not from step 0, so the two rules never
    # bring evaluations a few steps apart.
    clock.evaluated(0.1, 40.0, 427)
    assert not evaluation_due(clock, 500, 45.0, 500, 100.0)
    assert evaluation_due(clock, 927, 45.0, 500, 100.0)


def test_the_forecast_counts_the_steps_left_in_the_budget():
    clock = Clock(0.0)
    clock.evaluated(1.0, 10.0, 0)
    assert forecast(clock, 0, 10.0, 100.0) is None  # timing starts
    assert forecast(clock, 5, 10.5, 100.0) is None
    line = forecast(clock, 10, 11.0, 100.0)  # 100 ms a step, 89 s less finishing left, 90% of it training
    finishing = 1.25 * 1.0 + budget.EXIT_S
    assert "100 ms a step" in line and f"about {10 + round((89 - finishing) * 0.9 / 0.1):,} steps" in line
    assert forecast(clock, 11, 11.1, 100.0) is None  # said once


def test_a_short_run_says_so_with_what_to_do():
    assert shortfall(900, 1000, 270.0) is None
    assert shortfall(100, 1000, 0.0) is None and shortfall(100, 0, 270.0) is None
    note = shortfall(300, 1000, 270.0)
    assert "300 steps" in note and "1,000" in note and "time_budget_s=900" in note and "configs/tiny.toml" in note


def test_the_command_line_counts_from_the_process_start():
    """process_age_s reads when this process began: a child that sleeps 0.3 s first is at least that old."""
    code = "import time; time.sleep(0.3); from minitransformer.training.budget import process_age_s; print(process_age_s())"
    age = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 0.3 <= age < 600
