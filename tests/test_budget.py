"""A time budget is the whole command's wall clock (training/budget.py), tested on a clock of the
test's own, so that nothing here depends on the machine's speed or load."""

import subprocess
import sys

import pytest

from minitransformer import train
from minitransformer.commands.cli import main
from minitransformer.errors import UserError
from minitransformer.training import budget, loop
from minitransformer.training.budget import Clock, evaluation_due, forecast, shortfall
from tests.conftest import ROOT, TINY
from tests.helpers import HANG_S
from tests.fake_clock import FakeClock, install

QUICK = dict(sample_tokens=0, eval_batches=2)


@pytest.fixture
def out(tmp_path, tiny_data):
    import shutil

    folder = tmp_path / "nb"
    shutil.copytree(tiny_data, folder / "data")
    return folder


def fake_clock(monkeypatch, tick: float, eval_s: float = 0.0, token_s: float = 0.0) -> FakeClock:
    """Run training on a fake clock: each training step costs tick seconds of it, each evaluation
    eval_s, each generated token token_s."""
    return install(monkeypatch.setattr, tick, eval_s, token_s)


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
    # A tenth of a 100 s budget has passed since, but 2 s + 2 s of evaluation and 2 s for the final
    # one are over a tenth of 14 s.
    assert not evaluation_due(clock, 3, 12.0, 10**6, 100.0)
    assert not evaluation_due(clock, 3, 38.0, 10**6, 100.0)  # 6 s over a tenth of 40 s
    assert evaluation_due(clock, 3, 58.0, 10**6, 100.0)  # 6 s within a tenth of 60 s
    assert not evaluation_due(clock, 3, 5.0, 10**6, 100.0)  # not due: 3 s since the last
    # eval_interval counts from the last evaluation, not from step 0, so the two rules never
    # bring evaluations a few steps apart.
    clock.evaluated(0.1, 60.0, 427)
    assert not evaluation_due(clock, 500, 65.0, 500, 100.0)
    assert evaluation_due(clock, 927, 65.0, 500, 100.0)


def test_the_forecast_counts_the_steps_left_in_the_budget():
    clock = Clock(0.0)
    clock.evaluated(1.0, 10.0, 0)
    assert forecast(clock, 0, 10.0, 100.0) is None  # nothing timed yet
    for _ in range(9):
        clock.stepped(0.1)
    assert forecast(clock, 9, 10.9, 100.0) is None
    clock.stepped(0.1)
    line = forecast(clock, 10, 11.0, 100.0)  # 100 ms a step, 89 s less finishing left, 90% of it training
    finishing = 1.25 * 1.0 + budget.EXIT_S
    assert "100 ms a step" in line and f"about {10 + round((89 - finishing) * 0.9 / 0.1):,} steps" in line
    clock.stepped(0.1)
    assert forecast(clock, 11, 11.1, 100.0) is None  # said once


def test_slow_steps_bring_the_forecast_before_ten_of_them():
    """Steps of 3 s on a 100 s budget: the forecast comes once 5 s of steps are timed, not after 30 s."""
    clock = Clock(0.0)
    clock.evaluated(1.0, 1.0, 0)
    clock.stepped(3.0)
    assert forecast(clock, 1, 4.0, 100.0) is None
    clock.stepped(3.0)
    assert "3,000 ms a step" in forecast(clock, 2, 7.0, 100.0)


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


# The fake-clock suite: the budget on every path. Steps cost 20 ms, evaluations 50 ms, the final
# sample 300 tokens of 1 ms: the whole command, sample included, must fit the budget.
TICK, EVAL_S, TOKEN_S = 0.02, 0.05, 0.001
SAMPLED = dict(sample_tokens=300, eval_batches=2, max_steps=10**6)


def rows_of(folder) -> list[dict]:
    from minitransformer.training.run_folder import read_metrics_rows

    return read_metrics_rows(folder / "metrics.jsonl", say=lambda line: None)


def check_promises(clock: FakeClock, rows: list[dict], budget_s: float) -> None:
    """Every command together within the budget, evaluations (the final one included) within a
    tenth of it, each step evaluated once, and no evaluation in the step before the final one."""
    assert budget_s - 0.15 <= clock.used() <= budget_s  # filled, but for the margin kept for finishing
    assert len(rows) * EVAL_S <= budget.EVAL_SHARE * budget_s + 1e-9
    steps = [row["step"] for row in rows]
    assert steps == sorted(set(steps)) and steps[-1] - steps[-2] >= 2


