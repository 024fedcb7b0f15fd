"""Induction heads (induction.py): the repeated-tokens test, the scores, the training rows that
grow the heads, and the command that finds and breaks them."""

import math

import pytest
import torch
import torch.nn.functional as F

from minitransformer import GPT, ModelConfig
from minitransformer.commands.cli import main
from minitransformer.config import DataConfig
from minitransformer.errors import UserError
from minitransformer.induction import (half_losses, in_context_score, induction_report, position_losses, repeated_rows,
                                       repeated_tokens)
from minitransformer.inspection import head_scores
from minitransformer.training.data import bits_per_byte, mix_repeated


def attention_only(**overrides) -> GPT:
    config = dict(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=32, mlp=False, position="rope")
    return GPT(ModelConfig(**{**config, **overrides})).eval()


def test_repeated_tokens_repeat_their_first_half():
    tokens = repeated_tokens(3, 7, 50, torch.Generator().manual_seed(0))
    assert tokens.shape == (3, 14) and torch.equal(tokens[:, :7], tokens[:, 7:])
    assert tokens.min() >= 0 and tokens.max() < 50
    assert torch.equal(tokens, repeated_tokens(3, 7, 50, torch.Generator().manual_seed(0)))


def test_repeated_rows_are_periodic_with_a_period_in_range():
    rows = repeated_rows(20, 65, (4, 9), 50, torch.Generator().manual_seed(1))
    for row in rows:
        period = next(p for p in range(1, 66) if torch.equal(row[p:], row[:-p]))
        assert 1 <= period <= 9  # the segment's length (or a divisor of it, for a segment that repeats itself)


def test_training_rows_replace_the_share_asked_and_keep_targets_shifted():
    x = torch.arange(8 * 16).view(8, 16)
    y = x + 1
    data = DataConfig(repeated_share=0.5, repeated_min=3, repeated_max=5)
    mx, my = mix_repeated(x, y, data, 50, torch.Generator().manual_seed(0))
    assert torch.equal(mx[4:], x[4:]) and torch.equal(my[4:], y[4:])  # the other half: the text's windows
    assert torch.equal(mx[:4, 1:], my[:4, :-1])  # y is x shifted by one: the same window
    assert not torch.equal(mx[:4], x[:4])
    # Two ranks draw the same rows and keep disjoint halves of them: together one process's batch.
    halves = [mix_repeated(x[:2], y[:2], DataConfig(repeated_share=1.0), 50, torch.Generator().manual_seed(3), rank, 2)[0]
              for rank in (0, 1)]
    whole = mix_repeated(x[:4], y[:4], DataConfig(repeated_share=1.0), 50, torch.Generator().manual_seed(3))[0]
    assert torch.equal(torch.cat(halves), whole)


def test_position_losses_are_each_positions_cross_entropy():
    model = attention_only()
    tokens = repeated_tokens(4, 6, 50, torch.Generator().manual_seed(2))
    logits, _ = model(tokens[:, :-1])
    expected = torch.stack([F.cross_entropy(logits[:, t], tokens[:, t + 1]) for t in range(11)])
    assert torch.allclose(position_losses(model, tokens), expected, atol=1e-6)
    per_position = torch.arange(11.0)
    assert half_losses(per_position, 6).tolist() == [2.0, 8.0]  # positions 0-4, then 6-10 (5 predicts the first repeat)


def test_head_scores_read_the_previous_token_and_the_induction_stripe():
    T, period = 10, 5
    previous_map = torch.zeros(1, 1, T, T)
    induction_map = torch.zeros(1, 1, T, T)
    for t in range(T):
        previous_map[0, 0, t, max(t - 1, 0)] = 1.0
        induction_map[0, 0, t, t - period + 1 if t >= period else 0] = 1.0
    previous, induction = head_scores([previous_map, induction_map], period)
    assert previous[0, 0] == 1.0 and induction[1, 0] == 1.0 and induction[0, 0] == 0.0


def test_an_untrained_model_has_no_induction_and_a_score_near_one():
    torch.manual_seed(0)
    model = attention_only()
    report = induction_report(model, length=10, batch=4)
    assert report.induction_heads == [] and report.without_induction is None and report.gap_closed() is None
    assert report.first == pytest.approx(math.log(50), rel=0.1) and 0.8 < in_context_score(model) < 1.2
    assert report.per_position.shape == (19,) and report.patterns == {}


