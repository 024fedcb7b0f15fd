"""The `heads` command: which attention heads matter, measured by switching each one off.

For a checkpoint, it computes the loss on held-out text, then the same loss with each head
ablated in turn (activations.ablation_losses), and prints every head ranked by how much the loss
rises, with a layers x heads grid; `--png` draws the grid with matplotlib.

Design choices:
- The text is the run's own validation split when the checkpoint sits in a run folder with its
  tokenised data, so the heads are judged on text the model never trained on; otherwise the last
  10% of a corpus (Tiny Shakespeare by default), tokenised with the model's tokenizer.
- Windows are drawn with a fixed seed: the same command gives the same ranking.
"""


import numpy as np
import torch

from .. import figures
from ..activations import ablation_losses, head_means
from ..errors import UserError, user_path
from ..formats.load import load_model
from ..inspection import shade
from ..machine.device import choose_device
from ..machine.files import check_output_file
from ..training.corpus import SHIPPED_CORPUS, read_corpus
from ..training.data import bins_match, get_batch, read_meta

BATCH = 8  # windows per batch


def held_out_tokens(checkpoint: str, corpus: str | None, tokenizer) -> tuple[np.ndarray, str]:
    """Token ids to measure the loss on, and where they came from."""
    if corpus is None:
        for folder in (user_path(checkpoint), user_path(checkpoint).parent):
            meta = read_meta(folder / "data")
            if meta is not None and meta["tokenizer"] == tokenizer.describe() and (folder / "data" / "val.bin").is_file():
                # The checks training makes before it reuses the data: sizes as meta.json says, every id
                # within the vocabulary (a damaged val.bin would index past the embedding).
                if not bins_match(folder / "data", meta, tokenizer.vocab_size):
                    raise UserError(f"{folder / 'data'} does not match its meta.json (a file's size, or a token id past "
                                    "the vocabulary); delete that data/ folder (the next training prepares it again), "
                                    "or pass --corpus FILE")
                return np.memmap(folder / "data" / "val.bin", dtype=meta["dtype"], mode="r"), f"{folder / 'data'}'s validation split"
        corpus = SHIPPED_CORPUS
    text = read_corpus(corpus)
    held_out = text[int(len(text) * 0.9):]
    return np.array(tokenizer.encode(held_out), dtype=np.int64), f"the last 10% of {corpus}"


def grid(rises: torch.Tensor) -> str:
    """Layers x heads as shaded cells, darker for a larger rise in loss."""
    top = max(rises.max().item(), 1e-9)
    lines = ["        " + "".join(f"h{head:<3}" for head in range(rises.shape[1]))]
    for layer in range(rises.shape[0]):
        cells = "".join(shade(max(rise, 0.0) / top) * 3 + " " for rise in rises[layer].tolist())
        lines.append(f"layer {layer:<2}{cells}")
    return "\n".join(lines) + "\n(darker: the loss rises more without that head)"


def rank_heads(checkpoint: str, corpus: str | None = None, batches: int = 4, how: str = "zero",
               png: str | None = None, device: str = "cpu", say=print) -> torch.Tensor:
    """Print every head ranked by the rise in loss when it is ablated; returns the rises (L, H)."""
    if batches < 1:
        raise UserError(f"--batches must be at least 1, got {batches}")
    if png is not None:
        figures.check_available("--png")
        check_output_file(png, "--png")
    torch_device = choose_device(device)
    model, tokenizer = load_model(checkpoint, torch_device)
    tokens, source = held_out_tokens(checkpoint, corpus, tokenizer)
    T = min(model.config.block_size, 256)
    if len(tokens) <= T:
        raise UserError(f"{source} has {len(tokens)} tokens, too few for windows of {T}; give a longer --corpus")
    generator = torch.Generator().manual_seed(0)
    # Mean ablation's means come from windows of their own, never from the pass being measured.
    # Taken once, for every head and batch.
    reference = get_batch(tokens, BATCH, T, torch.Generator().manual_seed(1), torch_device)[0] if how == "mean" else None
    means = head_means(model, reference) if how == "mean" else None
    # One batch of BATCH windows at a time, averaged: memory stays that of one batch, however many.
    base, losses = 0.0, torch.zeros(model.config.n_layer, model.config.n_head)
    for _ in range(batches):
        x, y = get_batch(tokens, BATCH, T, generator, torch_device)  # (BATCH, T) each
        batch_base, batch_losses = ablation_losses(model, x, y, how, means=means)
        base, losses = base + batch_base / batches, losses + batch_losses.cpu() / batches
    rises = losses - base  # (L, H)
    say(f"loss on {batches * BATCH} windows of {T} tokens from {source}: {base:.4f}; with one head ablated ({how}):")
    order = sorted(((rises[l, h].item(), l, h) for l in range(rises.shape[0]) for h in range(rises.shape[1])), reverse=True)
    for rank, (rise, layer, head) in enumerate(order, 1):
        say(f"{rank:>4}. head {layer}.{head}: {losses[layer, head]:.4f} ({rise:+.4f})")
    say(grid(rises))
    if png is not None:
        figures.save(figures.plot_head_ablation(rises, base), png)
        say(f"wrote {png}")
    return rises
