"""Linear layers whose weights are stored in 16 bits, for generation on CPUs without bf16 arithmetic.

Generating one token reads every weight once, so on a CPU its time is mostly the weights' bytes
and how fast the CPU turns them into float32. 16-bit weights halve the bytes. CPUs without bf16
instructions (most laptops: AVX2 only) emulate 16-bit arithmetic, which makes matrix-matrix
products many times slower (a bf16 training step: 16x). A matrix-vector product, though, does one
multiply-add per weight it reads, and PyTorch computes it widening each weight to float32 on the
fly: on a 2-core AMD EPYC with AVX2, the 24 products of a token of nanoGPT's 6-layer, 384-wide
model take 1.36 ms with bf16 weights and 1.16 ms with float16 weights, against 3.1 ms in float32
(whose 42 MB come from memory, not the caches).

So `HalfWeightsLinear` keeps only its weight and bias in 16 bits; everything around it stays float32:
- one row (a decoding step): x rounded to 16 bits, the product (float32 sums inside the kernel),
  the result rounded to 16 bits, then widened to float32. `low` leaves the result in 16 bits; the
  lean decoding step (cpu_decode.py) runs the same product, as one `torch.addmm`;
- up to ROWS_IN_HALF rows the same, row by row as it were: an emulated product's time grows with
  its rows (for the 24 products above, in bf16: 1.7 ms for 1 row, 5.2 for 4, 9.5 for 8);
- more rows (a prompt, or a window rebuilt past block_size): the weight is widened back to
  float32 first, so the product costs what a float32 one costs plus the widening (for the same
  24: 5.0 ms for 4 rows, 4.8 for 8, 5.8 for 16) instead of the emulated one's.
Either way the weights are the float32 weights rounded to 16 bits.

Which 16 bits: float16 keeps 11 significant bits to bf16's 8, so it rounds 8x more finely, but
its largest number is 65,504 where bf16's is float32's. `float16_bound` proves from the weights
alone that no input or output of these products can come near it in the model's own forward
pass (a LayerNorm's output is bounded whatever its input), and `generate.decoding_dtype` takes
float16 only where it does; otherwise bf16. `prepare_for_decoding` uses this where "auto"
precision measured it faster on such a CPU (generate.decoding_dtype); it is never used for training.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .packed import replace_linears


ROWS_IN_HALF = 4  # up to this many rows the 16-bit product is as fast as widening the weight, or faster
# float16 weights only where float16_bound stays below this: half of float16's largest number,
# 65,504, which leaves room for the rounding of the inputs and weights (relative 2^-11 each).
FLOAT16_SAFE = 32_752.0


class HalfWeightsLinear(nn.Module):
    """y = x W^T + b, as the float32 `nn.Linear` it replaces, with W stored in dtype (bf16 or float16)."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", linear.weight.detach().to(dtype), persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(dtype),
                             persistent=False)

    def low(self, x: torch.Tensor) -> torch.Tensor:
        """A few rows x (..., in) -> (..., out) in 16 bits: the matrix-vector product."""
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[:-1].numel() <= ROWS_IN_HALF:
            return self.low(x).float()  # (..., out)
        bias = None if self.bias is None else self.bias.float()
        return F.linear(x, self.weight.float(), bias)  # (..., out): several rows, in float32


def store_half_weights(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Replace every nn.Linear of a float32 CPU model by a HalfWeightsLinear in dtype, in place; returns the model."""
    return replace_linears(model, lambda linear: HalfWeightsLinear(linear, dtype))


@torch.no_grad()
def float16_bound(model) -> float:
    """An upper bound on |every number| that goes into or comes out of a linear layer of model (a
    float32 GPT) in its own forward pass, whatever the tokens, computed from the weights alone.

    - A LayerNorm's output: (x - mean) / sqrt(var + eps) has mean 0 and mean square at most 1, so
      each entry is at most sqrt(C - 1) in size; then times |weight|, plus |bias|.
    - A linear layer's output: entry j is at most sum_i |W_ji| bound_i + |b_j|.
    - Attention's output is a weighted average of the values (softmax weights are positive and add
      to 1), so each entry is bounded by the values' bound; rotary positions turn queries and keys only.
    - GELU(u) = u Phi(u) with Phi in [0, 1] (the tanh form too), so |GELU(u)| <= |u|.
    The products' inputs all come after a LayerNorm, so the residual stream's size never enters.
    """
    largest = 0.0

    def norm(ln: nn.LayerNorm) -> torch.Tensor:
        C = ln.weight.numel()
        out = ln.weight.double().abs() * math.sqrt(C - 1)  # (C,)
        return out if ln.bias is None else out + ln.bias.double().abs()

    def product(linear: nn.Linear, bound: torch.Tensor) -> torch.Tensor:
        nonlocal largest
        out = linear.weight.double().abs() @ bound  # (out, in) @ (in,) -> (out,)
        out = out if linear.bias is None else out + linear.bias.double().abs()
        for value in (bound.max().item(), out.max().item()):
            if not value <= largest:  # larger, or NaN (broken weights: never float16)
                largest = value if value == value else math.inf
        return out

    C = model.config.n_embd
    for block in model.blocks:
        qkv = product(block.attn.c_attn, norm(block.ln_1))  # (3C,)
        product(block.attn.c_proj, qkv[2 * C:])  # each head's output is bounded by its values
        if block.mlp is not None:
            product(block.mlp.c_proj, product(block.mlp.c_fc, norm(block.ln_2)))  # |GELU(u)| <= |u|
    product(model.lm_head, norm(model.ln_f))
    return largest
