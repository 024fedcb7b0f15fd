"""The one-token decoding step on a CPU, as a flat list of operations: GPT.forward's arithmetic
without its bookkeeping.

Generating one token at batch 1 multiplies one vector by every weight matrix; on a CPU that costs
about what reading the weights costs (1.35 ms in bf16 and 2.2 to 3.3 ms in float32 for nanoGPT's
6-layer, 384-wide model on a 2-core AMD EPYC with AVX2). Everything else in the model's forward
pass is bookkeeping, paid for every token: module calls, taps, the practice pieces' lookups,
split/merge views and masks. There it added 1.7 ms in float32 and 2.5 ms in bf16, more than the
products themselves. `lean_step` computes the same step, operation for operation (the same
LayerNorm, products, rotation, attention function and GELU, in the same order), straight from the
model's weights and into the same KVCache.

It is used only where nobody could see the difference (`lean_step_applies`): a CPU model in eval
mode, one row without padding, no tap listened to, no forward hook, and no learner's piece
(practice.use). Anything else takes the model's own forward pass. Tests hold its logits to the
model's for every position encoding, with and without biases, MLPs, either GELU and either
attention path.
"""

import torch
import torch.nn.functional as F

from .. import pieces
from ..attention import scaled_dot_product_attention
from ..kv_cache import KVCache
from ..model import GPT, exact_gelu, gelu
from ..positional import apply_rotary
from .cuda_graphs import has_hooks


def lean_step_applies(model: GPT, B: int, cache: KVCache | None) -> bool:
    """Whether lean_step may stand in for model.next_token_logits on B rows over cache."""
    return (model.wte.weight.device.type == "cpu" and B == 1 and isinstance(cache, KVCache) and cache.pads is None
            and not model.training and not model.taps.listeners and not model.taps.observers
            and not pieces.chosen() and not has_hooks(model) and not torch.compiler.is_compiling())


def layer_norm(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    """model.layer_norm with the module's weight, bias (or none) and eps: (..., C) -> (..., C)."""
    return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


@torch.no_grad()
def lean_step(model: GPT, token: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Logits (1, V) after token (1, 1), which stands at position cache.length; stores its keys
    and values in cache and advances it, as model.next_token_logits(token, cache) does."""
    config = model.config
    H, D, C = config.n_head, config.head_size, config.n_embd
    position = torch.tensor([cache.length])  # (1,)
    x = model.wte.weight[token[0]][None]  # (1, 1, C)
    if model.wpe is not None:
        x = x + model.wpe(position)  # (1, 1, C) + (1, C)
    rope = model.rope(position) if model.rope is not None else None  # (1, D/2) cos and sin
    for layer, block in enumerate(model.blocks):
        attn = block.attn
        qkv = attn.c_attn(layer_norm(x, block.ln_1))  # (1, 1, 3C)
        q, k, v = qkv.view(3, 1, H, 1, D).unbind(0)  # 3 x (1, H, 1, D): T = 1, so the heads are views
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        k, v = cache.update(layer, k, v)  # (1, H, S, D): every position stored, this one included
        # One query over the cache sees every stored key (no mask); the path the model chose.
        if attn.impl == "manual":
            heads, _ = scaled_dot_product_attention(q, k, v, None, 0.0, attn.scale)
        else:
            heads = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)  # (1, H, 1, D)
        x = x + attn.c_proj(heads.view(1, 1, C))  # (1, 1, C): heads side by side, then projected
        if block.mlp is not None:
            mlp = block.mlp
            hidden = mlp.c_fc(layer_norm(x, block.ln_2))  # (1, 1, 4C)
            hidden = exact_gelu(hidden) if mlp.exact_gelu else gelu(hidden)
            x = x + mlp.c_proj(hidden)  # (1, 1, C)
    cache.advance(1)
    return model.lm_head(layer_norm(x, model.ln_f))[:, 0]  # (1, 1, C) @ (C, V) -> (1, V)
