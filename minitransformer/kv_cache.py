"""The key/value cache that makes generation cost one token's forward pass per new token.

Without a cache, generating token t+1 re-runs the model over all t tokens before it, although the
keys and values of those tokens do not change: with a causal mask, position i never sees anything
after i. The cache stores every layer's keys and values as they are computed; each later pass feeds
only the new tokens and attends over the stored keys and values plus their own.

A cache answers the three questions a forward pass asks about the past, so the model and
attention ask it instead of working them out: `positions` (where the new tokens stand), `update`
(store their keys and values, return everything stored) and `mask` (which stored keys each new
query may see). Two caches answer them:

- `KVCache`: one preallocated (B, H, max_len, D) tensor per layer for keys and one for values,
  made on first use, filled left to right; `length` counts the positions stored, and `update`
  returns only the filled part, (B, H, length + T, D). The plain one, used on CPUs.
- `StaticKVCache`: the same, but every tensor keeps its shape and its address for the whole
  generation, and the count of stored positions also lives on the device. `update` returns the
  whole (B, H, max_len, D) buffer and `mask` hides the positions not written yet. Nothing in a
  forward pass then depends on a number the host must know, so one forward pass can be recorded
  as a CUDA graph and replayed for every new token (machine/cuda_graphs.py).

Both record left padding (`pads`: the padding positions before each row's first token, when
prompts of different lengths share a batch in generate_batch); each row's positions count from its
first real token, and no query sees a padding key.
"""

from __future__ import annotations

import torch

from .attention import attention_mask


class KVCache:
    """Keys and values of every layer for the first `length` positions of a sequence."""

    def __init__(self, n_layer: int, max_len: int, pads: torch.Tensor | None = None):
        """pads: (B,) how many padding positions stand before each row's first token, when rows
        of different lengths are left-padded into one batch (generate_batch); None for none."""
        self.max_len = max_len
        self.pads = pads
        self.length = 0
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer
        self.pass_mask: torch.Tensor | None = None  # the mask of the pass in progress, made once for all layers

    def positions(self, T: int, device: torch.device) -> torch.Tensor:
        """Positions of the next T tokens: (T,), or (B, T) counted from each row's first real token."""
        positions = torch.arange(self.length, self.length + T, device=device)  # (T,)
        if self.pads is None:
            return positions
        return (positions - self.pads[:, None]).clamp(min=0)  # (B, T)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, H, T, D) for the next T positions; return all keys and values so far."""
        B, H, T, D = k.shape
        if self.keys[layer] is None:
            self.keys[layer] = k.new_empty(B, H, self.max_len, D)
            self.values[layer] = v.new_empty(B, H, self.max_len, D)
        end = self.length + T
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]  # (B, H, length + T, D)

    def mask(self, T: int, causal: bool, device: torch.device) -> torch.Tensor | None:
        """Which of the keys `update` returns each of T new queries may see (attention.attention_mask)."""
        if self.pass_mask is None:
            self.pass_mask = attention_mask(T, self.length, self.pads, causal, device)
        return self.pass_mask

    def advance(self, T: int) -> None:
        """Count T more positions as stored; called once per forward pass, after every layer."""
        self.length += T
        self.pass_mask = None


class StaticKVCache:
    """A KVCache whose tensors never change shape or address, for generation with CUDA graphs."""

    def __init__(self, n_layer: int, B: int, H: int, max_len: int, D: int, dtype: torch.dtype, device: torch.device):
        self.max_len = max_len
        # Zeros, not empty memory: a position not written yet is masked out of the scores, but
        # its value still meets a weight of 0 in weights @ v, and 0 * NaN would be NaN.
        self.keys = torch.zeros(n_layer, B, H, max_len, D, dtype=dtype, device=device)
        self.values = torch.zeros_like(self.keys)
        self.pads = torch.zeros(B, dtype=torch.long, device=device)  # (B,)
        self.stored = torch.zeros((), dtype=torch.long, device=device)  # positions stored, on the device
        self.length = 0  # the same count on the host, for the caller's bookkeeping
        self.pass_mask: torch.Tensor | None = None
        self.pass_slots: torch.Tensor | None = None  # see slots()

    def reset(self, pads: torch.Tensor | None = None) -> None:
        """Empty the cache for a new sequence (in place: a recorded graph keeps its addresses)."""
        self.stored.zero_()
        if pads is None:
            self.pads.zero_()
        else:
            self.pads.copy_(pads)
        self.length = 0
        self.pass_mask = self.pass_slots = None

    def slots(self, T: int, device: torch.device) -> torch.Tensor:
        """(T,) where this pass's tokens go in the buffers: a tensor, not numbers, so that a graph
        replays it at any position; made once per pass."""
        if self.pass_slots is None:
            self.pass_slots = self.stored + torch.arange(T, device=device)  # (T,)
        return self.pass_slots

    def positions(self, T: int, device: torch.device) -> torch.Tensor:
        """Positions of the next T tokens, (B, T), counted from each row's first real token."""
        return (self.slots(T, device)[None, :] - self.pads[:, None]).clamp(min=0)  # (B, T)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (B, H, T, D) at the next T positions; return the whole buffers (B, H, max_len, D)."""
        B, H, T, D = k.shape
        self.keys[layer].index_copy_(2, self.slots(T, k.device), k)
        self.values[layer].index_copy_(2, self.slots(T, k.device), v)
        return self.keys[layer], self.values[layer]  # (B, H, max_len, D)

    def mask(self, T: int, causal: bool, device: torch.device) -> torch.Tensor:
        """(B, 1, T, max_len): the keys each new query may see; positions not written yet are hidden."""
        if self.pass_mask is None:
            self.pass_mask = attention_mask(T, self.stored, self.pads, causal, device, S=self.max_len)
        return self.pass_mask

    def advance(self, T: int) -> None:
        """Count T more positions as stored, on the device (replayed by a graph) and on the host."""
        self.stored += T
        self.length += T
        self.pass_mask = self.pass_slots = None
