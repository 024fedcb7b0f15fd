"""Dropout (dropout.py, machine/masks.py), attention by blocks (machine/blocked_attention.py), and model.gelu = "exact"."""

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from minitransformer import GPT, ModelConfig
from minitransformer.attention import causal_mask, merge_heads, scaled_dot_product_attention, split_heads
from minitransformer.dropout import Dropout, dropout
from minitransformer.errors import UserError
from minitransformer.formats.checkpoint import model_digest
from minitransformer.machine import masks
from minitransformer.machine.blocked_attention import causal_attention_by_blocks


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5, 0.9])
@pytest.mark.parametrize("n", [1, 7, 1000, 300_001])
def test_dropout_keeps_each_element_with_probability_one_minus_p_and_rescales(p, n):
    torch.manual_seed(0)
    x = torch.rand(n) + 0.5  # never 0, so a zero in the output is a dropped element
    out = dropout(x, p)
    kept = out != 0
    assert_close(out[kept], x[kept] / (1 - p))  # the survivors scaled by 1 / (1 - p), nothing else
    if n >= 1000:  # the share kept, within 5 standard deviations of 1 - p
        sd = (p * (1 - p) / n) ** 0.5
        assert abs(kept.float().mean().item() - (1 - p)) < 5 * sd


def test_dropout_masks_are_independent_of_position_and_of_each_other():
    """Neighbouring elements, the two halves (drawn by two threads) and two calls do not agree
    more often than chance: for independent Bernoulli(1/2) draws they agree half the time."""
    torch.manual_seed(1)
    first = masks.keep_mask((400_000,), 0.5)
    second = masks.keep_mask((400_000,), 0.5)
    sd = (0.25 / 200_000) ** 0.5
    for a, b in ((first[:-1], first[1:]), (first[:200_000], first[200_000:]), (first, second)):
        assert abs((a == b).float().mean().item() - 0.5) < 6 * sd


def test_masks_follow_torchs_seed_and_not_the_thread_count(monkeypatch):
    torch.manual_seed(5)
    threaded = masks.keep_mask((3, 100_001), 0.3)
    monkeypatch.setattr(masks, "THREADED_FROM", 10 ** 9)  # the same mask drawn by one thread
    torch.manual_seed(5)
    assert torch.equal(masks.keep_mask((3, 100_001), 0.3), threaded)
    assert not torch.equal(masks.keep_mask((3, 100_001), 0.3), threaded)  # the next call draws anew


def test_dropout_backward_passes_gradient_through_the_kept_elements_only():
    torch.manual_seed(2)
    x = torch.randn(64, 33, requires_grad=True)
    out = dropout(x, 0.25)
    out.sum().backward()
    kept = (out != 0).float()
    assert_close(x.grad, kept / 0.75)


def test_dropout_module_is_the_identity_in_eval_mode_and_keeps_bf16():
    layer = Dropout(0.5)
    x = torch.randn(10, 10)
    assert layer.eval()(x) is x
    assert dropout(x, 0.0) is x
    assert layer.train()(x.bfloat16()).dtype == torch.bfloat16


def test_compiled_or_gpu_tensors_use_torchs_own_dropout(monkeypatch):
    """Where numpy cannot draw (a GPU, torch.compile), F.dropout computes the same thing."""
    calls = []
    monkeypatch.setattr(masks.torch.compiler, "is_compiling", lambda: True)
    monkeypatch.setattr(F, "dropout", lambda x, p: calls.append(p) or x)
    dropout(torch.ones(3), 0.2)
    assert calls == [0.2]


def written_out_by_blocks(q, k, v, p, scale, block):
    """The reference: our written-out attention, block by block (each block's mask drawn in turn)."""
    T = q.shape[2]
    outs = []
    for start in range(0, T, block):
        end = min(start + block, T)
        out, _ = scaled_dot_product_attention(q[:, :, start:end], k[:, :, :end], v[:, :, :end],
                                              causal_mask(end - start, start), p, scale)
        outs.append(out)  # (B, H, Q, D)
    return torch.cat(outs, dim=2)  # (B, H, T, D)


def heads_of_one_tensor(B, H, T, D, dtype):
    """q, k, v as the model makes them: strided (B, H, T, D) views of one (B, T, 3C) leaf."""
    qkv = torch.randn(B, T, 3 * H * D, dtype=dtype, requires_grad=True)
    q, k, v = (split_heads(t, H) for t in qkv.split(H * D, dim=2))  # (B, H, T, D) each
    return qkv, q, k, v


