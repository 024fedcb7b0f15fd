"""The one-token decoding step on a CPU, as a flat list of operations: GPT.forward's arithmetic
without its bookkeeping.

Generating one token at batch 1 multiplies one vector by every weight matrix; on a CPU that costs
about what reading the weights costs (1.2 ms with float16 weights, 1.4 with bf16, 2.2 to 3.3 in float32, for
nanoGPT's 6-layer, 384-wide model on a 2-core AMD EPYC with AVX2). Everything else in the
model's forward pass is bookkeeping, paid for every token: module calls, taps, the practice
pieces' lookups, split/merge views and masks: 1.7 ms there, more than the float32 products
themselves. `LeanDecoder.step` computes the same step, operation for operation (the same
LayerNorm, products, rotation, attention function and GELU, in the same order), straight from
the model's weights and into the same KVCache, in about 1 ms less. (With float16 weights its GELU
reads the float16 hidden layer, which can differ from the model's own step in the rounding of a
hidden value: see __init__.) A `LeanDecoder` looks the
modules up once per generation: even an attribute of an nn.Module costs a Python call.

It is used only where nobody could see the difference (`lean_decoder`): a CPU model in eval
mode, one row, no tap listened to, no forward hook, and no learner's piece (practice.use), as
things stand when the generation starts. Anything else takes the model's own forward pass.
Tests hold its logits to the model's for every position encoding, with and without biases,
MLPs, either GELU and either attention path.
"""

import torch
import torch.nn.functional as F

from .. import pieces
from ..attention import scaled_dot_product_attention
from ..kv_cache import KVCache
from ..model import GPT, exact_gelu, gelu
from ..model import layer_norm as model_layer_norm
from ..positional import apply_rotary
from .half_weights import HalfWeightsLinear
from .cuda_graphs import has_hooks


def lean_decoder(model: GPT, B: int) -> "LeanDecoder | None":
    """A LeanDecoder for model at batch B, or None where the model's own step must run."""
    if model.wte.weight.device.type != "cpu" or B != 1 or model.training or model.taps.listeners \
            or model.taps.observers or pieces.chosen() or has_hooks(model) or torch.compiler.is_compiling():
        return None
    return LeanDecoder(model)


def product(linear: torch.nn.Module, widen: bool = False):
    """The function computing linear(x) for one row x (1, in) -> (1, out). With 16-bit weights
    (half_weights.py) it is `HalfWeightsLinear.low` called as `torch.addmm` itself, the very
    operation `F.linear` runs for a row, without its dispatching; the result stays in 16 bits (the
    operation after it widens or rounds it anyway), or is widened when `widen` asks (keys and
    values, stored in the cache as float32; the MLP's hidden layer, for its GELU). Other layers
    (nn.Linear, PackedLinear, in the model's dtype) are called as they are."""
    if not isinstance(linear, HalfWeightsLinear):
        return linear
    weight_t, bias = linear.weight.t(), linear.bias  # (in, out): a view, read in place by the product
    dtype = weight_t.dtype

    def low(x: torch.Tensor) -> torch.Tensor:
        x = x.to(dtype)
        if bias is None:
            return torch.mm(x, weight_t)  # (1,in) @ (in,out) -> (1,out)
        return torch.addmm(bias, x, weight_t)  # bias + (1,in) @ (in,out) -> (1,out)

    return (lambda x: low(x).float()) if widen else low


def float16(linear: torch.nn.Module) -> bool:
    """Whether linear holds float16 weights (half_weights.py)."""
    return isinstance(linear, HalfWeightsLinear) and linear.weight.dtype == torch.float16


def layer_norm(norm: torch.nn.LayerNorm):
    """The function computing model.layer_norm with this module's weight, bias (or none) and eps."""
    weight, bias, eps = norm.weight, norm.bias, norm.eps
    return lambda x: model_layer_norm(x, weight, bias, eps)  # (..., C) -> (..., C)


class LeanDecoder:
    """model.next_token_logits(token, cache) for one token of one row, as a flat list of operations."""

    def __init__(self, model: GPT):
        config = model.config
        self.H, self.D, self.C = config.n_head, config.head_size, config.n_embd
        self.layers = []
        for block in model.blocks:
            attn, mlp = block.attn, block.mlp
            self.layers.append((
                layer_norm(block.ln_1), product(attn.c_attn, widen=True), attn.impl == "manual", attn.scale,
                product(attn.c_proj),
                # With float16 weights the GELU runs on c_fc's float16 result. PyTorch computes a
                # float16 GELU in float32 and rounds it, which mlp_proj's product would do to the
                # model's float32 GELU anyway: for a row, 4 us against 18 widened (float32's GELU
                # goes through oneDNN, which costs ~10 us a call at this size); 1.04x and 1.09x
                # the tokens/s of nanoGPT's model. The two float32 GELUs (ATen's, oneDNN's) can
                # differ in their last bit, so a value lying on a float16 rounding boundary may
                # round the other way (none of 100,000 exact GELUs on an AVX2 CPU, one of 100,000
                # in the tanh form): a difference of one float16 step in one hidden value. bf16
                # weights, 8x coarser, keep the model's own float32 GELU.
                None if mlp is None else (layer_norm(block.ln_2), product(mlp.c_fc, widen=not float16(mlp.c_fc)),
                                          exact_gelu if mlp.exact_gelu else gelu, product(mlp.c_proj)),
            ))
        self.ln_f, self.lm_head = layer_norm(model.ln_f), model.lm_head
        self.wte, self.wpe, self.rope = model.wte.weight, model.wpe, model.rope

    @torch.inference_mode()  # no autograd bookkeeping at all: 0.3 ms less a token than no_grad here
    def step(self, token: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits (1, V) after token (1, 1), which stands at position cache.length; stores its keys
        and values in cache and advances it, as model.next_token_logits(token, cache) does. The
        logits come out as an inference tensor: read them, or compute from them (sampling does),
        but outside this step they take no in-place change and no gradient."""
        H, D, C = self.H, self.D, self.C
        position = torch.tensor([cache.length])  # (1,)
        x = self.wte[token[0]]  # (1, C): one row, so every product below is a matrix-vector one
        if self.wpe is not None:
            x = x + self.wpe(position)  # (1, C) + (1, C): learned or sinusoidal
        rope = self.rope(position) if self.rope is not None else None  # (1, D/2) cos and sin
        for layer, (ln_1, c_attn, manual, scale, c_proj, mlp) in enumerate(self.layers):
            qkv = c_attn(ln_1(x))  # (1, 3C), in the cache's dtype
            q, k, v = qkv.view(3, 1, H, 1, D).unbind(0)  # 3 x (1, H, 1, D): T = 1, so the heads are views
            if rope is not None:
                q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
            k, v = cache.update(layer, k, v)  # (1, H, S, D): every position stored, this one included
            # One query over the cache sees every stored key (no mask); the path the model chose.
            if manual:
                heads, _ = scaled_dot_product_attention(q, k, v, None, 0.0, scale)
            else:
                heads = F.scaled_dot_product_attention(q, k, v, scale=scale)  # (1, H, 1, D)
            x = x + c_proj(heads.view(1, C))  # (1, C): heads side by side, then projected
            if mlp is not None:
                ln_2, c_fc, activation, mlp_proj = mlp
                x = x + mlp_proj(activation(c_fc(ln_2(x))))  # (1, C) -> (1, 4C) -> (1, C)
        cache.advance(1)
        return self.lm_head(self.ln_f(x))  # (1, C) @ (C, V) -> (1, V)