def test_a_copying_model_is_found_and_breaking_its_heads_costs_what_it_gained(monkeypatch):
    """Attention weights set by hand to a previous-token head (0.0) and an induction head (1.1):
    the scores name exactly those heads, and ablating them is what the report measures."""
    torch.manual_seed(0)
    model = attention_only()
    length = 8

    def weights_of(layer: int, T: int) -> torch.Tensor:  # (H, T, T): one designed head, one uniform
        designed = torch.zeros(T, T)
        for t in range(T):
            designed[t, max(t - 1, 0) if layer == 0 else (t - length + 1 if t >= length else 0)] = 1.0
        uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
        return torch.stack([designed, uniform]) if layer == 0 else torch.stack([uniform, designed])

    def listener(name: str, tensor: torch.Tensor):
        if name.endswith("attn.weights"):
            return weights_of(int(name.split(".")[1]), tensor.shape[-1]).expand_as(tensor).to(tensor.dtype)
        return None

    from minitransformer.inspection import listening

    with listening(model, listener):
        report = induction_report(model, length=length, batch=4, threshold=0.9)
    assert report.previous_heads == [(0, 0)] and report.induction_heads == [(1, 1)]
    assert report.without_induction is not None and report.patterns[(1, 1)][length, 1] == 1.0


@pytest.mark.parametrize("kwargs, message", [(dict(length=1), "length"), (dict(length=40), "context"),
                                             (dict(length=8, batch=0), "batch"), (dict(length=8, threshold=0.0), "threshold"),
                                             (dict(length=2.5), "length")])
def test_the_report_refuses_what_it_cannot_measure(kwargs, message):
    with pytest.raises(UserError, match=message):
        induction_report(attention_only(), **kwargs)


def test_bits_per_byte_converts_nats_per_token():
    assert bits_per_byte(math.log(2), 1.0) == pytest.approx(1.0)
    assert bits_per_byte(4 * math.log(2), 4.0) == pytest.approx(1.0)  # 4 bits a token over 4 bytes a token


def test_an_attention_only_model_has_no_mlp_and_cannot_be_exported(tmp_path, capsys):
    from minitransformer.activations import ablate, tap_names
    from minitransformer.formats.gpt2 import check_exportable

    model = attention_only()
    assert all(block.mlp is None for block in model.blocks) and not any("mlp" in name for name in tap_names(model))
    with pytest.raises(UserError, match="no MLPs"):
        with ablate(model, mlps=[0]):
            pass
    with pytest.raises(UserError, match="model.mlp = false"):
        check_exportable(model.config)


def test_training_logs_the_in_context_score_and_bits_per_byte(run_dir, capsys):
    from tests.conftest import TINY

    assert main(["train", "--config", TINY, "--out", str(run_dir), "--set", "train.max_steps=20", "--set",
                 "train.eval_interval=10", "--set", "train.sample_tokens=0", "--set", "model.mlp=false", "--set",
                 "data.repeated_share=0.5"]) == 0
    out = capsys.readouterr().out
    import json

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < row["in_context"] < 2 and row["val_bpb"] > 0 for row in rows)
    # Tiny Shakespeare by characters: one byte a token, so bits per byte = nats / ln 2.
    assert rows[-1]["val_bpb"] == pytest.approx(rows[-1]["val_loss"] / math.log(2), rel=1e-3)
    assert f"({rows[-1]['val_bpb']:.3f} bits per byte), in-context {rows[-1]['in_context']:.2f}" in out


def test_the_command_finds_nothing_in_an_untrained_run_and_says_what_to_do(tiny_run, capsys):
    assert main(["induction", "--checkpoint", str(tiny_run), "--length", "10", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "first half" in out and "previous-token scores" in out and f"model: {tiny_run / 'last'}" in out
    assert main(["induction", "--checkpoint", str(tiny_run), "--length", "100"]) == 2
    assert "context" in capsys.readouterr().err


def test_the_command_without_a_run_says_how_to_train_one(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["induction"]) == 2
    err = capsys.readouterr().err
    assert "configs/induction.toml" in err and err.count("\n") == 1
