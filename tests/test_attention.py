"""The causal mask, the attention function and the multi-head module."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from minitransformer.attention import CausalSelfAttention, causal_mask, scaled_dot_product_attention
from minitransformer.kv_cache import KVCache

from tests.helpers import ATTENTIONS, small_config

TOL = dict(atol=1e-5, rtol=1e-5)  # float32 results of the same math in a different order


def random_qkv(B=2, H=3, T=7, D=8, S=None):
    S = T if S is None else S
    return torch.randn(B, H, T, D), torch.randn(B, H, S, D), torch.randn(B, H, S, D)


def test_causal_mask_pattern():
    T = 5
    expected = torch.tensor([[j <= i for j in range(T)] for i in range(T)])
    assert torch.equal(causal_mask(T), expected)


def test_causal_mask_after_cached_positions():
    T, past = 3, 4
    expected = torch.tensor([[j <= past + i for j in range(past + T)] for i in range(T)])
    assert torch.equal(causal_mask(T, past), expected)


@pytest.mark.parametrize("B,T", [(1, 1), (2, 5), (3, 16)])
def test_attention_function_shapes(B, T):
    q, k, v = random_qkv(B=B, T=T)
    out, weights = scaled_dot_product_attention(q, k, v, causal_mask(T))
    assert out.shape == (B, 3, T, 8)
    assert weights.shape == (B, 3, T, T)


def test_weights_are_zero_above_diagonal_and_rows_sum_to_one():
    q, k, v = random_qkv(T=9)
    _, weights = scaled_dot_product_attention(q, k, v, causal_mask(9))
    above = ~causal_mask(9)
    assert torch.all(weights[..., above] == 0)
    assert torch.all(weights[..., ~above] > 0)
    assert_close(weights.sum(-1), torch.ones(2, 3, 9), **TOL)


def test_attention_function_scores_follow_the_formula():
    q, k, v = random_qkv(T=4, D=16)
    out, weights = scaled_dot_product_attention(q, k, v)
    scores = torch.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(16)
    assert_close(weights, torch.softmax(scores, -1), **TOL)
    assert_close(out, torch.einsum("bhts,bhsd->bhtd", weights, v), **TOL)


def test_future_keys_and_values_never_change_earlier_outputs():
    T, t = 8, 3
    q, k, v = random_qkv(T=T)
    out, _ = scaled_dot_product_attention(q, k, v, causal_mask(T))
    k2, v2 = k.clone(), v.clone()
    k2[:, :, t + 1 :] = torch.randn_like(k2[:, :, t + 1 :])
    v2[:, :, t + 1 :] = torch.randn_like(v2[:, :, t + 1 :])
    out2, _ = scaled_dot_product_attention(q, k2, v2, causal_mask(T))
    assert_close(out2[:, :, : t + 1], out[:, :, : t + 1], atol=0, rtol=0)
    assert not torch.allclose(out2[:, :, t + 1 :], out[:, :, t + 1 :])


@pytest.mark.parametrize("masked", [True, False])
@pytest.mark.parametrize("scale", [None, 1.0])
def test_manual_matches_torch_sdpa(masked, scale):
    q, k, v = random_qkv(T=11, D=16)
    mask = causal_mask(11) if masked else None
    out, _ = scaled_dot_product_attention(q, k, v, mask, scale=scale)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    assert_close(out, expected, **TOL)


def test_manual_matches_torch_sdpa_after_cached_positions():
    q, k, v = random_qkv(T=3, S=10)
    mask = causal_mask(3, past=7)
    out, _ = scaled_dot_product_attention(q, k, v, mask)
    assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), **TOL)


def test_dropout_keeps_weights_and_changes_output():
    q, k, v = random_qkv(T=6)
    out, weights = scaled_dot_product_attention(q, k, v, causal_mask(6))
    out_dropped, weights_dropped = scaled_dot_product_attention(q, k, v, causal_mask(6), dropout_p=0.5)
    assert_close(weights_dropped, weights, **TOL)
    assert not torch.allclose(out_dropped, out)


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("B,T", [(1, 1), (2, 5), (3, 16)])
def test_module_shapes(attention, B, T):
    module = CausalSelfAttention(small_config(attention=attention), layer=0)
    assert module(torch.randn(B, T, 32)).shape == (B, T, 32)


def test_module_manual_equals_sdpa_with_same_weights():
    manual = CausalSelfAttention(small_config(attention="manual"), layer=0)
    fused = CausalSelfAttention(small_config(attention="sdpa"), layer=0)
    fused.load_state_dict(manual.state_dict())
    x = torch.randn(3, 16, 32)
    assert_close(fused(x), manual(x), **TOL)


def test_module_matches_torch_multihead_attention():
    config = small_config()
    ours = CausalSelfAttention(config, layer=0)
    theirs = torch.nn.MultiheadAttention(config.n_embd, config.n_head, bias=True, batch_first=True)
    with torch.no_grad():
        theirs.in_proj_weight.copy_(ours.c_attn.weight)
        theirs.in_proj_bias.copy_(ours.c_attn.bias)
        theirs.out_proj.weight.copy_(ours.c_proj.weight)
        theirs.out_proj.bias.copy_(ours.c_proj.bias)
    x = torch.randn(2, 10, config.n_embd)
    # MultiheadAttention's boolean mask is True where attention is *not* allowed.
    expected, _ = theirs(x, x, x, attn_mask=~causal_mask(10), need_weights=False)
    assert_close(ours(x), expected, **TOL)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_module_with_cache_matches_full_pass(attention):
    module = CausalSelfAttention(small_config(attention=attention), layer=0)
    x = torch.randn(2, 9, 32)
    full = module(x)
    cache = KVCache(n_layer=1, max_len=16)
    first = module(x[:, :5], cache=cache)
    cache.advance(5)
    rest = [first]
    for t in range(5, 9):
        rest.append(module(x[:, t : t + 1], cache=cache))
        cache.advance(1)
    assert_close(torch.cat(rest, dim=1), full, **TOL)
