"""Attention, written out: the causal mask, attention as a pure function, and the multi-head module.

Design choices:
- `scaled_dot_product_attention` is a plain function with every intermediate a named local
  (`scores`, `weights`, `out`), so a debugger stopped inside it shows each step. It is the default
  path (`ModelConfig.attention = "manual"`); PyTorch's fused kernel is the second path ("sdpa"),
  chosen explicitly, and tests prove the two agree.
- Masks are boolean, True where a query may look at a key. Masked scores become -inf, so their
  softmax weight is exactly 0. A finite stand-in (-1e4, -1e9) leaks the future into every row
  whose real scores fall below it.
- Queries and keys are rotated here when the model uses rotary positions, because rotary
  encodings act on q and k rather than on the residual stream.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from typing import TYPE_CHECKING

from .config import ModelConfig
from .dropout import Dropout, dropout
from .machine.blocked_attention import causal_attention_by_blocks
from .machine.masks import fast_masks_apply
from .pieces import piece
from .positional import apply_rotary
from .taps import Tap, Taps, untapped

if TYPE_CHECKING:  # kv_cache.py builds its masks with attention_mask below
    from .kv_cache import KVCache, StaticKVCache


def causal_mask(T: int, past: int = 0, device: torch.device | None = None) -> torch.Tensor:
    """Boolean (T, past + T) mask for T queries that follow `past` cached positions.

    Query i sits at absolute position past + i and may attend to key j exactly when
    j <= past + i: a lower-triangular matrix shifted right by `past`.
    """
    return torch.ones(T, past + T, dtype=torch.bool, device=device).tril(diagonal=past)


def attention_mask(
    T: int,
    past: int | torch.Tensor = 0,
    pads: torch.Tensor | None = None,
    causal: bool = True,
    device: torch.device | None = None,
    S: int | None = None,
) -> torch.Tensor | None:
    """Which keys each of T queries (after `past` cached positions) may attend to.

    - Without padding: the causal triangle (T, past + T), or None where every query may see every
      key: one new token after the cache (generation's step), or a model that is not causal.
    - With left padding, pads (B,) counting the padding positions before each row: (B, 1, T, S),
      the causal mask less the padding keys. A padding query still sees itself, so no row of
      scores is all -inf (whose softmax would be NaN).
    For a StaticKVCache, past is a 0-d tensor on the device and S the whole buffer's length:
    keys not written yet (past + T and after) are hidden too.
    """
    if pads is None:
        return causal_mask(T, past, device) if causal and T > 1 else None
    S = past + T if S is None else S
    keys = torch.arange(S, device=device)  # (S,)
    queries = past + torch.arange(T, device=device)  # (T,) absolute positions of the queries
    # The last key each query may see: itself (causal), or the last one written (not causal).
    last = queries if causal else queries[-1:].expand(T)  # (T,)
    allowed = keys[None, :] <= last[:, None]  # (T, S)
    real = keys[None, :] >= pads[:, None]  # (B, S): True for the keys that are not padding
    itself = keys[None, :] == queries[:, None]  # (T, S)
    mask = (allowed[None] & real[:, None, :]) | itself[None]  # (B, T, S)
    return mask[:, None]  # (B, 1, T, S): the same for every head


def split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, C) -> (B, H, T, D): each head gets its own D = C // H slice of every position."""
    B, T, C = x.shape
    return x.view(B, T, n_head, C // n_head).transpose(1, 2)  # (B, T, H, D) -> (B, H, T, D)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, D) -> (B, T, C): the heads' outputs side by side again, C = H * D."""
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B, T, H * D)  # (B, T, H, D) -> (B, T, C)


def cached_attention_backends(device: torch.device):
    """The fused kernels to allow when attending over a cache (a key length that grows every step).

    On CUDA, cuDNN's attention builds a kernel plan for every new key length, which costs far more
    than the attention itself; flash, memory-efficient and plain kernels have no such set-up.
    """
    if device.type != "cuda":
        return nullcontext()
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    scale: float | None = None,
    tap: Callable[[str, torch.Tensor], torch.Tensor] = untapped,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(D), masked) v, step by step.

    q: (B, H, T, D) queries; k, v: (B, H, S, D) keys and values, S = T without a cache.
    mask: boolean, broadcastable to (B, H, T, S), True where a query may attend; None attends to all.
    scale: multiplies the scores; None means 1/sqrt(D), which keeps the scores' variance near 1
    when q and k have unit-variance entries, so the softmax does not saturate as D grows.
    tap: where a recorder may look at scores, weights and the heads' outputs, or an intervention
    replace them (taps.py); by default nobody does.
    Returns out (B, H, T, D) and weights (B, H, T, S): the softmax probabilities, before dropout.
    """
    D = q.shape[-1]
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    scores = (q @ k.transpose(-2, -1)) * scale  # (B,H,T,D) @ (B,H,D,S) -> (B,H,T,S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    scores = tap("scores", scores)
    weights = torch.softmax(scores, dim=-1)  # (B, H, T, S); each row sums to 1
    weights = tap("weights", weights)
    dropped = dropout(weights, dropout_p)  # (B, H, T, S): each weight zeroed with probability dropout_p
    out = dropped @ v  # (B,H,T,S) @ (B,H,S,D) -> (B,H,T,D)
    out = tap("heads", out)
    return out, weights


class CausalSelfAttention(nn.Module):
    """H heads of attention over the sequence, in GPT-2's layout.

    One linear layer `c_attn` makes queries, keys and values for all heads at once (C -> 3C);
    `c_proj` mixes the heads' outputs back into the residual stream (C -> C).
    """

    def __init__(self, config: ModelConfig, layer: int, taps: Taps | None = None):
        super().__init__()
        self.layer = layer  # which slot of a KVCache this module reads and writes
        self.tap = Tap(taps, f"blocks.{layer}.attn") if taps is not None else untapped  # taps.py
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = Dropout(config.dropout)
        self.dropout = config.dropout
        self.impl = config.attention
        self.causal = config.causal
        self.scale = None if config.scale_attention else 1.0

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | StaticKVCache | None = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        # Each piece is ours, or a learner's under practice.use (pieces.py).
        split, rotate = piece("split_heads", split_heads), piece("apply_rotary", apply_rotary)
        attend, merge = piece("attention", scaled_dot_product_attention), piece("merge_heads", merge_heads)
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = split(q, self.n_head)  # (B, H, T, D)
        k = split(k, self.n_head)  # (B, H, T, D)
        v = split(v, self.n_head)  # (B, H, T, D)
        if rope is not None:
            q = rotate(q, *rope)
            k = rotate(k, *rope)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)  # (B, H, S, D): every position stored, these included
            mask = cache.mask(T, self.causal, x.device)
        else:
            mask = attention_mask(T, causal=self.causal, device=x.device)
        q, k, v = self.tap("q", q), self.tap("k", k), self.tap("v", v)
        dropout_p = self.dropout if self.training else 0.0
        on_cpu = x.device.type == "cpu"
        if self.impl == "manual" or attend is not scaled_dot_product_attention \
                or on_cpu and T == 1 and (mask is not None or B > 1) \
                or on_cpu and dropout_p > 0 and not (self.causal and cache is None):
            # The written-out path: always for "manual" and for a learner's attention (the fused
            # kernel would never call it). On a CPU, also one query per row over the cache, for a
            # batch or with a padding mask: two small matrix products. PyTorch's fused CPU kernel
            # costs far more there (bf16, batch 8, 150 keys: 290 us against 83 us on a 2-core AMD
            # EPYC); for a single row without a mask it is the faster of the two, and is kept. On a
            # GPU one fused kernel is cheaper than the five of the written-out path.
            out, weights = attend(q, k, v, mask, dropout_p, self.scale, self.tap)
        elif dropout_p > 0 and fast_masks_apply(q):
            # Training with attention dropout on a CPU: PyTorch's fused CPU kernel has no dropout
            # and falls back to its own written-out path, whose masks take 6x longer to draw than
            # ours (dropout.py). nanoGPT's shape, dropout 0.2, forward and backward of one layer
            # on a 2-core AMD EPYC with AVX2: 59 ms that way, 43 ms written out, 26 ms by blocks
            # (machine/blocked_attention.py). Inside torch.compile the fused kernel's own path
            # below is what the compiler fuses.
            out = causal_attention_by_blocks(q, k, v, dropout_p, self.scale)
        elif mask is not None and mask.dim() == 2 and mask.shape[0] == mask.shape[1]:
            # A square (T, T) mask is the plain causal triangle, which the fused kernel builds
            # itself and can skip the masked blocks of.
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True, scale=self.scale)
        else:
            with cached_attention_backends(x.device):
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=self.scale)
        out = merge(out)  # (B, H, T, D) -> (B, T, C): heads side by side
        return self.tap("out", self.resid_dropout(self.c_proj(out)))  # (B, T, C)
