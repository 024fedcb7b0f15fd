"""Looking inside: captured attention maps, the inspect and plot commands, and the debugger stop."""

import io
import json
import math
import os
import pdb
import re
import subprocess
import sys

import pytest
import torch
from torch.testing import assert_close

from minitransformer import GPT
from minitransformer.attention import causal_mask
from minitransformer.commands.cli import main
from minitransformer.inspection import break_in_attention, capture_attention, readable_token
from minitransformer.positional import apply_rotary
from tests.helpers import ATTENTIONS, HANG_S, POSITIONS, small_config

from tests.conftest import ROOT, TINY


@pytest.mark.parametrize("position", POSITIONS)
def test_captured_maps_equal_a_recomputation_from_q_and_k(position):
    model = GPT(small_config(position=position)).eval()
    idx = torch.randint(0, 37, (2, 11))
    inputs = {}
    hooks = [block.attn.register_forward_pre_hook(lambda module, args, layer=layer: inputs.__setitem__(layer, args[0]))
             for layer, block in enumerate(model.blocks)]
    with capture_attention(model) as maps:
        model(idx)
    for hook in hooks:
        hook.remove()
    B, T, C, H = 2, 11, 32, 4
    D = C // H
    for layer, block in enumerate(model.blocks):
        q, k, _ = block.attn.c_attn(inputs[layer]).split(C, dim=2)
        q = q.view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, H, D).transpose(1, 2)
        if position == "rope":
            rope = model.rope(torch.arange(T))
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        scores = q @ k.transpose(-2, -1) / math.sqrt(D)
        expected = torch.softmax(scores.masked_fill(~causal_mask(T), float("-inf")), dim=-1)
        assert maps[layer].shape == (B, H, T, T)
        assert_close(maps[layer], expected, atol=1e-6, rtol=1e-5)
        assert torch.all(maps[layer][..., ~causal_mask(T)] == 0)
        assert_close(maps[layer].sum(-1), torch.ones(B, H, T), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_capture_leaves_the_model_as_it_was(attention):
    model = GPT(small_config(attention=attention)).eval()
    idx = torch.randint(0, 37, (1, 9))
    before_state = {key: value.clone() for key, value in model.state_dict().items()}
    before_logits, _ = model(idx)
    with capture_attention(model) as maps:
        during_logits, _ = model(idx)
        assert all(block.attn.impl == "manual" for block in model.blocks)
    assert all(m is not None for m in maps)
    after_logits, _ = model(idx)
    assert all(block.attn.impl == attention for block in model.blocks) and model.taps.listeners == []
    assert_close(during_logits, before_logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(after_logits, before_logits)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before_state[key]), key


def test_readable_tokens_show_whitespace():
    assert readable_token(" the\n") == "␣the⏎"
    assert readable_token("\t") == "⇥"


def test_inspect_prints_labelled_heatmaps_and_next_tokens(tiny_run, capsys):
    assert main(["inspect", "--checkpoint", str(tiny_run), "--prompt", "To be or", "--layer", "1", "--head", "2"]) == 0
    out = capsys.readouterr().out
    assert "layer 1, head 2" in out and "layer 0," not in out
    assert "T o ␣ b e ␣ o r" in out  # the column labels, one per token
    assert re.search(r"^7 +r [ ·░▒▓█]{16}$", out, re.MULTILINE)  # last row: label and 8 two-character cells
    table = out.split("next-token distribution (top 10):\n")[1].strip().splitlines()
    probabilities = [float(line.split("%")[0]) for line in table]
    assert len(table) == 10 and probabilities == sorted(probabilities, reverse=True)


def test_inspect_shows_every_layer_and_head_by_default(tiny_run, capsys):
    assert main(["inspect", "--checkpoint", str(tiny_run), "--prompt", "ab"]) == 0
    assert capsys.readouterr().out.count("most attended") == 2 * 4


def test_inspect_png(tiny_run, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "attention.png"
    assert main(["inspect", "--checkpoint", str(tiny_run), "--prompt", "Hello", "--png", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_inspect_png_without_matplotlib_says_how_to_install(tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("minitransformer.figures.available", lambda: False)
    assert main(["inspect", "--checkpoint", str(tiny_run), "--prompt", "Hello", "--png", str(tmp_path / "a.png")]) == 2
    assert 'pip install -e ".[plot]"' in capsys.readouterr().err


@pytest.mark.parametrize("args, fragment", [
    (["--layer", "5"], "2 layers"),
    (["--head", "-1"], "4 heads"),
    (["--break", "x"], "LAYER.HEAD"),
    (["--break", "0.9"], "4 heads"),
])
def test_inspect_bad_indices(tiny_run, capsys, args, fragment):
    assert main(["inspect", "--checkpoint", str(tiny_run), "--prompt", "Hi", *args]) == 2
    assert fragment in capsys.readouterr().err


ATTENTION_LINES = ["D = q.shape[-1]", "if scale is None:", "scale = 1.0 / math.sqrt(D)", "scores = (q @ k.transpose",
                   "if mask is not None:", "scores = scores.masked_fill", 'scores = tap("scores"', "weights = torch.softmax",
                   'weights = tap("weights"', "dropped = dropout(weights", "out = dropped @ v", 'out = tap("heads"',
                   "return out, weights"]


def stepped_lines(text: str) -> list[str]:
    """The lines pdb showed (`-> ...`) while stepping, in order."""
    return [line[3:].strip() for line in text.splitlines() if line.startswith("-> ")]


def test_break_stops_at_the_first_line_and_n_walks_through_attention():
    model = GPT(small_config(attention="sdpa")).eval()
    commands = io.StringIO("p sorted(locals())\n" + "n\n" * 12 + "p sorted(locals())\np scores.shape\nup\np self.layer\nc\n")
    output = io.StringIO()
    debugger = pdb.Pdb(stdin=commands, stdout=output)
    debugger.use_rawinput = False
    with break_in_attention(model, layer=1, head=3, debugger=debugger), torch.no_grad():
        logits, _ = model(torch.randint(0, 37, (1, 6)))
    text = output.getvalue()
    shown = stepped_lines(text)
    assert len(shown) >= 13 and all(line.startswith(start) for line, start in zip(shown, ATTENTION_LINES))
    assert "['dropout_p', 'k', 'mask', 'q', 'scale', 'tap', 'v']" in text  # at the first line: the arguments only
    assert "['D', 'dropout_p', 'dropped', 'k', 'mask', 'out', 'q', 'scale', 'scores', 'tap', 'v', 'weights']" in text
    assert "torch.Size([1, 4, 6, 6])" in text and "[0, 3]" in text  # the head asked for, in the hint
    assert re.search(r"^\(Pdb\) 1$", text, re.MULTILINE)  # the caller is layer 1's attention module
    assert logits.shape == (1, 6, 37)  # the pass finished after `c`
    assert model.blocks[1].attn.impl == "sdpa" and sys.gettrace() is None


def test_break_without_a_terminal_or_commands_is_one_line_not_a_hang(tiny_run, capsys, monkeypatch):
    """A notebook's `!minitransformer inspect --break`: stdin is a pipe that nobody writes to."""
    reader, writer = os.pipe()
    monkeypatch.setattr(sys, "stdin", os.fdopen(reader))
    monkeypatch.setattr("minitransformer.commands.inspect_command.DEBUGGER_INPUT_WAIT_S", 0.2)
    try:
        assert main(["inspect", "--checkpoint", str(tiny_run), "--prompt", "RO", "--break", "0"]) == 2
    finally:
        os.close(writer)
    assert "break_in_attention" in capsys.readouterr().err


def test_plot_text_chart_without_matplotlib(tiny_run, capsys, monkeypatch):
    monkeypatch.setattr("minitransformer.figures.available", lambda: False)
    assert main(["plot", str(tiny_run), "--png", "ignored.png"]) == 0
    out = capsys.readouterr().out
    assert "matplotlib is not installed" in out
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert f"val {rows[-1]['val_loss']:.4f}" in out
    chart = [line for line in out.split("in-context score")[0].splitlines() if "|" in line]
    assert len(chart) == 12 and any("t" in line.split("|")[1] for line in chart) and any("v" in line.split("|")[1] for line in chart)


def test_plot_png(tiny_run, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "loss.png"
    assert main(["plot", str(tiny_run), "--png", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_metrics_is_a_clear_error(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "no metrics" in capsys.readouterr().err


def experiment_overrides() -> list[list[str]]:
    """The --set overrides of every `minitransformer train` command in docs/experiments.md."""
    text = (ROOT / "docs" / "experiments.md").read_text()
    commands = [line for line in text.splitlines() if line.startswith("minitransformer train")]
    return [re.findall(r"--set (\S+)", command) for command in commands]


def test_experiments_doc_has_experiments():
    assert len(experiment_overrides()) >= 5


@pytest.mark.parametrize("overrides", experiment_overrides(), ids=lambda o: " ".join(o) or "baseline")
def test_every_experiment_runs_on_the_tiny_config(overrides, tmp_path):
    args = ["train", "--config", TINY, "--out", str(tmp_path / "run")]
    for override in overrides:
        if not override.startswith(("train.time_budget_s", "train.max_steps")):
            args += ["--set", override]
    args += ["--set", "train.max_steps=4", "--set", "train.eval_interval=2", "--set", "train.sample_tokens=0",
             "--set", "train.eval_batches=1"]
    assert main(args) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [0, 2, 4] and all(math.isfinite(row["val_loss"]) for row in rows)


def test_head_scores_find_previous_token_and_induction_patterns():
    from minitransformer.inspection import head_scores

    period, T = 5, 10
    previous = torch.zeros(T, T)
    previous[0, 0] = 1.0
    previous[torch.arange(1, T), torch.arange(T - 1)] = 1.0  # each position looks one back
    induction = torch.eye(T)
    induction[torch.arange(period, T), torch.arange(1, T - period + 1)] = 1.0
    induction[torch.arange(period, T), torch.arange(period, T)] = 0.0
    uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1).unsqueeze(1)
    maps = [torch.stack([previous, induction, uniform]).unsqueeze(0)]  # one layer, three heads: (1, 3, T, T)
    prev_scores, induction_scores = head_scores(maps, period)
    assert_close(prev_scores[0], torch.tensor([1.0, 0.0, uniform[torch.arange(1, T), torch.arange(T - 1)].mean()]))
    assert induction_scores[0, 1] == 1.0 and induction_scores[0, 0] == 0.0
    assert 0 < induction_scores[0, 2] < 0.25


def test_the_readmes_pdb_transcript_is_what_pdb_shows(tiny_run):
    """The commands typed in the README's transcript, replayed on the tiny model (the lines pdb
    stops at do not depend on the weights): pdb must stop at exactly the lines the README shows."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- pdb-transcript -->\n```\n", 1)[1].split("\n```", 1)[0]
    commands = [line.removeprefix("(Pdb) ") for line in block.splitlines() if line.startswith("(Pdb) ")]
    shown = [line for line in block.splitlines() if line.startswith("-> ")]
    result = subprocess.run(
        [sys.executable, "-m", "minitransformer", "inspect", "--checkpoint", str(tiny_run), "--prompt", "ROMEO:",
         "--break", "1.1"], input="\n".join(commands) + "\n", capture_output=True, text=True, timeout=HANG_S, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert [line.rstrip() for line in result.stdout.splitlines() if line.startswith("-> ")] == shown
    assert "layer 1" in result.stdout and "p scores[0, 1]" in result.stdout  # the hint names the head's slice
    assert "torch.Size([6, 8])" in result.stdout and "-inf" in result.stdout  # q[0, 1]: (T, D) of the tiny model
    # p weights[0, 1].sum(-1): six rows that each sum to 1 (printed "1." or "1.0000" by rounding)
    rows = [[float(value) for value in found.split(",")] for found in re.findall(r"tensor\(\[([^\]]*)\]\)", result.stdout)]
    assert any(len(row) == 6 and all(abs(value - 1) < 1e-3 for value in row) for row in rows)


def test_most_attended_follows_the_weights_into_the_future():
    """Without the causal mask a query may look ahead: the list names those keys, as the heatmap shows them."""
    from minitransformer.inspection import top_attended

    labels = ["a", "b", "c", "d"]
    weights = torch.tensor([[0.1, 0.0, 0.2, 0.7], [0.0, 0.1, 0.9, 0.0], [0.3, 0.3, 0.4, 0.0], [0.25, 0.25, 0.25, 0.25]])
    lines = top_attended(weights, labels, k=2).splitlines()
    assert "d@3 0.70" in lines[0] and "c@2 0.20" in lines[0]
    assert "c@2 0.90" in lines[1] and "b@1 0.10" in lines[1]
    causal = torch.tensor([[1.0, 0, 0, 0], [0.4, 0.6, 0, 0], [0.2, 0.3, 0.5, 0], [0.1, 0.2, 0.3, 0.4]])
    lines = top_attended(causal, labels, k=3).splitlines()
    assert lines[0].endswith("a@0 1.00")  # masked keys (weight 0) are not listed
    assert lines[1].endswith("b@1 0.60, a@0 0.40")


def test_plot_overlays_several_runs_with_a_legend(tiny_run, tmp_path, capsys, monkeypatch):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    rows = [json.loads(line) for line in (other / "metrics.jsonl").read_text().splitlines()]
    (other / "metrics.jsonl").write_text("".join(json.dumps({**row, "val_loss": row["val_loss"] + 1}) + "\n" for row in rows))
    monkeypatch.setattr("minitransformer.figures.available", lambda: False)
    assert main(["plot", str(tiny_run), str(other)]) == 0
    out = capsys.readouterr().out
    assert f"1 = {tiny_run}:" in out and f"2 = {other}:" in out
    chart = [line.split("|")[1] for line in out.splitlines() if "|" in line]
    assert any("1" in line for line in chart) and any("2" in line for line in chart)
    assert "2" in chart[0] and "1" in chart[-1]  # the other run's val loss is a whole nat higher
    assert main(["plot", str(tiny_run), str(tiny_run)]) == 2


def test_plot_png_of_several_runs(tiny_run, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "runs.png"
    assert main(["plot", str(tiny_run), str(tiny_run / ".." / tiny_run.name / "."), "--png", str(png),
                 "--split", "train"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
