"""A learner's code runs apart from ours and from her session.

Her file and her function are untrusted input: they may replace torch.softmax, set the default
dtype, change the folder, reseed the random generator, call sys.exit() or raise
KeyboardInterrupt. None of that may change our references, our verdict, or what her session
looks like after a check.

- `Session` is everything of that kind in the process: the public functions of torch's and our
  modules and classes, torch's global settings (default dtype and device, grad mode,
  deterministic algorithms, anomaly mode, threads, matmul precision), the random generators
  (torch, random, numpy), print options, the working folder, sys.stdout and sys.stderr, and the
  Ctrl-C handler. `capture()` reads it, `restore()` puts it back, `changes()` names what differs.
- `original()` is the functions as they were when the practice package was imported, before any
  learner's file ran (the command line imports it first; practice/__init__.py takes the
  snapshot). A check computes ours, and runs hers, with those and with torch's defaults (float32
  on the CPU, gradients on), then gives her session back exactly as it was.
- `run_hers` calls her code. Whatever it raises, SystemExit and KeyboardInterrupt included,
  comes back as `Raised`, never through our code, except a real Ctrl-C (a SIGINT that arrived
  meanwhile), which stops the check: one Ctrl-C stops a function stuck in a loop.
"""

import math
import os
import random
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F

from .. import attention, kv_cache, model


def watched_owners() -> list:
    """The modules and classes whose functions our references and verdicts call: torch's, and
    every module of ours loaded so far."""
    ours = [module for name, module in list(sys.modules.items()) if name.split(".")[0] == "minitransformer" and module]
    return [torch, F, torch.linalg, torch.special, torch.fft, torch.nn.init, math, torch.Tensor, torch.nn.Module,
            torch.nn.Linear, torch.nn.LayerNorm, torch.nn.Embedding, torch.nn.Dropout, *ours,
            model.GPT, model.Block, model.MLP, model.LayerNorm, attention.CausalSelfAttention, kv_cache.KVCache]


def watched(name: str) -> bool:
    """Public names and dunder methods (torch.Tensor.__matmul__); private state changes by itself."""
    return not name.startswith("_") or name.startswith("__") and name.endswith("__")


def functions_of(owner) -> dict[str, object]:
    return {name: value for name, value in vars(owner).items() if watched(name)}


def owner_name(owner) -> str:
    return getattr(owner, "__name__", repr(owner)).replace("torch.nn.functional", "F") \
        if not isinstance(owner, type) else f"{owner.__module__.replace('torch._tensor', 'torch')}.{owner.__qualname__}"


PRINT_OPTIONS = ("precision", "threshold", "edgeitems", "linewidth", "sci_mode")


@dataclass
class Session:
    """What a learner's code can change in the process (see the module's docstring)."""

    functions: dict[object, dict]  # owner (a module or class) -> its watched attributes
    default_dtype: torch.dtype
    default_device: torch.device
    grad_enabled: bool
    deterministic: tuple[bool, bool]  # (on, warn only)
    anomaly: bool
    threads: int
    matmul_precision: str
    rng: tuple  # torch's CPU state, random's, numpy's
    print_options: tuple
    numpy_print_options: dict
    cwd: str | None
    streams: tuple
    sigint: object = field(default=None)


def capture() -> Session:
    try:
        cwd = os.getcwd()
    except OSError:  # the folder was removed under us
        cwd = None
    sigint = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    return Session(
        functions={owner: functions_of(owner) for owner in watched_owners()},
        default_dtype=torch.get_default_dtype(), default_device=torch.get_default_device(),
        grad_enabled=torch.is_grad_enabled(),
        deterministic=(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()),
        anomaly=torch.is_anomaly_enabled(), threads=torch.get_num_threads(),
        matmul_precision=torch.get_float32_matmul_precision(),
        rng=(torch.get_rng_state(), random.getstate(), np.random.get_state()),
        print_options=tuple(getattr(torch._tensor_str.PRINT_OPTS, name) for name in PRINT_OPTIONS),
        numpy_print_options=np.get_printoptions(), cwd=cwd, streams=(sys.stdout, sys.stderr), sigint=sigint)


@cache
def original() -> Session:
    """The session when first asked: practice/__init__.py asks, before any learner's file runs."""
    return capture()


def checking_state(session: Session) -> Session:
    """The state a check runs in: her session's, with torch's own functions and default settings."""
    return replace(session, functions={**session.functions, **original().functions}, default_dtype=torch.float32,
                   default_device=torch.device("cpu"), grad_enabled=True, deterministic=(False, False), anomaly=False,
                   matmul_precision="highest")


