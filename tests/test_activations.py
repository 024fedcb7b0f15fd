"""Recording every activation by name, ablation, patching and the logit lens (activations.py),
for every positional encoding and both attention settings."""

import pytest
import torch
from torch.testing import assert_close

from minitransformer import GPT, generate
from minitransformer.activations import ablate, ablation_losses, lens_rows, lens_table, logit_lens, patch, record
from minitransformer.errors import UserError
from minitransformer.inspection import capture_attention
from tests.helpers import ATTENTIONS, POSITIONS, small_config

TOL = dict(atol=1e-5, rtol=1e-5)
SETTINGS = [(position, attention) for position in POSITIONS for attention in ATTENTIONS]


def model_for(position: str, attention: str = "manual", **overrides) -> GPT:
    torch.manual_seed(0)
    model = GPT(small_config(position=position, attention=attention, **overrides)).eval()
    with torch.no_grad():  # larger weights than at initialisation: logits far from uniform
        for parameter in model.parameters():
            parameter.mul_(3)
    return model


def expected_shapes(model: GPT, B: int, T: int) -> dict[str, tuple]:
    """The table in taps.py, for one pass without a cache."""
    c = model.config
    C, H, D, V = c.n_embd, c.n_head, c.head_size, c.vocab_size
    shapes = {"embed": (B, T, C), "ln_f": (B, T, C), "logits": (B, T, V)}
    if c.position in ("learned", "sinusoidal"):
        shapes["pos"] = (B, T, C)
    for layer in range(c.n_layer):
        block = f"blocks.{layer}"
        shapes.update({f"{block}.{name}": (B, T, C) for name in ("resid_pre", "ln_1", "resid_mid", "ln_2", "resid_post")})
        shapes.update({f"{block}.attn.{name}": (B, H, T, D) for name in ("q", "k", "v", "heads")})
        shapes.update({f"{block}.attn.scores": (B, H, T, T), f"{block}.attn.weights": (B, H, T, T),
                       f"{block}.attn.out": (B, T, C), f"{block}.mlp.hidden": (B, T, 4 * C), f"{block}.mlp.out": (B, T, C)})
    return shapes


@pytest.mark.parametrize("position, attention", SETTINGS)
def test_every_activation_is_recorded_by_name_with_its_shape(position, attention):
    model = model_for(position, attention)
    idx = torch.randint(0, 37, (2, 9))
    with record(model) as passes, torch.no_grad():
        logits, _ = model(idx)
    assert len(passes) == 1
    shapes = {name: tuple(tensor.shape) for name, tensor in passes[0].items()}
    assert shapes == expected_shapes(model, 2, 9)
    acts = passes[0]
    assert_close(acts["logits"], logits, **TOL)
    # The logits again from the recorded final residual stream, through ln_f and the head.
    assert_close(model.lm_head(model.ln_f(acts["blocks.1.resid_post"])), logits, **TOL)
    assert_close(acts["blocks.1.resid_mid"], acts["blocks.1.resid_pre"] + acts["blocks.1.attn.out"], **TOL)
    assert_close(acts["blocks.0.resid_post"], acts["blocks.1.resid_pre"], **TOL)
    assert_close(acts["blocks.0.attn.weights"], torch.softmax(acts["blocks.0.attn.scores"], -1), **TOL)
    assert_close(acts["blocks.0.attn.heads"], acts["blocks.0.attn.weights"] @ acts["blocks.0.attn.v"], **TOL)
    assert model.taps.listeners == [] and all(block.attn.impl == attention for block in model.blocks)


def test_recording_some_names_and_every_step_of_generation():
    model = model_for("rope")
    prompt = torch.randint(0, 37, (1, 5))
    with record(model, names=["blocks.1.attn", "logits"]) as passes:
        out = generate(model, prompt, 4, temperature=0.0)
    assert len(passes) == 4  # the prompt's pass, then one per new token (the last token is never fed)
    assert set(passes[0]) == {f"blocks.1.attn.{n}" for n in ("q", "k", "v", "scores", "weights", "heads", "out")} | {"logits"}
    assert passes[0]["blocks.1.attn.k"].shape == (1, 4, 5, 8)
    for step in range(1, 4):  # one query over the cache of 5 + step positions
        assert passes[step]["blocks.1.attn.q"].shape == (1, 4, 1, 8)
        assert passes[step]["blocks.1.attn.weights"].shape == (1, 4, 1, 5 + step)
    assert [p["logits"][0, -1].argmax().item() for p in passes] == out[0, 5:].tolist()


