"""Sinusoidal and rotary positional encodings."""

import math

import pytest
import torch
from torch.testing import assert_close

from minitransformer.positional import RotaryEmbedding, SinusoidalPositions, apply_rotary, sinusoidal_table


@pytest.mark.parametrize("C", [16, 15])
def test_sinusoid_values_follow_the_formula(C):
    table = sinusoidal_table(12, C)
    assert table.shape == (12, C)
    for p in range(12):
        for dim in range(C):
            angle = p / 10000 ** ((dim - dim % 2) / C)
            expected = math.sin(angle) if dim % 2 == 0 else math.cos(angle)
            assert table[p, dim].item() == pytest.approx(expected, abs=1e-5)


def test_sinusoidal_module_looks_up_positions():
    module = SinusoidalPositions(block_size=20, C=8)
    positions = torch.tensor([3, 4, 5])
    assert_close(module(positions), sinusoidal_table(20, 8)[3:6], atol=0, rtol=0)
    assert list(module.state_dict()) == []  # fixed, so nothing to save


def test_rotary_keeps_shape_and_norm():
    rope = RotaryEmbedding(block_size=10, D=8)
    x = torch.randn(2, 3, 10, 8)
    rotated = apply_rotary(x, *rope(torch.arange(10)))
    assert rotated.shape == x.shape
    assert_close(rotated.norm(dim=-1), x.norm(dim=-1), atol=1e-5, rtol=1e-5)  # rotations keep length


def test_rotary_at_position_zero_is_identity():
    rope = RotaryEmbedding(block_size=4, D=8)
    x = torch.randn(1, 1, 1, 8)
    assert_close(apply_rotary(x, *rope(torch.tensor([0]))), x, atol=0, rtol=0)


def test_rotary_score_depends_only_on_distance():
    D = 16
    rope = RotaryEmbedding(block_size=64, D=D)
    q = torch.randn(1, 1, 1, D)
    k = torch.randn(1, 1, 1, D)

    def score(m, n):
        q_m = apply_rotary(q, *rope(torch.tensor([m])))
        k_n = apply_rotary(k, *rope(torch.tensor([n])))
        return (q_m * k_n).sum().item()

    for distance in (0, 1, 5, 17):
        scores = [score(n + distance, n) for n in (0, 3, 20, 40)]
        assert scores == pytest.approx([scores[0]] * 4, abs=1e-4)
    assert score(5, 0) != pytest.approx(score(6, 0), abs=1e-3)  # and it does depend on distance
