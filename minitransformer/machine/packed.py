"""Linear layers with their weights prepacked for oneDNN: generation on CPUs, 1.5x to 2x as fast.

Generating one token multiplies one vector by every weight matrix, so on a CPU each token costs
about what reading the weights costs. In bfloat16, PyTorch's `F.linear` also rearranges each
weight into oneDNN's blocked layout on every call; doing that once, ahead of time, halves the
time of the matrix-vector products (measured on a 2-core AMD EPYC with AVX512-BF16: 0.53 ms
against 1.06 ms for the 24 products of a 6-layer, 384-wide model). The results are the same
numbers, bit for bit, as the unpacked bf16 layer's (tested). In float32, PyTorch's `F.linear`
calls MKL, whose matrix-vector product is slower than oneDNN's packed one on AVX2 CPUs (3.3 against
2.2 ms for the same 24 products on a 2-core AMD EPYC with AVX2, two threads); the two libraries
add in different orders, so float32 results agree to rounding, not bit for bit (tested).

`pack_linears(model)` swaps every `nn.Linear` of a bf16 or float32 model for a `PackedLinear` holding the
packed weight; the model's own code (attention, blocks) runs unchanged around them. It is used
only for generation (`prepare_for_decoding`), never for training: packed weights have no
gradients. It relies on two of PyTorch's oneDNN operators that Inductor uses for the same
purpose; where they are missing, nothing is packed.
"""

import platform

import torch
from torch import nn

from .device import cpu_computes_bf16


def packing_available(dtype: torch.dtype = torch.bfloat16) -> bool:
    """True where PyTorch has oneDNN's packed linear operators, and for bf16 where the CPU computes
    it natively (float32 on any x86 CPU)."""
    ops = torch.ops.mkldnn
    x86 = platform.machine().lower() in ("x86_64", "amd64")  # measured there only
    return (torch.backends.mkldnn.is_available() and x86 and (dtype == torch.float32 or cpu_computes_bf16())
            and hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise"))


class PackedLinear(nn.Module):
    """y = x W^T + b, as the `nn.Linear` it replaces, with W stored in oneDNN's blocked layout."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # The layout is chosen for one row at a time (batch hint 1): generation's common case.
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 1), persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")  # (..., out)


def replace_linears(model: nn.Module, wrap) -> nn.Module:
    """Replace every nn.Linear of model by wrap(linear), in place; returns the model. For
    generation only: the replacements hold their weights as buffers, without gradients."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, wrap(child))
    return model


def pack_linears(model: nn.Module) -> nn.Module:
    """Replace every nn.Linear of a bf16 or float32 CPU model by a PackedLinear, in place; returns the model."""
    return replace_linears(model, PackedLinear)