def test_a_fresh_run_fits_its_sample_and_final_evaluation_in_the_budget(out, monkeypatch, capsys):
    clock = fake_clock(monkeypatch, TICK, EVAL_S, TOKEN_S)
    _, _, rows = train(TINY, out=out, time_budget_s=3.0, **SAMPLED)
    assert "sample:" in capsys.readouterr().out
    check_promises(clock, rows, 3.0)


@pytest.mark.parametrize("pauses", [1, 3])
def test_a_run_paused_and_resumed_keeps_every_promise(out, monkeypatch, capsys, pauses):
    """Paused after 15 steps and resumed, once or three times: the same promises as a run never
    stopped, and nearly the same steps (nothing reserved, nothing lost, in each command)."""
    clock = fake_clock(monkeypatch, TICK, EVAL_S, TOKEN_S)
    whole = train(TINY, out=out.parent / "whole", time_budget_s=3.0, **SAMPLED).metrics
    clock.time = FakeClock.START
    train(TINY, out=out, time_budget_s=3.0, pause_after=15, **SAMPLED)
    for resumed in range(pauses):
        _, _, rows = train(out=out, resume=True, pause_after=15 if resumed < pauses - 1 else None)
    printed = capsys.readouterr().out
    assert printed.count("sample:") == 2  # the whole run's and the resumed run's, at their ends
    check_promises(clock, rows, 3.0)
    assert abs(rows[-1]["step"] - whole[-1]["step"]) <= 2


def test_a_finished_run_refuses_resume_and_a_longer_budget_reopens_it(out, monkeypatch):
    clock = fake_clock(monkeypatch, TICK, EVAL_S, TOKEN_S)
    _, _, rows = train(TINY, out=out, time_budget_s=2.0, quiet=True, **SAMPLED)
    steps, first = rows[-1]["step"], clock.used()
    with pytest.raises(UserError, match="has finished.*time_budget_s=4"):
        train(out=out, resume=True)
    with pytest.raises(UserError, match="has finished"):
        train(out=out, resume=True, max_steps=10**7)  # more steps do not reopen what the clock ended
    clock.time = FakeClock.START + first  # the refusals took no time of the run
    _, _, rows = train(out=out, resume=True, time_budget_s=4.0, quiet=True)
    assert rows[-1]["step"] >= 1.7 * steps and clock.used() <= 4.0
    steps_run = tmp_steps = out.parent / "steps"
    train(TINY, out=steps_run, time_budget_s=0, max_steps=6, eval_interval=3, quiet=True, **QUICK)
    with pytest.raises(UserError, match="has finished.*max_steps=12"):
        train(out=tmp_steps, resume=True)
    assert [row["step"] for row in train(out=steps_run, resume=True, max_steps=9, quiet=True).metrics] == [0, 3, 6, 9]


def test_quiet_reserves_no_sample(out, monkeypatch):
    """A quiet run prints no sample, so it trains on into the time a sample would have taken."""
    clock = fake_clock(monkeypatch, TICK, EVAL_S, TOKEN_S)
    train(TINY, out=out, time_budget_s=3.0, quiet=True, **SAMPLED)
    assert clock.used() >= 3.0 - 0.15 and clock.used() <= 3.0  # 0.3 s of sample would leave more
    assert clock.used() > 3.0 - 1.25 * 300 * TOKEN_S


def test_an_evaluation_due_at_the_last_step_gives_way_to_the_final_one(out, monkeypatch):
    """One due every step: none in the step before the final evaluation, by budget or by max_steps."""
    fake_clock(monkeypatch, TICK)
    rows = train(TINY, out=out, time_budget_s=1.0, eval_interval=1, quiet=True, **SAMPLED).metrics
    assert rows[-1]["step"] - rows[-2]["step"] == 2
    steps = [row["step"] for row in train(TINY, out=out.parent / "s", time_budget_s=0, max_steps=10, eval_interval=9,
                                          quiet=True, **QUICK).metrics]
    assert steps == [0, 10]


def test_the_short_run_note_comes_only_when_the_budget_ended_the_run(out, monkeypatch, capsys):
    fake_clock(monkeypatch, TICK)
    train(TINY, out=out, time_budget_s=1.0, tuned_steps=10**5, **QUICK, max_steps=10**6)
    assert "far fewer than" in capsys.readouterr().out
    train(TINY, out=out.parent / "max", time_budget_s=100.0, tuned_steps=10**5, **QUICK, max_steps=20)
    assert "far fewer than" not in capsys.readouterr().out  # max_steps ended it, not this machine


@pytest.mark.parametrize("eval_interval", [10, 11, 12, 10**6])
def test_the_forecast_is_said_once_whatever_the_evaluations(out, monkeypatch, capsys, eval_interval):
    fake_clock(monkeypatch, TICK, EVAL_S)
    train(TINY, out=out.parent / str(eval_interval), time_budget_s=2.0, eval_interval=eval_interval, **QUICK,
          max_steps=10**6)
    assert capsys.readouterr().out.count("ms a step on this machine") == 1