def restore(session: Session) -> None:
    """Put everything back as it was in session (only what differs is touched)."""
    for owner, attributes in session.functions.items():
        now = vars(owner)
        for name, value in attributes.items():
            if now.get(name, value) is not value or name not in now:
                setattr(owner, name, value)
    if torch.get_default_dtype() != session.default_dtype:
        torch.set_default_dtype(session.default_dtype)
    if torch.get_default_device() != session.default_device:
        torch.set_default_device(None if session.default_device.type == "cpu" else session.default_device)
    torch.set_grad_enabled(session.grad_enabled)
    if (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) \
            != session.deterministic:
        torch.use_deterministic_algorithms(session.deterministic[0], warn_only=session.deterministic[1])
    if torch.is_anomaly_enabled() != session.anomaly:
        torch.set_anomaly_enabled(session.anomaly)
    if torch.get_num_threads() != session.threads:
        torch.set_num_threads(session.threads)
    if torch.get_float32_matmul_precision() != session.matmul_precision:
        torch.set_float32_matmul_precision(session.matmul_precision)
    torch.set_rng_state(session.rng[0])
    random.setstate(session.rng[1])
    np.random.set_state(session.rng[2])
    if tuple(getattr(torch._tensor_str.PRINT_OPTS, name) for name in PRINT_OPTIONS) != session.print_options:
        torch.set_printoptions(**dict(zip(PRINT_OPTIONS, session.print_options)))
    if np.get_printoptions() != session.numpy_print_options:
        np.set_printoptions(**session.numpy_print_options)
    if session.cwd is not None and current_folder() != session.cwd:
        try:
            os.chdir(session.cwd)
        except OSError:
            pass
    sys.stdout, sys.stderr = session.streams
    if session.sigint is not None and signal.getsignal(signal.SIGINT) is not session.sigint:
        signal.signal(signal.SIGINT, session.sigint)


def current_folder() -> str | None:
    try:
        return os.getcwd()
    except OSError:
        return None


def replaced_functions(before: Session) -> list[str]:
    """The watched functions that are no longer what they were in before ("torch.softmax", ...)."""
    found = []
    for owner, attributes in before.functions.items():
        now = vars(owner)
        found += [f"{owner_name(owner)}.{name}" for name, value in attributes.items() if now.get(name) is not value]
    return found


def changes(before: Session) -> tuple[list[str], list[str]]:
    """What differs now from before: (changes that change results, changes that do not)."""
    serious = [f"replaced {name}" for name in replaced_functions(before)]
    if torch.get_default_dtype() != before.default_dtype:
        serious.append(f"set torch's default dtype to {torch.get_default_dtype()}")
    if torch.get_default_device() != before.default_device:
        serious.append(f"set torch's default device to {torch.get_default_device()}")
    if torch.is_grad_enabled() != before.grad_enabled:
        serious.append("turned gradients " + ("on" if torch.is_grad_enabled() else "off") + " for the whole session")
    if torch.are_deterministic_algorithms_enabled() != before.deterministic[0] or torch.is_anomaly_enabled() != before.anomaly:
        serious.append("changed torch's deterministic or anomaly mode")
    if torch.get_float32_matmul_precision() != before.matmul_precision:
        serious.append(f"set the float32 matmul precision to {torch.get_float32_matmul_precision()!r}")
    harmless = []
    if not torch.equal(torch.get_rng_state(), before.rng[0]) or random.getstate() != before.rng[1] \
            or not same_numpy_state(np.random.get_state(), before.rng[2]):
        harmless.append("used or reseeded the global random generator")
    if tuple(getattr(torch._tensor_str.PRINT_OPTS, name) for name in PRINT_OPTIONS) != before.print_options \
            or np.get_printoptions() != before.numpy_print_options:
        harmless.append("changed the print options")
    if current_folder() != before.cwd:
        harmless.append(f"changed the working folder to {current_folder()}")
    if torch.get_num_threads() != before.threads:
        harmless.append(f"set torch's threads to {torch.get_num_threads()}")
    if (sys.stdout, sys.stderr) != before.streams:
        harmless.append("replaced sys.stdout or sys.stderr")
    if before.sigint is not None and signal.getsignal(signal.SIGINT) is not before.sigint:
        harmless.append("replaced the Ctrl-C handler")
    return serious, harmless


def same_numpy_state(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and tuple(a[2:]) == tuple(b[2:])


@dataclass(frozen=True)
class Raised:
    """Her code raised this (any BaseException but a real Ctrl-C)."""

    error: BaseException


@dataclass
class CtrlC:
    """Whether a SIGINT arrived while her code ran (main thread only; elsewhere none is delivered)."""

    arrived: bool = False


@contextmanager
def watching_ctrl_c() -> Iterator[CtrlC]:
    """Inside: a Ctrl-C is noted, then raises KeyboardInterrupt as usual."""
    seen = CtrlC()
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return

    def noted(signum, frame):
        seen.arrived = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, noted)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class Outcome:
    """What one call of her code gave: its value or what it raised, and what it changed."""

    value: object = None
    raised: Raised | None = None
    serious: list[str] = field(default_factory=list)  # changes to the session that change results
    harmless: list[str] = field(default_factory=list)


def run_hers(fn: Callable, *args) -> Outcome:
    """Call her code; everything it changed in the session is named and put back."""
    before = capture()
    outcome = Outcome()
    try:
        with watching_ctrl_c() as ctrl_c:
            outcome.value = fn(*args)
    except BaseException as error:  # SystemExit and her own KeyboardInterrupt too: they are her code's
        if isinstance(error, KeyboardInterrupt) and ctrl_c.arrived:
            restore(before)
            raise
        outcome.raised = Raised(error)
    outcome.serious, outcome.harmless = changes(before)
    restore(before)
    return outcome


@contextmanager
def checking() -> Iterator[Session]:
    """Inside: torch's own functions and defaults; afterwards her session exactly as it was.
    Yields her session as it was (to name what she had replaced before the check)."""
    session = capture()
    restore(checking_state(session))
    try:
        yield session
    finally:
        restore(session)