@pytest.mark.parametrize("T", [1, 5, 64, 65, 130, 256])
@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("scale", [None, 0.5])
def test_attention_by_blocks_equals_the_written_out_attention_values_and_gradients(T, p, scale):
    """The same seed draws the same masks on both paths, so out and every gradient agree."""
    grads = []
    for attend in (causal_attention_by_blocks, written_out_by_blocks):
        torch.manual_seed(T)
        qkv, q, k, v = heads_of_one_tensor(2, 3, T, 8, torch.float64)
        grad_out = torch.randn(2, 3, T, 8, dtype=torch.float64)
        out = attend(q, k, v, p, scale, 16 if scale else 64)
        out.backward(grad_out)
        grads.append((out.detach(), qkv.grad))
    (out, grad), (expected, expected_grad) = grads
    assert_close(out, expected, rtol=1e-12, atol=1e-12)
    assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)
    if p == 0:  # without dropout, the blocks are the whole causal attention
        torch.manual_seed(T)
        _, q, k, v = heads_of_one_tensor(2, 3, T, 8, torch.float64)
        assert_close(out, scaled_dot_product_attention(q, k, v, causal_mask(T), scale=scale)[0], rtol=1e-12, atol=1e-12)


def test_attention_by_blocks_gradients_pass_gradcheck():
    torch.manual_seed(9)
    q, k, v = (torch.randn(1, 2, 21, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda q, k, v: causal_attention_by_blocks(q, k, v, 0.0, None, 8), (q, k, v))


def test_attention_by_blocks_in_bf16_autocast_stays_in_bf16_and_near_float32():
    """Under a CPU's bf16 autocast the heads arrive in bf16 and everything runs in bf16, gradients too."""
    torch.manual_seed(10)
    qkv, q, k, v = heads_of_one_tensor(2, 2, 70, 16, torch.float32)
    expected = written_out_by_blocks(q, k, v, 0.0, None, 64)
    (grad_expected,) = torch.autograd.grad(expected.sum(), qkv)
    low = qkv.detach().bfloat16().requires_grad_()
    q, k, v = (split_heads(t, 2) for t in low.split(32, dim=2))  # (2, 2, 70, 16) each
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = causal_attention_by_blocks(q, k, v, 0.0)
    out.sum().backward()
    assert out.dtype == low.grad.dtype == torch.bfloat16
    assert_close(out.float(), expected.detach(), rtol=0.05, atol=0.05)
    assert_close(low.grad.float(), grad_expected, rtol=0.1, atol=0.1)


def test_attention_by_blocks_output_is_laid_out_for_merge_heads():
    """merge_heads(out) is a view: the heads were written side by side."""
    q = k = v = torch.randn(2, 3, 10, 4)
    merged = merge_heads(causal_attention_by_blocks(q, k, v, 0.1))
    assert merged.shape == (2, 10, 12) and merged._base is not None


def test_attention_by_blocks_drops_visible_weights_only_and_never_shows_the_future():
    """With v the identity, out's row i is query i's weights after dropout: each one 0 or the
    undropped weight / (1 - p), every future key exactly 0, about p of the visible ones dropped."""
    torch.manual_seed(3)
    T, p = 200, 0.3
    q, k = torch.randn(4, 2, T, T), torch.randn(4, 2, T, T)
    v = torch.eye(T).expand(4, 2, T, T)
    _, weights = scaled_dot_product_attention(q, k, v, causal_mask(T))
    out = causal_attention_by_blocks(q, k, v, p, None)
    future = ~causal_mask(T)
    assert torch.all(out[..., future] == 0)
    visible = out[..., ~future]
    dropped = visible == 0
    assert_close(visible[~dropped], weights[..., ~future][~dropped] / (1 - p))
    n = visible.numel()
    assert abs(dropped.float().mean().item() - p) < 5 * (p * (1 - p) / n) ** 0.5


def test_training_with_dropout_takes_the_block_path_and_learns_the_same_loss_as_manual():
    """A CPU model with attention = "sdpa" and dropout trains by blocks; in eval mode it computes
    what the manual path computes."""
    torch.manual_seed(4)
    config = ModelConfig(vocab_size=20, block_size=80, n_layer=2, n_head=2, n_embd=16, dropout=0.2, attention="sdpa")
    model = GPT(config)
    idx = torch.randint(0, 20, (3, 80))
    _, loss = model(idx, idx)  # training mode: dropout on
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())
    model.eval()
    manual = GPT(ModelConfig(**{**config.__dict__, "attention": "manual"})).eval()
    manual.load_state_dict(model.state_dict())
    assert_close(model(idx)[0], manual(idx)[0], rtol=1e-5, atol=1e-5)


def test_exact_gelu_is_a_model_choice():
    torch.manual_seed(6)
    tanh = GPT(ModelConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16)).eval()
    exact = GPT(ModelConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16, gelu="exact")).eval()
    exact.load_state_dict(tanh.state_dict())
    x = torch.randn(2, 8, 16)
    mlp = exact.blocks[0].mlp
    assert_close(mlp(x), mlp.c_proj(F.gelu(mlp.c_fc(x))))
    assert not torch.allclose(mlp(x), tanh.blocks[0].mlp(x))
    # The digest tells the two apart (tests/fixtures/run_v0.1 shows older tanh weights still load).
    assert model_digest(exact.config) != model_digest(tanh.config)
    with pytest.raises(UserError, match="exact"):
        ModelConfig(vocab_size=20, gelu="erf")
