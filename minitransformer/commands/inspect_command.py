"""The `inspect` command: show a trained model's attention for a prompt, or stop inside it.

Prints, for each selected layer and head, the attention matrix as a terminal heatmap labelled
with the prompt's tokens and the tokens each position attends to most; then the model's
next-token distribution. `--png` also draws the heatmaps with matplotlib (the optional `plot`
extra), and `--break LAYER[.HEAD]` stops pdb inside that layer's attention function.
`--ablate L.H` (or `L.mlp`) shows what switching a head or an MLP off does to the next-token
distribution and to the loss on the prompt; `--lens` prints the logit lens; `--html FILE` writes
the clickable explorer (explorer.py).
"""

import bdb
import io
import select
import sys

import torch
import torch.nn.functional as F

from ..activations import ablate, lens_rows, lens_table, logit_lens
from .. import figures
from ..errors import UserError
from ..explorer import explore
from ..formats.load import load_model
from ..inspection import (break_in_attention, capture_attention, heatmap, manual_attention, next_token_table, token_label,
                          top_attended)
from ..machine.device import choose_device
from ..machine.files import check_output_file
from ..training.data import get_batch
from .heads import BATCH, held_out_tokens

LABEL_WIDTH = 6  # characters of a token's text shown in labels; BPE tokens can be long


def parse_break(text: str, n_layer: int, n_head: int) -> tuple[int, int]:
    """'2' -> (2, 0); '2.3' -> (2, 3); checked against the model's size."""
    layer_text, _, head_text = text.partition(".")
    try:
        layer, head = int(layer_text), int(head_text or 0)
    except ValueError:
        raise UserError(f"--break expects LAYER or LAYER.HEAD, e.g. 1 or 1.2; got {text!r}")
    check_index("layer", layer, n_layer)
    check_index("head", head, n_head)
    return layer, head


# How long a stdin that is neither a terminal nor a pipe with commands may stay silent.
DEBUGGER_INPUT_WAIT_S = 2.0


def check_debugger_input() -> None:
    """pdb reads its commands from stdin: a terminal, or a pipe with commands in it. A stdin that
    is neither and stays silent (a notebook's `!minitransformer inspect --break`) would leave pdb
    waiting forever: refuse it with the way to do the same from Python."""
    stdin = sys.stdin
    if stdin is None:
        ready = False
    elif stdin.isatty():
        return
    else:
        try:
            ready = bool(select.select([stdin], [], [], DEBUGGER_INPUT_WAIT_S)[0])  # commands, or a pipe's end
        except (OSError, ValueError, io.UnsupportedOperation):  # no descriptor to wait on (a notebook kernel)
            return
    if not ready:
        raise UserError(
            "--break needs a terminal to type pdb commands in, or commands piped on stdin; this stdin has "
            "neither (in a notebook, `!minitransformer inspect --break` cannot be typed into). From Python: "
            "`with break_in_attention(model, LAYER, HEAD): model(idx)`, from minitransformer.inspection"
        )


def parse_ablations(texts: list[str], n_layer: int, n_head: int) -> tuple[list[tuple[int, int]], list[int]]:
    """['2.1', '0.mlp'] -> ([(2, 1)], [0]): heads as LAYER.HEAD, MLPs as LAYER.mlp."""
    heads, mlps = [], []
    for text in texts:
        layer_text, _, what = text.partition(".")
        try:
            layer = int(layer_text)
            head = None if what == "mlp" else int(what)
        except ValueError:
            raise UserError(f"--ablate expects LAYER.HEAD or LAYER.mlp, e.g. 1.2 or 0.mlp; got {text!r}")
        check_index("layer", layer, n_layer)
        if head is None:
            mlps.append(layer)
        else:
            check_index("head", head, n_head)
            heads.append((layer, head))
    return heads, mlps


def prompt_loss(logits: torch.Tensor, ids: list[int]) -> float | None:
    """Mean loss of predicting each next token of the prompt from logits (1, T, V); None for one token."""
    if len(ids) < 2:
        return None
    targets = torch.tensor(ids[1:], device=logits.device)
    return F.cross_entropy(logits[0, :-1].float(), targets).item()


def show_ablation(model, idx: torch.Tensor, ids: list[int], ablations: list[str], how: str, label,
                  reference: torch.Tensor | None = None) -> None:
    """Print the next-token distribution and the prompt's loss with and without the ablation."""
    heads, mlps = parse_ablations(ablations, model.config.n_layer, model.config.n_head)
    with manual_attention(model), torch.no_grad():
        before, _ = model(idx)  # (1, T, V)
        with ablate(model, heads, mlps, how, reference):
            after, _ = model(idx)
    what = ", ".join([f"head {layer}.{head}" for layer, head in heads] + [f"MLP {layer}" for layer in mlps])
    print(f"ablating {what} ({how}):")
    loss_before, loss_after = prompt_loss(before, ids), prompt_loss(after, ids)
    if loss_before is not None:
        print(f"loss on the prompt's own next tokens: {loss_before:.4f} -> {loss_after:.4f} "
              f"({loss_after - loss_before:+.4f})")
    p_before = torch.softmax(before[0, -1].float(), -1)
    p_after = torch.softmax(after[0, -1].float(), -1)
    print("next token: probability before -> after (the 10 most likely before, then after)")
    for i in p_before.topk(min(10, p_before.shape[0])).indices.tolist():
        print(f"  {p_before[i]:6.1%} -> {p_after[i]:6.1%}  {label(i)}")
    print("most likely after the ablation:")
    print(next_token_table(after[0, -1], label, k=5))


