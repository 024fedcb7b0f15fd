"""Taps: named places in the forward pass where you can look at a tensor, or replace it.

The model calls a tap at every interesting point, e.g. in `Block.forward`:

    x = self.tap("resid_mid", x)  # (B, T, C): the residual stream after attention

With nobody listening (the normal case) a tap returns its tensor and costs one function call.
`inspection.py` adds listeners to record activations by name, to ablate a head or an MLP, or to
patch in an activation from another prompt; each listener gets the tap's full name and the tensor,
and returns None (leave it) or a tensor of the same shape to use instead.

The names, with shapes in B (batch), T (positions of this pass), S (positions attended over: T,
or the cache's length plus T), H (heads), D (C // H), C (n_embd), V (vocabulary):

    embed                      (B, T, C)     token embeddings
    pos                        (B, T, C)     positions added to them (learned or sinusoidal only)
    blocks.L.resid_pre         (B, T, C)     the residual stream entering block L
    blocks.L.ln_1              (B, T, C)     its first LayerNorm
    blocks.L.attn.q, .k, .v    (B, H, T, D)  queries, and keys and values (B, H, S, D with a cache),
                                             rotated already with rotary positions
    blocks.L.attn.scores       (B, H, T, S)  scaled, masked scores, before the softmax
    blocks.L.attn.weights      (B, H, T, S)  the attention weights (each row sums to 1)
    blocks.L.attn.heads        (B, H, T, D)  each head's output, weights @ v, before they are joined
    blocks.L.attn.out          (B, T, C)     attention's output, after the projection c_proj
    blocks.L.resid_mid         (B, T, C)     the residual stream after attention
    blocks.L.ln_2              (B, T, C)     the second LayerNorm
    blocks.L.mlp.hidden        (B, T, 4C)    the MLP's hidden layer, after the GELU
    blocks.L.mlp.out           (B, T, C)     the MLP's output
    blocks.L.resid_post        (B, T, C)     the residual stream leaving block L
    ln_f                       (B, T, C)     the final LayerNorm
    logits                     (B, T, V)     (generation computes the last position only: (B, 1, V))

The attention taps (q to heads) sit on the explicit attention path; inspection's context managers
switch the model to it for their duration.
"""

from collections.abc import Callable

import torch

Listener = Callable[[str, torch.Tensor], torch.Tensor | None]


class Taps:
    """The listeners of one model; `taps(where, name, tensor)` hands tensor to each in turn.

    Listeners that may replace the tensor (ablate, patch, a learner's experiment) run first, in the
    order they were added; observers (record, capture_attention) then see the tensor the model
    goes on with, whatever order the context managers were entered in.
    """

    def __init__(self):
        self.listeners: list[Listener] = []
        self.observers: list[Callable[[str, torch.Tensor], None]] = []

    def __call__(self, where: str, name: str, tensor: torch.Tensor) -> torch.Tensor:
        if not self.listeners and not self.observers:
            return tensor
        full_name = f"{where}.{name}" if where else name
        for listener in self.listeners:
            replaced = listener(full_name, tensor)
            if replaced is not None:
                if replaced.shape != tensor.shape:
                    raise ValueError(f"a tap's replacement for {full_name} is {tuple(replaced.shape)}, "
                                     f"the tensor {tuple(tensor.shape)}")
                tensor = replaced
        for observer in self.observers:
            observer(full_name, tensor)
        return tensor



class Tap:
    """The tap of one module: Tap(taps, "blocks.2.attn")("q", q) is tap "blocks.2.attn.q".

    An object rather than a closure, so that a copied model (copy.deepcopy) taps its own Taps.
    """

    def __init__(self, taps: Taps, where: str):
        self.taps, self.where = taps, where

    def __call__(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        return self.taps(self.where, name, tensor)


def untapped(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """A tap that nobody listens to: for modules and functions used on their own."""
    return tensor
