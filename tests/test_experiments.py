"""The "break it" experiments of docs/experiments.md, where they are cheap: on the tiny config, run
on steps, so the outcome is the same on a slow laptop and a fast one. The page's own figures come
from scripts/run_experiments.py, which runs the page's commands."""

import json
import shlex
import shutil

from minitransformer.config import load_config
from tests.conftest import ROOT, train_tiny

STEPS = ["--set", "train.max_steps=300", "--set", "train.eval_interval=100", "--set", "train.optimizer=muon"]


def last_row(out) -> dict:
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])


def trained(run_dir, name: str, *changes: str) -> dict:
    out = run_dir.parent / name
    shutil.copytree(run_dir / "data", out / "data")
    assert train_tiny(out, *STEPS, *[arg for change in changes for arg in ("--set", change)]) == 0
    return last_row(out)


def test_without_the_causal_mask_the_loss_drops_below_the_baselines(run_dir):
    """The model reads the next token instead of predicting it: on the tiny model the cheat shows
    within 300 steps (the page's 300 steps of the default model make it collapse)."""
    baseline = trained(run_dir, "baseline")
    no_mask = trained(run_dir, "no_mask", "model.causal=false")
    assert no_mask["train_loss"] < baseline["train_loss"] - 0.15
    assert no_mask["val_loss"] < baseline["val_loss"] - 0.15


def test_a_learning_rate_far_too_high_sends_the_loss_above_where_it_started(run_dir):
    out = run_dir.parent / "high_lr"
    shutil.copytree(run_dir / "data", out / "data")
    code = train_tiny(out, "--set", "train.max_steps=100", "--set", "train.eval_interval=10",
                      "--set", "train.learning_rate=10.0", "--set", "train.grad_clip=0")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # It either diverged (exit 2, one line) or climbed far above the start (4.17, a uniform guess)
    # on its way: the peak's height and step depend on the CPU's kernels, the climb does not.
    assert code == 2 or max(row["train_loss"] for row in rows) > 3 * rows[0]["train_loss"]


def test_every_experiment_command_on_the_page_is_a_valid_config():
    """Each command of docs/experiments.md parses into a config (no typo in a key or a value), and
    runs on steps in float32, so its figures hold on any machine."""
    commands = [shlex.split(line) for line in (ROOT / "docs" / "experiments.md").read_text().splitlines()
                if line.startswith("minitransformer train ")]
    assert len(commands) >= 9
    for args in commands:
        overrides = tuple(args[i + 1] for i, arg in enumerate(args) if arg == "--set")
        config = load_config(str(ROOT / args[args.index("--config") + 1]), overrides)
        assert config.train.time_budget_s == 0 and config.train.dtype == "float32"