def check_one_mode(break_at, ablations, lens: bool, html, layer, head, png, how=None) -> None:
    """Each of --break, --ablate, --lens and --html shows something of its own, and the heatmaps
    (the default) are the only output that --layer, --head and --png choose from: a combination
    is refused in one line rather than silently doing one of them."""
    modes = [flag for flag, given in (("--break", break_at is not None), ("--ablate", bool(ablations)),
                                      ("--lens", lens), ("--html", html is not None)) if given]
    if len(modes) > 1:
        raise UserError(f"{' and '.join(modes)} each show something of their own; pass one of them per command")
    if how is not None and not ablations:
        raise UserError(f"--how {how} says how --ablate switches a head off; add --ablate L.H (e.g. --ablate 0.1), "
                        "or drop --how")
    choosers = [flag for flag, given in (("--layer", layer is not None), ("--head", head is not None),
                                         ("--png", png is not None)) if given]
    if modes and choosers:
        chosen = "--break LAYER.HEAD" if modes[0] == "--break" else f"{modes[0]} shows every layer and head"
        raise UserError(f"{' and '.join(choosers)} choose the attention heatmaps, which {modes[0]} does not print "
                        f"({chosen}); drop {'it' if len(choosers) == 1 else 'them'}, or run without {modes[0]}")


def check_index(name: str, value: int, count: int) -> None:
    if not 0 <= value < count:
        raise UserError(f"--{name} {value} does not exist: this model has {count} {name}s, numbered 0 to {count - 1}")


def inspect_model(
    checkpoint: str,
    prompt: str,
    layer: int | None = None,
    head: int | None = None,
    png: str | None = None,
    break_at: str | None = None,
    device: str = "cpu",
    ablations: list[str] | None = None,
    how: str | None = None,
    lens: bool = False,
    html: str | None = None,
) -> None:
    """What `minitransformer inspect` prints (see the module's docstring); the arguments are its
    flags (how: with ablations, "zero" when not given)."""
    check_one_mode(break_at, ablations, lens, html, layer, head, png, how)
    how = how or "zero"
    if png is not None:
        figures.check_available("--png")
        check_output_file(png, "--png")
    if html is not None:
        check_output_file(html, "--html")
    torch_device = choose_device(device)
    model, tokenizer = load_model(checkpoint, torch_device)
    config = model.config
    ids = tokenizer.encode(prompt)
    if not ids:
        raise UserError("the prompt is empty; give at least one character with --prompt")
    if len(ids) > config.block_size:
        raise UserError(f"the prompt has {len(ids)} tokens; this model reads at most block_size = {config.block_size}")
    idx = torch.tensor([ids], device=torch_device)  # (1, T)
    labels = [token_label(tokenizer, i)[:LABEL_WIDTH] for i in ids]

    if break_at is not None:
        stop_layer, stop_head = parse_break(break_at, config.n_layer, config.n_head)
        check_debugger_input()
        try:
            with break_in_attention(model, stop_layer, stop_head), torch.no_grad():
                model(idx)
        except bdb.BdbQuit:
            print("left the debugger (quit)")
            return
        print("the forward pass finished; run without --break to see the attention heatmaps")
        return

    label = lambda i: token_label(tokenizer, i)  # noqa: E731
    if ablations:
        reference = None
        if how == "mean":  # the means come from held-out text, never from the prompt itself
            tokens, source = held_out_tokens(checkpoint, None, tokenizer)
            width = min(config.block_size, 256, len(tokens) - 1)
            reference = get_batch(tokens, BATCH, width, torch.Generator().manual_seed(1), torch_device)[0]
            print(f"mean ablation: the means come from {BATCH} windows of {width} tokens of {source}")
        show_ablation(model, idx, ids, ablations, how, label, reference)
        return
    if lens:
        print(lens_table(lens_rows(logit_lens(model, idx), ids, label)))
        return
    if html is not None:
        path = explore(model, tokenizer, prompt).save(html)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): open it in a browser; it needs no network")
        return

    for name, value, count in (("layer", layer, config.n_layer), ("head", head, config.n_head)):
        if value is not None:
            check_index(name, value, count)
    layers = [layer] if layer is not None else list(range(config.n_layer))
    heads = [head] if head is not None else list(range(config.n_head))
    with capture_attention(model) as maps, torch.no_grad():
        logits, _ = model(idx)  # (1, T, V)
    print(f"prompt: {len(ids)} tokens: {' '.join(labels)}\n")
    for shown_layer in layers:
        for shown_head in heads:
            weights = maps[shown_layer][0, shown_head]  # (T, T)
            print(heatmap(weights, labels, f"layer {shown_layer}, head {shown_head}"))
            print("most attended (token@position weight):")
            print(top_attended(weights, labels) + "\n")
    print("next-token distribution (top 10):")
    print(next_token_table(logits[0, -1], label))
    if png is not None:
        figures.save(figures.plot_attention(maps, labels, layers, heads), png)
        print(f"\nwrote {png}")