def test_capture_attention_around_generate_says_it_keeps_the_last_pass():
    model = model_for("learned")
    with pytest.warns(UserWarning, match="keeps only the last"), capture_attention(model) as maps:
        generate(model, torch.randint(0, 37, (1, 4)), 3, temperature=0.0)
    assert maps[0].shape == (1, 4, 1, 6)


@pytest.mark.parametrize("position, attention", SETTINGS)
def test_ablating_a_head_equals_zeroing_its_slice_by_hand(position, attention):
    model = model_for(position, attention)
    idx = torch.randint(0, 37, (2, 7))
    with ablate(model, heads=[(1, 2)]), torch.no_grad():
        ablated, _ = model(idx)
    D = model.config.head_size
    by_hand = model_for(position, attention)
    with torch.no_grad():
        by_hand.blocks[1].attn.c_proj.weight[:, 2 * D : 3 * D] = 0  # head 2's columns of the projection
        expected, _ = by_hand(idx)
        plain, _ = model(idx)
    assert_close(ablated, expected, **TOL)
    assert not torch.allclose(ablated, plain)  # the head mattered, and the model is restored


def test_ablating_an_mlp_and_mean_ablation():
    model = model_for("learned")
    idx = torch.randint(0, 37, (2, 7))
    with ablate(model, mlps=[0]), torch.no_grad():
        ablated, _ = model(idx)
    by_hand = model_for("learned")
    with torch.no_grad():
        by_hand.blocks[0].mlp.c_proj.weight.zero_()
        by_hand.blocks[0].mlp.c_proj.bias.zero_()
        assert_close(ablated, by_hand(idx)[0], **TOL)
    reference = torch.randint(0, 37, (3, 9))
    with record(model, ["blocks.0.attn.heads"]) as passes, torch.no_grad():
        model(reference)
    mean = passes[0]["blocks.0.attn.heads"][:, 1].mean(dim=(0, 1))  # (D,): head 1's mean output on the reference
    with ablate(model, heads=[(0, 1)], how="mean", reference=reference), record(model, ["blocks.0.attn.heads"]) as after, \
            torch.no_grad():
        model(idx)
    assert_close(after[0]["blocks.0.attn.heads"][:, 1], mean.expand(2, 7, -1), **TOL)


def test_mean_ablation_is_causal_and_ablates_in_cached_generation():
    """The means come from a reference pass: changing only the last token changes no earlier
    position's logits, and generating with the cache (one position a pass) still ablates."""
    from minitransformer import generate

    model = model_for("learned").eval()
    reference = torch.randint(0, 37, (4, 12))
    idx = torch.randint(0, 37, (1, 8))
    other = idx.clone()
    other[0, -1] = (idx[0, -1] + 1) % 37
    with ablate(model, heads=[(0, 1), (1, 0)], mlps=[0], how="mean", reference=reference), torch.no_grad():
        first, second = model(idx)[0], model(other)[0]
        ablated_text = generate(model, idx[:, :3], 12, temperature=0.0)
    assert torch.equal(first[:, :-1], second[:, :-1])
    assert not torch.equal(ablated_text, generate(model, idx[:, :3], 12, temperature=0.0))
    with pytest.raises(UserError, match="reference"), ablate(model, heads=[(0, 1)], how="mean"):
        pass


@pytest.mark.parametrize("bad", [dict(heads=[(2, 0)]), dict(heads=[(0, 4)]), dict(mlps=[-1]), dict(how="half")])
def test_ablating_what_does_not_exist_is_a_clear_error(bad):
    with pytest.raises(UserError), ablate(model_for("learned"), **bad):
        pass


