"""Helpers shared by the tests: small model configs, the option lists to sweep, and waiting for
a program in another process."""

import subprocess
import time

from minitransformer import ModelConfig

# How long a test waits for another process before calling it hung. Not a speed requirement: far
# longer than anything takes on a slow, busy machine, so no test depends on the machine's speed.
HANG_S = 600

POSITIONS = ("learned", "sinusoidal", "rope")
ATTENTIONS = ("manual", "sdpa")


def small_config(**overrides) -> ModelConfig:
    """A model small enough for a test to run in milliseconds."""
    settings = dict(vocab_size=37, block_size=16, n_layer=2, n_head=4, n_embd=32)
    settings.update(overrides)
    return ModelConfig(**settings)


def wait_until(condition, process: subprocess.Popen, poll_s: float = 0.02) -> None:
    """Wait until condition() holds, while process runs; fail (with its output) if it exits first
    or hangs for HANG_S."""
    deadline = time.monotonic() + HANG_S
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"no progress in {HANG_S} s: the program hangs"
        time.sleep(poll_s)
