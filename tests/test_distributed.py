"""Training under torchrun: two CPU processes (gloo) follow one process with twice the batch,
write one metrics file and one set of checkpoints, resume exactly, and share checkpoints with
single-process runs."""

import json
import shutil
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from minitransformer.commands.cli import main
from tests.conftest import QUICK, ROOT, TINY
from tests.helpers import HANG_S

# Two torchrun jobs (2 processes each) at once on a 2-core machine starve each other: one worker runs them all.
pytestmark = pytest.mark.xdist_group("torchrun")

COMMON = ["--config", TINY, *QUICK, "--set", "train.max_steps=30", "--set", "train.eval_interval=10",
          "--set", "train.grad_accum=2"]


def torchrun(out, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "minitransformer", "train", "--out", str(out), *extra]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=HANG_S)
    assert result.returncode == 0, result.stderr[-6000:]
    return result


def curve(run) -> list[tuple[int, float, float]]:
    return [(row["step"], row["train_loss"], row["val_loss"]) for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def assert_same_curve(a, b):
    assert [row[0] for row in a] == [row[0] for row in b]
    for (_, train_a, val_a), (_, train_b, val_b) in zip(a, b):
        assert train_a == pytest.approx(train_b, abs=1e-4) and val_a == pytest.approx(val_b, abs=1e-4)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tiny_data):
    """The reference: one process with batch 16 (the tiny config's) and 2 micro-batches."""
    out = tmp_path_factory.mktemp("single") / "run"
    shutil.copytree(tiny_data, out / "data")
    assert main(["train", "--out", str(out), *COMMON, "--set", "train.batch_size=16"]) == 0
    return out


def test_two_processes_with_half_the_batch_follow_one_process(one_process, run_dir):
    result = torchrun(run_dir, *COMMON, "--set", "train.batch_size=8")
    assert_same_curve(curve(run_dir), curve(one_process))
    assert [row[0] for row in curve(run_dir)] == [0, 10, 20, 30]  # one metrics file, rows written once
    assert result.stdout.count("model:") == 1  # rank 0 alone prints
    weights = load_file(run_dir / "last" / "model.safetensors")
    assert not any(name.startswith(("module.", "_orig_mod.")) for name in weights)
    for name, tensor in load_file(one_process / "last" / "model.safetensors").items():
        assert (weights[name] - tensor).abs().max() < 1e-4, name
    assert not (run_dir / "run.lock").exists()


def test_resume_across_process_counts_follows_the_same_curve(one_process, run_dir, capsys):
    """One process (batch 16) pauses at step 10, two processes (batch 8 each) continue to step 20
    and pause, one process finishes: the curve of a run that never stopped."""
    assert main(["train", "--out", str(run_dir), *COMMON, "--set", "train.batch_size=16", "--pause-after", "10"]) == 0
    result = torchrun(run_dir, "--resume", "--config", TINY, *COMMON[2:], "--set", "train.batch_size=8",
                      "--pause-after", "10")
    assert "torchrun --nproc_per_node=2 -m minitransformer train" in result.stdout  # how to resume
    assert main(["train", "--out", str(run_dir), "--resume", *COMMON, "--set", "train.batch_size=16"]) == 0
    assert_same_curve(curve(run_dir), curve(one_process))
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(run_dir), "--max-new-tokens", "20"]) == 0  # one process reads it
    assert len(capsys.readouterr().out) == 1 + 20 + 1