@pytest.mark.parametrize("position, attention", SETTINGS)
def test_patching_every_activation_from_prompt_b_gives_b_s_logits(position, attention):
    model = model_for(position, attention)
    a, b = torch.randint(0, 37, (1, 8)), torch.randint(0, 37, (1, 8))
    with record(model) as passes, torch.no_grad():
        b_logits, _ = model(b)
    recorded = {name: tensor for name, tensor in passes[0].items() if name != "logits"}
    with patch(model, recorded), torch.no_grad():
        patched, _ = model(a)
    assert_close(patched, b_logits, **TOL)
    with patch(model, {"blocks.1.resid_post": recorded["blocks.1.resid_post"]}), torch.no_grad():
        assert_close(model(a)[0], b_logits, **TOL)  # the last stream alone decides the logits
    with pytest.raises(UserError, match="same length"), patch(model, recorded), torch.no_grad():
        model(a[:, :5])


@pytest.mark.parametrize("position, attention", SETTINGS)
def test_the_last_layer_of_the_logit_lens_is_the_models_logits(position, attention):
    model = model_for(position, attention)
    idx = torch.randint(0, 37, (2, 6))
    lens = logit_lens(model, idx)
    assert lens.shape == (3, 2, 6, 37)
    with torch.no_grad():
        assert_close(lens[-1], model(idx)[0], **TOL)
        assert_close(lens[0], model.lm_head(model.ln_f(model.wte(idx) + (model.wpe(torch.arange(6)) if model.wpe is not None else 0))), **TOL)
    rows = lens_rows(lens, idx[0].tolist(), str)
    assert len(rows) == 3 * 6 and rows[-1]["p_next"] is None
    probs = torch.softmax(lens[1, 0, 2], -1)
    assert rows[6 + 2]["p_next"] == pytest.approx(probs[idx[0, 3]].item()) and rows[6 + 2]["top"][0][0] == str(probs.argmax().item())
    assert lens_table(rows).count("\n") == 2 + 2 * 3


def test_ablation_losses_rank_every_head():
    model = model_for("learned")
    x, y = torch.randint(0, 37, (4, 12)), torch.randint(0, 37, (4, 12))
    base, losses = ablation_losses(model, x, y)
    assert losses.shape == (2, 4)
    with ablate(model, heads=[(1, 3)]), torch.no_grad():
        expected = torch.nn.functional.cross_entropy(model(x)[0].flatten(0, 1), y.flatten()).item()
    assert losses[1, 3].item() == pytest.approx(expected, rel=1e-5) and base != pytest.approx(expected)


def test_inspect_ablate_prints_the_change_in_loss_and_distribution(tiny_run, capsys):
    from minitransformer.commands.cli import main

    assert main(["inspect", "--checkpoint", str(tiny_run), "--prompt", "ROMEO: But", "--ablate", "1.2",
                 "--ablate", "0.mlp"]) == 0
    out = capsys.readouterr().out
    assert "ablating head 1.2, MLP 0 (zero)" in out and "loss on the prompt's own next tokens" in out
    assert out.count("->") >= 11


def test_inspect_lens_prints_a_row_per_layer(tiny_run, capsys):
    from minitransformer.commands.cli import main

    assert main(["inspect", "--checkpoint", str(tiny_run), "--prompt", "ROMEO", "--lens"]) == 0
    out = capsys.readouterr().out
    assert "top token" in out and "probability of the actual next token" in out
    assert sum(line.strip().startswith(("emb", "L0", "L1")) for line in out.splitlines()) == 6


def test_heads_ranks_every_head_on_the_runs_validation_split(tiny_run, tmp_path, capsys):
    from minitransformer.commands.cli import main
    from minitransformer.commands.heads import rank_heads

    assert main(["heads", str(tiny_run), "--batches", "1"]) == 0
    out = capsys.readouterr().out
    assert "validation split" in out and out.count(". head ") == 2 * 4
    rises = rank_heads(str(tiny_run), batches=1, say=lambda line: None)
    ranked = [line for line in out.splitlines() if ". head " in line]
    layer, head = map(int, ranked[0].split("head ")[1].split(":")[0].split("."))
    assert rises[layer, head] == rises.max()  # the first one listed is the one that matters most
    assert main(["heads", str(tiny_run), "--batches", "0"]) == 2
