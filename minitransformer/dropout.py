"""Dropout, written out: zero each element with probability p, scale the survivors by 1 / (1 - p).

During training every element of x is kept with probability 1 - p and otherwise set to 0, each
independently; the kept ones are divided by 1 - p, so every element keeps its expected value and
the next layer sees inputs of the same size in training and in evaluation. At evaluation time
dropout does nothing. The model drops out in three places: the embeddings, the attention weights
(attention.py) and what each attention and MLP writes into the residual stream.

Design choice: on a CPU the keep mask comes from machine/masks.py (numpy's fast generator,
seeded from torch's, about 6x faster to draw than torch's own); on a GPU, and inside
torch.compile, `torch.nn.functional.dropout` computes the same thing. Both are the same
distribution; the random numbers differ.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .machine.masks import fast_masks_apply, keep_mask


def scaled_keep_mask(shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype) -> torch.Tensor:
    """A CPU tensor of `shape` and dtype: 1 / (1 - p) for each element kept (probability 1 - p,
    independently), 0 for each one dropped. Dropout multiplies x by it."""
    keep = keep_mask(shape, p)  # bool: True with probability 1 - p
    return keep.to(dtype).mul_(1.0 / (1.0 - p))


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """x with each element zeroed with probability p and the rest multiplied by 1 / (1 - p).
    x: any shape; p in [0, 1). Returns x's shape; p = 0 returns x itself."""
    if p == 0:
        return x
    if not fast_masks_apply(x):
        return F.dropout(x, p)
    # The mask and the scale in one float tensor first: autograd then saves it for the backward
    # pass (grad * scaled_keep) and the larger x is multiplied once.
    scaled_keep = scaled_keep_mask(x.shape, p, x.dtype)  # 0 or 1 / (1 - p), x's shape and dtype
    return x * scaled_keep


class Dropout(nn.Module):
    """`dropout` with probability p while the module is training; the identity in eval mode."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p) if self.training else x

    def extra_repr(self) -> str:
        return f"p={self.p}"
