"""Freed memory kept for reuse while training (machine/allocator.py)."""

import os
import resource
from contextlib import contextmanager

import pytest
import torch

from minitransformer.machine import allocator
from tests.conftest import train_tiny

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
    """24 blocks of 8 MiB (192 MiB, 49,152 pages): inside, a second round finds the first one's
    memory instead of faulting in fresh pages; the freed memory stays resident until leaving."""
    with allocator.keep_freed_memory() as kept:
        assert kept
        inside = faults_reallocating(24, 8 << 20)  # all 24 freed again on return
        held = resident_bytes()
    released = held - resident_bytes()
    assert inside < 5_000  # a block's worth at most
    assert released > 150 << 20


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
