"""Which function computes each replaceable piece of the GPT: ours, or a learner's.

Where the model computes one of these pieces it asks for it by name, one line each in
attention.py and model.py:

    attend = piece("attention", scaled_dot_product_attention)  # ours, or hers under practice.use

`piece` returns ours unless `practice.use(attention=my_attention)` has put a learner's function
there (practice/workspace.py).

Design choices:
- The learner's functions live in a context variable, never in patched module attributes. So
  they reach only the code that runs inside the `with practice.use(...)` block, in that thread
  (each thread starts with none); an inner block keeps the outer block's pieces; leaving a block,
  by an exception too, gives back exactly what was there before; and the checker's references,
  which compute inside `ours_only()`, never see them. Nothing else in the process changes.
- A model compiled by torch.compile computes with ours: the compiler cannot trace a context
  variable, and `train --practice` trains uncompiled (training/setup.py).
"""

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

import torch

NAMES = ("attention", "split_heads", "merge_heads", "apply_rotary", "layer_norm", "gelu", "cross_entropy")
NONE: Mapping[str, Callable] = MappingProxyType({})
chosen_pieces: ContextVar[Mapping[str, Callable]] = ContextVar("minitransformer_pieces", default=NONE)


def piece(name: str, ours: Callable) -> Callable:
    """The function that computes `name` here: the learner's under practice.use, else ours."""
    if torch.compiler.is_compiling():
        return ours
    return chosen_pieces.get().get(name, ours)


def chosen() -> dict[str, Callable]:
    """The learner's pieces in force here (empty outside practice.use)."""
    return dict(chosen_pieces.get())


def origins() -> dict[str, str]:
    """Where each learner's piece in force comes from ("practice/attention.py"), for the record."""
    return {name: getattr(fn, "origin", None) or getattr(fn, "__qualname__", type(fn).__name__)
            for name, fn in chosen_pieces.get().items()}


@contextmanager
def replaced(pieces: Mapping[str, Callable]) -> Iterator[None]:
    """The given pieces in force inside the block, on top of those already in force."""
    token = chosen_pieces.set(MappingProxyType({**chosen_pieces.get(), **pieces}))
    try:
        yield
    finally:
        chosen_pieces.reset(token)


@contextmanager
def ours_only() -> Iterator[None]:
    """Every piece is ours inside the block, whatever practice.use blocks are open around it."""
    token = chosen_pieces.set(NONE)
    try:
        yield
    finally:
        chosen_pieces.reset(token)
