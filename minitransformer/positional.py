"""Positional encodings: how the model learns where each token stands.

Attention by itself treats its input as a set: shuffle the tokens and every output shuffles with
them. Three ways to tell the model about order live here, chosen by `ModelConfig.position`:

- "learned" (GPT-2): a trainable vector per position, added to the token embedding.
- "sinusoidal" (Vaswani et al. 2017): fixed sines and cosines of geometrically spaced frequencies,
  added to the token embedding; nothing to train.
- "rope" (Su et al. 2021): rotary embeddings; nothing is added to the embedding, instead each query
  and key is rotated by an angle proportional to its position, so that their dot product depends
  only on the distance between them. Applied inside attention (see attention.py).

Design choice: each module maps a tensor of absolute positions `(T,)` to what it contributes, so
the key/value cache only has to pass positions that start where the cache ends.
"""

import torch
from torch import nn


def sinusoidal_table(n_positions: int, C: int) -> torch.Tensor:
    """The (n_positions, C) table PE[p, 2i] = sin(p / 10000^(2i/C)), PE[p, 2i+1] = cos(same angle)."""
    position = torch.arange(n_positions, dtype=torch.float32).unsqueeze(1)  # (P, 1)
    two_i = torch.arange(0, C, 2, dtype=torch.float32)  # (ceil(C/2),)
    angle = position / 10000.0 ** (two_i / C)  # (P, 1) / (ceil(C/2),) -> (P, ceil(C/2))
    table = torch.zeros(n_positions, C)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : C // 2])  # an odd C has one more sine than cosine column
    return table


class SinusoidalPositions(nn.Module):
    """Fixed sinusoidal encodings; a buffer, not a parameter, and not saved in checkpoints."""

    def __init__(self, block_size: int, C: int):
        super().__init__()
        self.register_buffer("table", sinusoidal_table(block_size, C), persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.table[positions]  # (T, C)


class RotaryEmbedding(nn.Module):
    """Cosines and sines of the rotation angles position * theta_i, theta_i = 10000^(-2i/D)."""

    def __init__(self, block_size: int, D: int):
        super().__init__()
        theta = 10000.0 ** (-torch.arange(0, D, 2, dtype=torch.float32) / D)  # (D/2,)
        angle = torch.outer(torch.arange(block_size, dtype=torch.float32), theta)  # (block_size, D/2)
        self.register_buffer("cos", torch.cos(angle), persistent=False)
        self.register_buffer("sin", torch.sin(angle), persistent=False)

    def forward(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos[positions], self.sin[positions]  # (T, D/2) each


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x[2i], x[2i+1]) of every query or key vector by its position's angle.

    x: (B, H, T, D); cos, sin: (T, D/2), or (B, T, D/2) when each row has its own positions.
    A 2-D rotation by angle a maps (u, w) to
    (u cos a - w sin a, u sin a + w cos a). Rotating q by m*theta and k by n*theta leaves
    q . k depending on (m - n) alone, which is what makes the encoding relative.
    """
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, D/2): the same for every head
    x_even, x_odd = x[..., 0::2], x[..., 1::2]  # (B, H, T, D/2) each
    rotated_even = x_even * cos - x_odd * sin
    rotated_odd = x_even * sin + x_odd * cos
    rotated = torch.stack((rotated_even, rotated_odd), dim=-1).flatten(-2)  # (B,H,T,D/2,2) -> (B,H,T,D)
    return rotated.type_as(x)  # cos and sin are float32; keep bf16 inputs in bf16 under autocast
