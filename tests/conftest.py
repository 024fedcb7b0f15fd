"""Fixtures for every test: a fixed random state, and one tokenised corpus and one trained tiny
run shared by the whole session (tests must not change them; copy them first)."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from minitransformer.commands.cli import main
from minitransformer.training.data import prepare_data

# Measured speed choices (device.remember) go to a fresh cache, not the user's ~/.cache; it is
# removed when this process ends, so test runs leave no folders behind in the temporary directory.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="minitransformer-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], ignore_errors=True)
# One thread per process, here and in the programs the tests start (they inherit the variable).
# The tests' models are tiny, so a second thread gains little; and when the machine's cores are
# busy, PyTorch's threads wait on each other: measured on 2 cores running two other trainings, the
# tiny config's 200 steps took 30 s with 2 threads against 3 s with 1.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

ROOT = Path(__file__).parent.parent
TINY = str(ROOT / "configs" / "tiny.toml")
QUICK = ["--set", "train.sample_tokens=0", "--set", "train.eval_batches=2"]


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same random state, so a failure reproduces."""
    torch.manual_seed(1234)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """Tiny Shakespeare tokenised by characters, as `train` prepares it into <run>/data."""
    folder = tmp_path_factory.mktemp("shared") / "data"
    prepare_data("tinyshakespeare", "char", 0.1, folder)
    return folder


@pytest.fixture
def run_dir(tmp_path, tiny_data) -> Path:
    """A new run folder that already holds the tokenised corpus, so training starts at once."""
    out = tmp_path / "run"
    shutil.copytree(tiny_data, out / "data")
    return out


def train_tiny(out: Path, *extra: str) -> int:
    """`minitransformer train` on configs/tiny.toml into out, quickly."""
    return main(["train", "--config", TINY, "--out", str(out), *QUICK, *extra])


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_data) -> Path:
    """The tiny config trained for 40 steps, evaluated at steps 0, 20 and 40."""
    out = tmp_path_factory.mktemp("shared") / "tiny"
    shutil.copytree(tiny_data, out / "data")
    assert train_tiny(out, "--set", "train.max_steps=40", "--set", "train.eval_interval=20") == 0
    return out


def error_line(capsys) -> str:
    """What a command printed on stderr: exactly one line starting with 'error: ', no traceback."""
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err
