"""The key/value cache that makes generation cost one token's forward pass per new token.

Without a cache, generating token t+1 re-runs the model over all t tokens before it, although the
keys and values of those tokens do not change: with a causal mask, position i never sees anything
after i. The cache stores every layer's keys and values as they are computed; each later pass feeds
only the new tokens and attends over the stored keys and values plus their own.

Design choice: one preallocated (B, H, max_len, D) tensor per layer for keys and one for values,
made on first use with the dtype and device of the first keys stored, and filled left to right;
`length` counts the positions stored.
"""

import torch


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

    def advance(self, T: int) -> None:
        """Count T more positions as stored; called once per forward pass, after every layer."""
        self.length += T
