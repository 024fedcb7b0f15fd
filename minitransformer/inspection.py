"""Looking inside a model: capture attention maps, draw them in the terminal, stop in the debugger.

- `capture_attention(model)`: a context manager that collects every layer's attention weights
  (B, H, T, T) of the last pass run inside it, through the model's taps (taps.py); the
  activations module records every activation by name, and changes them.
- `readable_token`, `token_label`, `heatmap`, `top_attended`, `next_token_table`: text renderings for a terminal.
- `head_scores`: how much each head acts as a previous-token head and as an induction head.
- `break_in_attention(model, layer, head)`: stops Python's debugger at the first line of
  `scaled_dot_product_attention` in one layer, to step through it line by line: scores, mask,
  softmax, dropout, out, each a local variable once its line has run.

Design choices:
- Both context managers switch every attention module to the manual path for their duration,
  whatever the config says (PyTorch's fused kernel computes no weights to show and has no
  Python frame to stop in), and restore the model exactly as it was afterwards.
- The debugger is entered with a small trace function, not by editing the attention function:
  it watches for that function's frame in the chosen layer and hands it to pdb as the frame is
  entered, so pdb stops before the first line and `n` walks the rest.
"""

import pdb
import sys
import warnings
from contextlib import contextmanager

import torch

from .attention import scaled_dot_product_attention
from .errors import UserError
from .model import GPT
from .bpe import EncodingTokenizer, readable, readable_token

SHADES = " ·░▒▓█"  # darker = more weight
SHADE_EDGES = (0.02, 0.1, 0.25, 0.5, 0.75)  # weight thresholds between consecutive shades


@contextmanager
def manual_attention(model: GPT):
    """Run every attention module on the manual path inside the block; restore it afterwards."""
    saved = [block.attn.impl for block in model.blocks]
    for block in model.blocks:
        block.attn.impl = "manual"
    try:
        yield
    finally:
        for block, impl in zip(model.blocks, saved):
            block.attn.impl = impl


@contextmanager
def listening(model: GPT, listener, observe: bool = False):
    """Add a listener to the model's taps (taps.py) on the explicit attention path, for the block;
    observe=True adds it as an observer, which sees each tensor after every listener's change."""
    added_to = model.taps.observers if observe else model.taps.listeners
    with manual_attention(model):
        added_to.append(listener)
        try:
            yield
        finally:
            added_to.remove(listener)


@contextmanager
def capture_attention(model: GPT):
    """Yield a list whose item `layer` becomes that layer's weights (B, H, T, T) after a pass.

    with capture_attention(model) as maps:
        model(idx)
    maps[0]  # (B, H, T, T): layer 0's attention, each row a probability distribution

    It keeps the last pass's weights: around `generate`, that is the last step's (one query
    over the cache); a warning says so. activations.record keeps every pass.
    """
    maps: list[torch.Tensor | None] = [None] * len(model.blocks)
    passes = [0]

    def store(name: str, tensor: torch.Tensor) -> None:
        if name.endswith(".attn.weights"):
            layer = int(name.split(".")[1])
            if layer == 0 and maps[0] is not None:
                passes[0] += 1
            maps[layer] = tensor.detach()

    with listening(model, store, observe=True):
        yield maps
    if passes[0]:
        warnings.warn(f"capture_attention saw {passes[0] + 1} forward passes and keeps only the last one's "
                      "weights; to keep every pass (each step of generate), use minitransformer.activations.record",
                      stacklevel=3)


def token_label(tokenizer, token_id: int) -> str:
    """How a token reads: its text with whitespace made visible ("␣the"), or, for a byte-level BPE
    token holding only part of a character, its bytes in hex ("⟨e6 97⟩")."""
    if isinstance(tokenizer, EncodingTokenizer):  # byte-level BPE: GPT-2's or one learned here (bpe.py)
        return readable(tokenizer.piece(token_id))
    return readable_token(tokenizer.decode([token_id]))


def shade(weight: float) -> str:
    return SHADES[sum(weight >= edge for edge in SHADE_EDGES)]


def heatmap(weights: torch.Tensor, labels: list[str], title: str) -> str:
    """A (T, T) attention matrix as text: one row per query, one 2-character cell per key.

    Row labels are the query tokens; the key tokens are written vertically above the columns.
    """
    T = weights.shape[0]
    width = max(len(label) for label in labels)
    row_label_width = width + len(str(T - 1)) + 2
    lines = [title]
    for depth in range(width):  # column labels, written top to bottom
        lines.append(" " * row_label_width + "".join(f"{label[depth] if depth < len(label) else ' ':<2}" for label in labels))
    for i in range(T):
        cells = "".join(shade(w) * 2 for w in weights[i].tolist())
        lines.append(f"{i:>{len(str(T - 1))}} {labels[i]:>{width}} {cells}")
    legend = ", ".join(f"{SHADES[k + 1]} >= {edge}" for k, edge in enumerate(SHADE_EDGES))
    lines.append(f"(rows: queries, columns: keys; {legend})")
    return "\n".join(lines)


