"""Freed memory kept for reuse while training (machine/allocator.py)."""

import ast
import os
import resource
import subprocess
import sys
from contextlib import contextmanager

import pytest
import torch

from minitransformer.machine import allocator
from tests.conftest import ROOT, train_tiny

on_glibc = pytest.mark.skipif(allocator.glibc() is None, reason="mallopt is glibc's (Linux)")


def faults_reallocating(n: int, size: int) -> int:
    """Page faults while n blocks of size bytes are allocated and written, just after as many were freed."""
    blocks = [torch.ones(size // 4) for _ in range(n)]
    del blocks
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.ones(size // 4) for _ in range(n)]
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del blocks
    return faults


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@on_glibc
def test_freed_memory_is_reused_inside_and_given_back_on_leaving():
    """24 blocks of 8 MiB (192 MiB, 49,152 pages): inside, a round finds the last one's memory
    instead of faulting in fresh pages, once the heap has settled (the first round may fault a
    block or two, as a training run's first steps do); the freed memory stays resident until leaving."""
    with allocator.keep_freed_memory() as kept:
        assert kept
        rounds = [faults_reallocating(24, 8 << 20) for _ in range(3)]  # all 24 freed again after each
        held = resident_bytes()
    released = held - resident_bytes()
    assert max(rounds[1:]) < 500, rounds
    assert released > 150 << 20


@on_glibc
def test_blocks_above_glibcs_own_largest_heap_block_are_reused_too():
    """Blocks of 64 MiB, above the 32 MiB that glibc's own adjustment serves from the heap (an
    MLP's activations at batch 32 of nanoGPT's model are 50 MB), in a fresh process whose heap
    holds no freed memory that could serve them anyway."""
    script = ("from minitransformer.machine.allocator import keep_freed_memory\n"
              "from tests.test_allocator import faults_reallocating\n"
              "with keep_freed_memory():\n"
              "    print([faults_reallocating(3, 64 << 20) for _ in range(3)])\n")
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    rounds = ast.literal_eval(finished.stdout.strip())
    assert max(rounds[1:]) < 500, rounds  # 49,152 pages a round from the system


def test_elsewhere_than_glibc_nothing_is_changed(monkeypatch):
    monkeypatch.setattr(os, "confstr", lambda name: (_ for _ in ()).throw(ValueError(name)))
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: pytest.fail("the C library was opened"))
    with allocator.keep_freed_memory() as kept:
        assert kept is False


def test_every_training_step_runs_with_freed_memory_kept(run_dir, monkeypatch):
    from minitransformer.training import loop

    inside = []

    @contextmanager
    def recording():
        inside.append(True)
        yield True
        inside.append(False)

    real_step = loop.train_step
    steps = []

    def step(run):
        steps.append(inside[-1])
        return real_step(run)

    monkeypatch.setattr(loop, "keep_freed_memory", recording)
    monkeypatch.setattr(loop, "train_step", step)
    assert train_tiny(run_dir, "--set", "train.max_steps=5", "--set", "train.eval_interval=5") == 0
    assert steps == [True] * 5 and inside == [True, False]
