"""Our stacked Muon against torch.optim.Muon: the same update, within bf16 rounding; its
Newton-Schulz precision follows the run's."""

import pytest
import torch

from minitransformer.training.muon import Muon, orthogonalize

# Matrices of the shapes a model's blocks have (several of each: stacked), wide, square and tall.
SHAPES = [(48, 16)] * 3 + [(16, 16)] * 2 + [(16, 64)] * 3 + [(64, 16)]


def parameters(seed: int) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*shape, generator=generator) * 0.02) for shape in SHAPES]


@pytest.mark.parametrize("nesterov", [True, False])
def test_same_update_as_torch_muon(nesterov):
    ours, theirs = parameters(0), parameters(0)
    start = [p.detach().clone() for p in ours]
    mine = Muon(ours, lr=0.02, weight_decay=0.1, nesterov=nesterov, ns_dtype=torch.bfloat16)  # torch's precision
    reference = torch.optim.Muon(theirs, lr=0.02, weight_decay=0.1, nesterov=nesterov, adjust_lr_fn="original")
    for step in range(4):
        generator = torch.Generator().manual_seed(100 + step)
        for a, b in zip(ours, theirs):
            a.grad = torch.randn(a.shape, generator=generator)
            b.grad = a.grad.clone()
        mine.step()
        reference.step()
    for a, b, before in zip(ours, theirs, start):
        moved = (a - before).abs().max().item()
        assert moved > 0.01  # four steps of lr 0.02 moved every matrix
        # bf16 keeps 8 bits of mantissa: the orthogonalised updates agree to ~1% of lr.
        torch.testing.assert_close(a, b, atol=0.01 * 0.02 * 4, rtol=0)
        assert torch.equal(mine.state[a]["momentum_buffer"], reference.state[b]["momentum_buffer"])


def test_state_dicts_load_into_each_other():
    ours, theirs = parameters(1), parameters(1)
    reference = torch.optim.Muon(theirs, lr=0.02)
    for p in theirs:
        p.grad = torch.ones_like(p)
    reference.step()
    mine = Muon(ours, lr=0.05)
    mine.load_state_dict(reference.state_dict())
    for a, b in zip(ours, theirs):
        assert torch.equal(mine.state[a]["momentum_buffer"], reference.state[b]["momentum_buffer"])
    torch.optim.Muon(parameters(1), lr=0.02).load_state_dict(mine.state_dict())


def test_orthogonalize_brings_singular_values_near_one():
    G = torch.randn(3, 32, 96) * torch.tensor([1e-3, 1.0, 50.0])[:, None, None]  # any scale
    singular = torch.linalg.svdvals(orthogonalize(G).float())  # (3, 32)
    assert singular.min() > 0.5 and singular.max() < 1.3
    tall = orthogonalize(G.mT)
    assert tall.shape == (3, 96, 32)
    torch.testing.assert_close(tall.float(), orthogonalize(G).mT.float())


def test_only_matrices():
    with pytest.raises(ValueError, match="matrices only"):
        Muon([torch.nn.Parameter(torch.zeros(4))])


def test_a_closure_is_evaluated_and_its_loss_returned():
    weight = torch.nn.Parameter(torch.randn(4, 8))
    optimizer = Muon([weight], lr=0.02)

    def closure():
        optimizer.zero_grad()
        loss = (weight**2).sum()
        loss.backward()
        return loss

    before = weight.detach().clone()
    loss = optimizer.step(closure)
    assert loss.item() == pytest.approx((before**2).sum().item())
    assert not torch.equal(weight, before)  # the gradient the closure computed was used


def test_newton_schulz_in_float32_is_the_same_update_without_bf16_rounding():
    """float32 (the default, and a run's on a CPU without native bfloat16) against bfloat16:
    the same orthogonalised update, bf16's rounding apart, and float32's products in float32."""
    G = torch.randn(4, 16, 48)
    exact, rounded = orthogonalize(G, dtype=torch.float32), orthogonalize(G, dtype=torch.bfloat16)
    assert exact.dtype == torch.float32 and rounded.dtype == torch.bfloat16
    torch.testing.assert_close(exact, rounded.float(), atol=0.02, rtol=0)
    assert (exact - rounded.float()).abs().max() > 0  # bf16 really did round


@pytest.mark.parametrize("run_dtype, expected", [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                                 (torch.float16, torch.float32)])
def test_a_run_sets_newton_schulz_to_its_own_precision(run_dtype, expected):
    from minitransformer.training.optim import set_compute_dtype

    muon, adamw = Muon(parameters(2)), torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))])
    set_compute_dtype([muon, adamw], run_dtype)
    assert muon.ns_dtype == expected


def test_newton_schulz_runs_in_the_dtype_it_is_given(monkeypatch):
    """The products themselves (not only the result) are in ns_dtype: watch torch.baddbmm's inputs."""
    import minitransformer.training.muon as muon_module

    seen = []
    real = torch.baddbmm
    monkeypatch.setattr(muon_module.torch, "baddbmm", lambda *args, **kw: seen.append(args[1].dtype) or real(*args, **kw))
    weight = torch.nn.Parameter(torch.randn(8, 16))
    weight.grad = torch.randn(8, 16)
    Muon([weight], ns_dtype=torch.float32).step()
    assert seen and set(seen) == {torch.float32}


def test_under_the_float16_scaler_muon_skips_an_overflowed_step_on_the_device():
    """GradScaler hands Muon the overflow flag (no host read): a finite step equals the plain one
    on unscaled gradients; an overflowed one changes no weight and no momentum."""
    assert Muon._step_supports_amp_scaling
    ours, plain = parameters(3), parameters(3)
    mine, reference = Muon(ours), Muon(plain)
    scale = torch.tensor(1024.0)
    for overflow in (False, True, False):
        generator = torch.Generator().manual_seed(7)
        for a, b in zip(ours, plain):
            b.grad = torch.randn(b.shape, generator=generator)
            a.grad = b.grad * scale
        if overflow:
            ours[0].grad[0, 0] = float("inf")
        before = [p.detach().clone() for p in ours]
        buffers = [mine.state[p]["momentum_buffer"].clone() for p in ours if p in mine.state]
        mine.found_inf, mine.grad_scale = torch.tensor(float(overflow)), scale  # what GradScaler.step sets
        mine.step()
        del mine.found_inf, mine.grad_scale
        if overflow:
            assert all(torch.equal(a, b) for a, b in zip(ours, before))
            assert all(torch.equal(mine.state[p]["momentum_buffer"], b) for p, b in zip(ours, buffers))
        else:
            reference.step()
            for a, b in zip(ours, plain):
                torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
