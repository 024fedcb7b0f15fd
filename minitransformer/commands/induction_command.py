"""The `induction` command: find a model's induction heads on repeated random tokens, and break them.

It prints induction.induction_report as text: the loss of each half (and at every position, as
a strip of shades), every head's previous-token and induction scores, the heads above the
threshold with their attention on a short repeated sequence, and the second half's loss with
the induction heads switched off, then the previous-token heads too. `--png` draws the same.
"""

import math

import torch

from .. import figures
from ..errors import UserError, user_path
from ..formats.load import load_model
from ..induction import InductionReport, induction_report, repeated_tokens
from ..inspection import capture_attention, heatmap, shade
from ..machine.device import choose_device
from ..machine.files import check_output_file

# The short sequence whose attention is drawn in the terminal for every head named: 2 x SHOWN tokens.
SHOWN = 8


def strip(values: torch.Tensor, high: float) -> str:
    """values (N,) as one line of shades, darker = higher (inspection's shades of value / high)."""
    return "".join(shade(value / high) for value in values.tolist())


def grid(scores: torch.Tensor) -> str:
    """(L, H) scores as a small table, a row per layer."""
    lines = ["        " + "".join(f"  head {head}" for head in range(scores.shape[1]))]
    for layer in range(scores.shape[0]):
        lines.append(f"layer {layer} " + "".join(f"{scores[layer, head]:>8.2f}" for head in range(scores.shape[1])))
    return "\n".join(lines)


def describe(report: InductionReport, threshold: float, vocab_size: int) -> str:
    """The report as the lines the command prints."""
    R, B = report.length, report.tokens.shape[0]
    ratio = report.second / report.first
    lines = [f"repeated random tokens: {B} sequences of {R} random tokens, then the same {R} again",
             f"loss, first half: {report.first:.3f} nats (a model that cannot copy: about ln V = "
             f"{math.log(vocab_size):.2f}); second half: {report.second:.3f} nats "
             f"(in-context score {ratio:.2f})",
             "loss at every position (darker = higher; the repeat starts at |):",
             "  " + strip(report.per_position[: R - 1], report.first) + "|" + strip(report.per_position[R - 1:], report.first),
             "", "previous-token scores (mean attention on the token just before):", grid(report.previous),
             "", f"induction scores (mean attention on the token after the earlier occurrence, {R - 1} back):",
             grid(report.induction), ""]
    name = lambda heads: ", ".join(f"{layer}.{head}" for layer, head in heads) or "none"  # noqa: E731
    lines.append(f"previous-token heads (score >= {threshold}): {name(report.previous_heads)}")
    lines.append(f"induction heads (score >= {threshold}, from layer 1 on): {name(report.induction_heads)}")
    if report.without_induction is None:
        lines.append("no induction head above the threshold, so nothing to switch off: train longer (configs/"
                     "induction.toml) or lower --threshold")
        return "\n".join(lines)
    lines += ["", "switching heads off (zero ablation), the second half's loss:",
              f"  as trained:                           {report.second:.3f}",
              f"  induction heads off:                  {report.without_induction:.3f} (closes "
              f"{report.gap_closed():.0%} of the gap to the first half's {report.first:.3f})",
              f"  previous-token heads off too:         {report.without_both:.3f}"]
    return "\n".join(lines)


def show_patterns(model, heads: list[tuple[int, int]], seed: int) -> str:
    """Each head's attention on one sequence of SHOWN random tokens repeated, as a heatmap."""
    tokens = repeated_tokens(1, SHOWN, model.config.vocab_size, torch.Generator().manual_seed(seed),
                             model.wte.weight.device)  # (1, 2 x SHOWN)
    with capture_attention(model) as maps, torch.no_grad():
        model(tokens)
    labels = [f"{'ab'[t >= SHOWN]}{t % SHOWN}" for t in range(2 * SHOWN)]  # a0..a7 then b0..b7: b_i repeats a_i
    return "\n\n".join(heatmap(maps[layer][0, head], labels, f"head {layer}.{head} on {SHOWN} tokens a0..a7 "
                                                              f"repeated as b0..b7")
                       for layer, head in heads)


def find_induction_heads(checkpoint: str, length: int = 40, batch: int = 16, threshold: float = 0.4, seed: int = 0,
                         png: str | None = None, device: str = "cpu", say=print) -> InductionReport:
    """What `minitransformer induction` prints (the arguments are its flags); returns the report."""
    if png is not None:
        figures.check_available("--png")
        check_output_file(png, "--png")
    folder = user_path(checkpoint)
    if not folder.exists():
        raise UserError(f"{checkpoint} does not exist; train the lesson's model first (about 70 s on a "
                        f"laptop): minitransformer train --config configs/induction.toml, or pass --checkpoint RUN")
    if (folder / "last").is_dir():
        # A run folder: the model as its training ended (last/), not its lowest val loss (best/):
        # copying random tokens is not what the text's val loss rewards, so best/ may predate the heads.
        folder = folder / "last"
    model, _ = load_model(folder, choose_device(device))
    say(f"model: {folder}")
    report = induction_report(model, length, batch, threshold, seed)
    say(describe(report, threshold, model.config.vocab_size))
    named = [*report.previous_heads, *report.induction_heads]
    if named:
        say("\n" + show_patterns(model, named, seed))
    if png is not None:
        figures.save(figures.plot_induction(report), png)
        say(f"wrote {png}")
    return report