def test_from_python_the_clock_starts_at_the_call(out, monkeypatch):
    """main() called in a process that has lived 100 s (a notebook) counts from the call."""
    fake_clock(monkeypatch, TICK)
    monkeypatch.setattr(budget, "process_age_s", lambda: 100.0)
    assert not budget.started_for_command()
    assert main(["train", "--config", TINY, "--out", str(out), "--set", "train.time_budget_s=1",
                 "--set", "train.max_steps=1000000", "--set", "train.sample_tokens=0"]) == 0
    assert rows_of(out)[-1]["step"] > 20


def test_the_console_command_counts_its_imports_and_refuses_a_budget_they_spend(tmp_path):
    """`python -m minitransformer` starts its clock at the process's start: importing PyTorch alone
    spends a 0.05 s budget, refused in one line before anything is made."""
    result = subprocess.run([sys.executable, "-m", "minitransformer", "train", "--config", TINY, "--out",
                             str(tmp_path / "run"), "--set", "train.time_budget_s=0.05"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and "too short: start-up alone takes" in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("setting, message", [("time_budget_s=1e308", "too long"), ("time_budget_s=-1", "zero or more"),
                                              ("seed=-1", "seed"), ("seed=18446744073709551616", "seed")])
def test_budgets_and_seeds_out_of_range_are_one_line(tmp_path, capsys, setting, message):
    assert main(["train", "--config", TINY, "--out", str(tmp_path / "run"), "--set", f"train.{setting}"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "run").exists()


def test_the_largest_seed_trains(out, monkeypatch):
    fake_clock(monkeypatch, TICK)
    rows = train(TINY, out=out, seed=2**64 - 1, time_budget_s=0, max_steps=2, quiet=True, **QUICK).metrics
    assert [row["step"] for row in rows] == [0, 2]


def test_a_budget_spent_by_start_up_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    """From Python the imports are not counted, but a start-up (data, model) that spends half the
    budget before the first step is refused before anything of the run is written."""
    clock = fake_clock(monkeypatch, TICK)
    real_start = loop.start_run

    def slow_start(*args, **kwargs):
        clock.spend(0.6)
        return real_start(*args, **kwargs)

    monkeypatch.setattr(loop, "start_run", slow_start)
    with pytest.raises(UserError, match="too short: start-up alone takes 0.6 s"):
        train(TINY, out=tmp_path / "run", time_budget_s=1.0, quiet=True)
    assert not (tmp_path / "run").exists()


@pytest.mark.xdist_group("torchrun")  # never beside another torchrun job (test_distributed.py)
def test_two_ranks_on_clocks_of_their_own_stop_together_within_the_budget(tmp_path):
    """torchrun, 2 processes, rank 1's steps 1.5 x rank 0's: rank 0's clock decides for both,
    which finish (no rank left waiting) with the sample inside the budget, then resume as finished."""
    import os

    env = {**os.environ, "FAKE_TICK": str(TICK), "FAKE_EVAL_S": str(EVAL_S), "FAKE_TOKEN_S": str(TOKEN_S)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "tests.fake_clock", "train", "--config", TINY, "--out", str(tmp_path / "run"),
               "--set", "train.time_budget_s=2", "--set", "train.max_steps=1000000", "--set", "train.eval_batches=2",
               "--set", "train.sample_tokens=300"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=HANG_S)
    assert result.returncode == 0, result.stderr[-4000:]
    used = float(result.stderr.split("fake clock, rank 0: ")[1].split()[0])
    assert 2.0 - 0.15 <= used <= 2.0 and "sample:" in result.stdout
    rows = rows_of(tmp_path / "run")
    assert len(rows) * EVAL_S <= 0.2 + 1e-9 and rows[-1]["step"] - rows[-2]["step"] >= 2


def test_the_exits_of_paused_commands_count_against_the_budget(out, monkeypatch):
    """Each command's exit comes after its last save; a paused run's checkpoint counts it, so three
    commands, each 0.2 s of exit, still end within the budget together."""
    clock = fake_clock(monkeypatch, TICK, EVAL_S)
    monkeypatch.setattr(budget, "EXIT_S", 0.2)
    train(TINY, out=out, time_budget_s=3.0, pause_after=15, quiet=True, **SAMPLED)
    clock.spend(0.2)  # the process's exit
    train(out=out, resume=True, pause_after=15)
    clock.spend(0.2)
    train(out=out, resume=True)
    clock.spend(0.2)
    assert clock.used() <= 3.0
