"""Linear layers whose weights are stored in bfloat16, for generation on CPUs that emulate bf16.

Generating one token reads every weight once, so on a CPU its time is mostly the bytes of the
weights. bf16 halves them. CPUs without bf16 instructions (most laptops: AVX2 only) emulate bf16
arithmetic, which makes matrix-matrix products many times slower (a training step: 16x). A
matrix-vector product, though, does one multiply-add per weight it reads, so it stays bound by
memory: on a 2-core AMD EPYC with AVX2, the 24 products of a token of nanoGPT's 6-layer,
384-wide model take 1.35 ms with bf16 weights against 3.3 ms in float32 (2.2 ms packed).

So `Bf16WeightsLinear` keeps only its weight and bias in bf16; everything around it stays float32:
- one row (a decoding step): the product in bf16 (x rounded to bf16, float32 sums inside the
  kernel, the result rounded to bf16), then widened to float32. `low` leaves the result in bf16;
  the lean decoding step (cpu_decode.py) runs the same product, as one `torch.addmm`;
- up to ROWS_IN_BF16 rows the same, row by row as it were: an emulated bf16 product's time grows
  with its rows (for the 24 products above: 1.5 ms for 1 row, 9.6 for 8, 18.7 for 16);
- more rows (a prompt, or a window rebuilt past block_size): the weight is widened back to
  float32 first (7 ms for the 24), so the product costs what a float32 one costs (11.8 ms in all
  for 16 rows) instead of emulated bf16's.
Either way the weights are the float32 weights rounded to bf16, as in a bf16 model.

`prepare_for_decoding` uses it when `auto` precision measured bf16 decoding faster on such a CPU
(generate.decoding_dtype); it is never used for training.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .packed import replace_linears


ROWS_IN_BF16 = 8  # up to this many rows the bf16 product is faster than widening the weight


class Bf16WeightsLinear(nn.Module):
    """y = x W^T + b, as the float32 `nn.Linear` it replaces, with W stored in bfloat16."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", linear.weight.detach().to(torch.bfloat16), persistent=False)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.bfloat16),
                             persistent=False)

    def low(self, x: torch.Tensor) -> torch.Tensor:
        """A few rows x (..., in) -> (..., out) in bf16: the memory-bound matrix-vector product."""
        return F.linear(x.to(torch.bfloat16), self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[:-1].numel() <= ROWS_IN_BF16:
            return self.low(x).float()  # (..., out)
        bias = None if self.bias is None else self.bias.float()
        return F.linear(x, self.weight.float(), bias)  # (..., out): several rows, in float32


def store_bf16_weights(model: nn.Module) -> nn.Module:
    """Replace every nn.Linear of a float32 CPU model by a Bf16WeightsLinear, in place; returns the model."""
    return replace_linears(model, Bf16WeightsLinear)
