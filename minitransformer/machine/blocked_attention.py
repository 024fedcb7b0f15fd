"""Causal attention with dropout on a CPU, by blocks of queries, with its backward pass written out.

It computes what `attention.scaled_dot_product_attention` computes with the causal mask and
attention dropout, out = dropout(softmax(scale * q k^T, masked)) v, and the same gradients; the
tests prove both, with the same dropout masks. It is the training path of a CPU model with
`attention = "sdpa"` and dropout, which PyTorch's fused CPU kernel lacks (it falls back to a
written-out path of its own, with torch's slow masks: 59 ms a layer of nanoGPT's model here).

Design choices:
- Blocks of 64 queries each look at the keys up to the block's end only, so the blocks compute
  T (T + 64) / 2 scores instead of T * T (62.5% at T = 256) and draw masks for those only.
- The mask and the scale go into the product itself: `baddbmm` computes
  bias + scale * (q k^T), bias 0 where a query may look and -inf where it may not, so a masked
  weight is exactly 0, and stays 0 on the way back without masking again.
- The backward pass is written here instead of left to autograd, which for the blocks' slices
  filled a zero gradient of all keys and values for every block and added it up, joined the
  blocks' outputs with a `cat`, and masked and scaled every score twice more. Here the keys' and
  values' gradients are summed in place, from the last block (which sees every key, so its
  products fill the whole gradient) to the first.
- The heads' outputs are written straight into a (B, T, H, D) buffer, so merging the heads
  afterwards (`merge_heads`) is a view instead of a copy.
- Masks come from dropout.py's `scaled_keep_mask`, one per block in the order of the blocks, as
  the written-out path would draw them block by block: the same seed drops the same weights.
Measured on a 2-core AMD EPYC with AVX2 (nanoGPT's shape, batch 8, dropout 0.2, forward and
backward of one layer): 34 ms by blocks through autograd, 26 ms this way.
"""

import math

import torch
from torch.autograd.function import once_differentiable

from ..dropout import scaled_keep_mask

BLOCK = 64  # queries a block; 32, 96, 128 and 256 were slower here (through autograd, the release before)


def causal_attention_by_blocks(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float, scale: float | None = None,
    block: int = BLOCK,
) -> torch.Tensor:
    """Causal attention with dropout: q, k, v (B, H, T, D) -> out (B, H, T, D).

    scale multiplies the scores (None: 1/sqrt(D)). out is a view of a (B, T, H, D) buffer, so
    `merge_heads(out)` costs nothing. Everything runs in the heads' dtype (autocast's, under it).
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    if torch.is_autocast_enabled("cpu"):  # as autocast casts a product's inputs; inside, it is off
        low = torch.get_autocast_dtype("cpu")
        q, k, v = q.to(low), k.to(low), v.to(low)
    return BlockedAttention.apply(q, k, v, dropout_p, scale, block)


def hidden_future(Q: int, start: int, dtype: torch.dtype) -> torch.Tensor:
    """(Q, start + Q) additive mask: 0 where query i (at start + i) may see key j <= start + i,
    -inf above that diagonal."""
    return torch.full((Q, start + Q), float("-inf"), dtype=dtype).triu_(start + 1)


class BlockedAttention(torch.autograd.Function):
    """`causal_attention_by_blocks`' forward and backward passes. N = B * H below: one product per head."""

    @staticmethod
    @torch.autocast("cpu", enabled=False)  # everything in q's dtype, as one fused kernel would
    def forward(ctx, q, k, v, dropout_p: float, scale: float, block: int):
        B, H, T, D = q.shape
        # The heads are strided views of one (B, T, 3C) tensor; a batched product of slices of
        # them copies each slice first (2.5x the keys and values over the blocks), so copy once.
        q = q.reshape(B * H, T, D)  # (N, T, D)
        k = k.reshape(B * H, T, D)  # (N, T, D)
        v = v.reshape(B * H, T, D)  # (N, T, D)
        out = q.new_empty(B, T, H, D)  # the heads side by side, as merge_heads lays them out
        saved = []
        for start in range(0, T, block):
            end = min(start + block, T)
            Q = end - start
            bias = hidden_future(Q, start, q.dtype)  # (Q, end)
            # (N,Q,D) @ (N,D,end) -> (N,Q,end), scaled, plus the bias
            scores = torch.baddbmm(bias, q[:, start:end], k[:, :end].transpose(1, 2), alpha=scale)
            weights = torch.softmax(scores, dim=-1)  # (N, Q, end); each row sums to 1
            keep = scaled_keep_mask((B, H, Q, end), dropout_p, q.dtype).view(B * H, Q, end)  # 0 or 1/(1-p)
            dropped = weights * keep  # (N, Q, end)
            heads = torch.bmm(dropped, v[:, :end])  # (N,Q,end) @ (N,end,D) -> (N,Q,D)
            out[:, start:end] = heads.view(B, H, Q, D).transpose(1, 2)  # (B, Q, H, D)
            saved += [weights, keep, dropped]
        ctx.save_for_backward(q, k, v, *saved)
        ctx.shape, ctx.scale, ctx.block = (B, H, T, D), scale, block
        return out.transpose(1, 2)  # (B, H, T, D)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        B, H, T, D = ctx.shape
        q, k, v, *saved = ctx.saved_tensors
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)  # (N, T, D)
        for i, start in reversed(list(enumerate(range(0, T, ctx.block)))):  # the last block first: it sees all T keys
            end = min(start + ctx.block, T)
            Q = end - start
            weights, keep, dropped = saved[3 * i: 3 * i + 3]  # (N, Q, end) each
            grad_heads = grad_out[:, :, start:end].reshape(B * H, Q, D)  # (N, Q, D)
            grad_dropped = torch.bmm(grad_heads, v[:, :end].transpose(1, 2))  # (N,Q,D) @ (N,D,end) -> (N,Q,end)
            grad_weights = grad_dropped.mul_(keep)  # dropout passes the kept ones, rescaled
            # Softmax's backward, weights * (grad_weights - sum(grad_weights * weights, -1)),
            # as one ATen kernel; times the scale of the scores. A masked weight is 0: so is its gradient.
            grad_scores = torch.ops.aten._softmax_backward_data(grad_weights, weights, -1, weights.dtype)
            grad_scores.mul_(ctx.scale)  # (N, Q, end)
            grad_q[:, start:end] = torch.bmm(grad_scores, k[:, :end])  # (N,Q,end) @ (N,end,D) -> (N,Q,D)
            if end == T:  # the first block computed sees every key: its products fill the gradients
                torch.bmm(dropped.transpose(1, 2), grad_heads, out=grad_v)  # (N,T,Q) @ (N,Q,D) -> (N,T,D)
                torch.bmm(grad_scores.transpose(1, 2), q[:, start:end], out=grad_k)  # (N,T,Q) @ (N,Q,D) -> (N,T,D)
            else:  # the others add to the keys they see
                grad_v[:, :end] += torch.bmm(dropped.transpose(1, 2), grad_heads)  # (N,end,Q) @ (N,Q,D) -> (N,end,D)
                grad_k[:, :end] += torch.bmm(grad_scores.transpose(1, 2), q[:, start:end])  # -> (N, end, D)
        shape = (B, H, T, D)
        return grad_q.view(shape), grad_k.view(shape), grad_v.view(shape), None, None, None
