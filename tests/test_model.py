"""The block and the whole GPT: shapes, causality, initialisation, gradients, learning."""

import math

import pytest
import torch
from torch.testing import assert_close

from minitransformer import GPT
from minitransformer.model import MLP, Block
from minitransformer.positional import RotaryEmbedding
from tests.helpers import ATTENTIONS, POSITIONS, small_config

TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("B,T", [(1, 1), (2, 7), (3, 16)])
def test_mlp_and_block_shapes(B, T):
    config = small_config()
    x = torch.randn(B, T, config.n_embd)
    assert MLP(config)(x).shape == (B, T, config.n_embd)
    assert Block(config, layer=0)(x).shape == (B, T, config.n_embd)


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("B,T", [(1, 1), (2, 7), (3, 16)])
def test_gpt_shapes(position, B, T):
    model = GPT(small_config(position=position))
    idx = torch.randint(0, 37, (B, T))
    logits, loss = model(idx)
    assert logits.shape == (B, T, 37)
    assert loss is None
    logits, loss = model(idx, targets=idx)
    assert logits.shape == (B, T, 37)
    assert loss.shape == ()


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("position", POSITIONS)
def test_block_never_looks_ahead(position, attention):
    config = small_config(position=position, attention=attention)
    block = Block(config, layer=0)
    rope = RotaryEmbedding(config.block_size, config.head_size)(torch.arange(12)) if position == "rope" else None
    x = torch.randn(2, 12, config.n_embd)
    t = 5
    changed = x.clone()
    changed[:, t + 1 :] = torch.randn_like(changed[:, t + 1 :])
    out, out_changed = block(x, rope), block(changed, rope)
    assert_close(out_changed[:, : t + 1], out[:, : t + 1], **TOL)
    assert not torch.allclose(out_changed[:, t + 1 :], out[:, t + 1 :])


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("position", POSITIONS)
def test_gpt_never_looks_ahead(position, attention):
    model = GPT(small_config(position=position, attention=attention))
    idx = torch.randint(0, 37, (2, 16))
    logits, _ = model(idx)
    for t in (0, 7, 14):
        changed = idx.clone()
        changed[:, t + 1 :] = (changed[:, t + 1 :] + 1 + torch.randint(0, 36, changed[:, t + 1 :].shape)) % 37
        logits_changed, _ = model(changed)
        assert_close(logits_changed[:, : t + 1], logits[:, : t + 1], **TOL)
        assert not torch.allclose(logits_changed[:, t + 1 :], logits[:, t + 1 :])


@pytest.mark.parametrize("position", POSITIONS)
def test_manual_and_sdpa_models_agree(position):
    manual = GPT(small_config(position=position, attention="manual"))
    fused = GPT(small_config(position=position, attention="sdpa"))
    fused.load_state_dict(manual.state_dict())
    idx = torch.randint(0, 37, (3, 16))
    assert_close(fused(idx)[0], manual(idx)[0], **TOL)


def test_parameter_count_matches_gpt2_formula():
    config = small_config(n_embd=48, n_head=6, n_layer=3)
    V, C, L = config.vocab_size, config.n_embd, config.n_layer
    per_block = 12 * C * C + 13 * C  # c_attn 3C^2+3C, c_proj C^2+C, c_fc 4C^2+4C, c_proj 4C^2+C, 2 LayerNorms 4C
    expected = V * C + config.block_size * C + L * per_block + 2 * C  # the head is tied to wte
    assert GPT(config).num_parameters() == expected


def test_output_head_is_tied_to_token_embedding():
    model = GPT(small_config())
    assert model.lm_head.weight is model.wte.weight
    untied = GPT(small_config(tie_weights=False))
    assert untied.lm_head.weight is not untied.wte.weight


def test_initialisation_follows_gpt2():
    config = small_config(n_embd=128, n_head=4, n_layer=4, vocab_size=500)
    model = GPT(config)
    assert model.wte.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.blocks[0].attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.05)
    residual_std = 0.02 / math.sqrt(2 * config.n_layer)
    for block in model.blocks:
        assert block.attn.c_proj.weight.std().item() == pytest.approx(residual_std, rel=0.05)
        assert block.mlp.c_proj.weight.std().item() == pytest.approx(residual_std, rel=0.05)
        assert torch.all(block.attn.c_attn.bias == 0)
        assert torch.all(block.ln_1.weight == 1)


def test_sequence_longer_than_block_size_is_a_clear_error():
    model = GPT(small_config(block_size=8))
    with pytest.raises(ValueError, match="block_size = 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


@pytest.mark.parametrize("position", POSITIONS)
def test_every_parameter_gets_a_gradient(position):
    model = GPT(small_config(position=position, bias=True))
    idx = torch.randint(0, 37, (2, 16))
    _, loss = model(idx, targets=torch.randint(0, 37, (2, 16)))
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("position", POSITIONS)
def test_tiny_model_overfits_one_batch(position):
    model = GPT(small_config(position=position))
    idx = torch.randint(0, 37, (4, 16))
    targets = torch.randint(0, 37, (4, 16))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        _, loss = model(idx, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1


def test_ignored_targets_do_not_count():
    model = GPT(small_config())
    idx = torch.randint(0, 37, (2, 8))
    targets = torch.randint(0, 37, (2, 8))
    _, loss_first_half = model(idx[:, :4].contiguous(), targets[:, :4].contiguous())
    logits, _ = model(idx)
    masked = targets.clone()
    masked[:, 4:] = -1
    _, loss_masked = model(idx, masked)
    expected = torch.nn.functional.cross_entropy(logits[:, :4].flatten(0, 1), targets[:, :4].flatten())
    assert_close(loss_masked, expected, **TOL)
    assert_close(loss_masked, loss_first_half, **TOL)