def top_attended(weights: torch.Tensor, labels: list[str], k: int = 3) -> str:
    """For each position (a row of weights (T, T)), the k keys it attends to most, with their
    weights: read from the whole row, so a model without the causal mask shows the future keys it
    looks at; keys of weight 0 (masked) are left out."""
    lines = []
    for i in range(weights.shape[0]):
        values, where = weights[i].topk(min(k, weights.shape[1]))
        kept = [(v, j) for v, j in zip(values.tolist(), where.tolist()) if v > 0] or [(values[0].item(), where[0].item())]
        targets = ", ".join(f"{labels[j]}@{j} {v:.2f}" for v, j in kept)
        lines.append(f"  {i:>3} {labels[i]:<8} -> {targets}")
    return "\n".join(lines)


def next_token_table(logits: torch.Tensor, label, k: int = 10) -> str:
    """The k most likely next tokens for logits (V,), with their probabilities; label(id) names a token."""
    probs = torch.softmax(logits.float(), dim=-1)
    values, ids = probs.topk(min(k, probs.shape[0]))
    return "\n".join(f"  {p:6.1%}  {label(i)}" for p, i in zip(values.tolist(), ids.tolist()))


def head_scores(maps: list[torch.Tensor], period: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two scores per layer and head, each (L, H), from captured maps (B, H, T, T) of sequences
    that repeat themselves after `period` tokens, averaged over the batch:

    - previous-token score: the mean weight a position gives the position just before it;
    - induction score: the mean weight a position in the repeat gives the token that followed
      its earlier occurrence (t - period + 1): "last time this came, that came next".
    """
    weights = torch.stack(maps).float().mean(dim=1)  # (L, B, H, T, T) -> (L, H, T, T)
    T = weights.shape[-1]
    t = torch.arange(1, T)
    previous = weights[:, :, t, t - 1].mean(-1)  # (L, H)
    t = torch.arange(period, T)
    induction = weights[:, :, t, t - period + 1].mean(-1)  # (L, H)
    return previous, induction


@contextmanager
def break_in_attention(model: GPT, layer: int, head: int = 0, debugger: pdb.Pdb | None = None):
    """Inside the block, the next pass stops pdb at the first line of layer `layer`'s attention
    function, `scaled_dot_product_attention`, before anything is computed.

    From there `n` runs one line at a time: the scale, the scores, the mask, the softmax, dropout,
    the output; `p scores[0, head]` prints one head's (T, S) slice as it appears, `c` finishes the
    pass. Works wherever pdb reads commands: a terminal, a pipe, or a Jupyter kernel's input box.
    """
    for value, what, count in ((layer, "layer", model.config.n_layer), (head, "head", model.config.n_head)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
            raise UserError(f"break_in_attention: {what} {value!r} does not exist; this model has {what}s 0 to {count - 1}")
    debugger = debugger or pdb.Pdb()
    code = scaled_dot_product_attention.__code__

    def stop_at_first_line(frame) -> None:
        debugger.message(
            f"\nStopped at the first line of scaled_dot_product_attention, layer {layer}. Head {head} is "
            f"[0, {head}] of q, k, v, scores, weights and out, which are (B, H, T, ...). Try: p q[0, {head}].shape, "
            f"n (run one line), p scores[0, {head}], p mask, p weights[0, {head}].sum(-1), ll (the function), "
            "c (finish the pass)."
        )
        debugger.set_trace(frame)  # pdb stops at the frame's first line event: the first line


    # A tracer may already be installed (coverage, an IDE's debugger): every other frame stays
    # its to trace, and it is put back afterwards.
    previous = sys.gettrace()

    def watch_calls(frame, event, arg):
        if frame.f_code is code:
            stop_at_first_line(frame)
            return debugger.trace_dispatch
        return previous(frame, event, arg) if previous is not None else None

    def start_watching(module, args):
        sys.settrace(watch_calls)

    hook = model.blocks[layer].attn.register_forward_pre_hook(start_watching)
    try:
        with manual_attention(model):
            yield
    finally:
        hook.remove()
        sys.settrace(previous)
