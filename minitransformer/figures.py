"""Pictures with matplotlib (the optional `plot` extra): loss curves, attention maps, head ablations.

Each function returns a matplotlib `Figure`: in Jupyter it shows as a picture when it is a
cell's value, and `figure.savefig("x.png")` writes it (the `plot`, `inspect --png` and
`heads --png` commands do).

Design choices:
- Figures are made with matplotlib's object-oriented `Figure`, never pyplot, so no global figure
  list grows and the notebook's backend is left as it is.
- Without pyplot, Jupyter's inline backend never registers itself, and a bare `Figure` shows as
  the text `<Figure size 700x400 with 1 Axes>`. So the figures are `NotebookFigure`s: a `Figure`
  with `_repr_png_`, which Jupyter (IPython's display) calls to show it as a PNG image.
"""

import functools
import importlib
import io

import torch

from .errors import UserError, user_path
from .machine.files import write_atomically

INSTALL = 'pip install -e ".[plot]" (or pip install matplotlib)'


def available() -> bool:
    """True when matplotlib can be imported."""
    try:
        importlib.import_module("matplotlib.figure")
    except ImportError:
        return False
    return True


def check_available(flag: str) -> None:
    """Refuse a flag that draws with matplotlib when it is not installed, before any work."""
    if not available():
        raise UserError(f"{flag} needs matplotlib: {INSTALL}")


@functools.cache
def notebook_figure_class() -> type:
    """matplotlib's Figure, shown by Jupyter as a PNG image (made once, when matplotlib is first needed)."""
    from matplotlib.figure import Figure

    class NotebookFigure(Figure):
        """A Figure that Jupyter displays as an image when it is a cell's value."""

        def _repr_png_(self) -> bytes:
            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=100)
            return buffer.getvalue()

    return NotebookFigure


def new_figure(width: float, height: float):
    if not available():
        raise UserError(f"drawing needs matplotlib: {INSTALL}")
    return notebook_figure_class()(figsize=(width, height), layout="tight")


def plot_loss(rows: list[dict], title: str = ""):
    """Train and val loss against steps, from metrics rows (train()'s metrics, or metrics.jsonl);
    below them the in-context score (induction.py) where the rows have it: the phase change."""
    scored = [row for row in rows if "in_context" in row]
    figure = new_figure(7, 6 if scored else 4)
    axes = figure.subplots(2 if scored else 1, 1, sharex=True, squeeze=False, height_ratios=[2, 1] if scored else None)
    ax = axes[0][0]
    steps = [row["step"] for row in rows]
    ax.plot(steps, [row["train_loss"] for row in rows], label="train", marker=".")
    ax.plot(steps, [row["val_loss"] for row in rows], label="val", marker=".")
    ax.set_ylabel("loss (cross-entropy, nats per token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    if scored:
        below = axes[1][0]
        below.plot([row["step"] for row in scored], [row["in_context"] for row in scored], marker=".", color="C2")
        below.set_ylabel("in-context score\n(2nd half / 1st half)")
        below.set_ylim(0, max(1.05, max(row["in_context"] for row in scored)))
        below.grid(alpha=0.3)
    axes[-1][0].set_xlabel("step")
    return figure


def plot_induction(report):
    """induction.InductionReport as four pictures: the loss at every position of the repeated
    tokens, both scores for every head, the first induction head's attention (the stripe R - 1
    to the left of the diagonal), and the second half's loss with the heads switched off."""
    figure = new_figure(12, 8)
    (losses, scores), (pattern, bars) = figure.subplots(2, 2)
    R = report.length
    losses.plot(range(1, 2 * R), report.per_position.numpy(), marker=".")
    losses.axvline(R, color="grey", linestyle="--")
    losses.set_xlabel("position of the predicted token (the repeat starts at the dashed line)")
    losses.set_ylabel("loss (nats)")
    losses.set_title(f"first half {report.first:.2f}, second half {report.second:.2f} nats")
    losses.grid(alpha=0.3)
    L, H = report.previous.shape
    grid = torch.cat([report.previous, torch.full((L, 1), float("nan")), report.induction], dim=1)  # (L, 2H + 1)
    image = scores.imshow(grid.numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
    scores.set_xticks(list(range(H)) + list(range(H + 1, 2 * H + 1)), [str(h) for h in range(H)] * 2)
    scores.set_yticks(range(L))
    scores.set_xlabel("head: previous-token scores | induction scores")
    scores.set_ylabel("layer")
    figure.colorbar(image, ax=scores)
    if report.induction_heads:
        layer, head = report.induction_heads[0]
        pattern.imshow(report.patterns[(layer, head)].numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
        pattern.set_title(f"induction head {layer}.{head} on the repeated tokens")
        pattern.set_xlabel("key")
        pattern.set_ylabel("query")
    else:
        pattern.set_axis_off()
        pattern.set_title("no induction head above the threshold")
    names = ["first half", "second half"]
    values = [report.first, report.second]
    if report.without_induction is not None:
        names += ["2nd, induction\nheads off", "2nd, previous-token\nheads off too"]
        values += [report.without_induction, report.without_both]
    bars.bar(names, values, color=["C0", "C1", "C3", "C4"][: len(values)])
    bars.set_ylabel("mean loss (nats)")
    bars.set_title("switching the heads off")
    return figure


def compare_loss(runs: dict[str, list[dict]], split: str = "val"):
    """One split's loss against steps for several runs on one axes: {name: metrics rows}."""
    figure = new_figure(7, 4)
    ax = figure.add_subplot()
    for name, rows in runs.items():
        ax.plot([row["step"] for row in rows], [row[f"{split}_loss"] for row in rows], label=name, marker=".")
    ax.set_xlabel("step")
    ax.set_ylabel(f"{split} loss (nats per token)")
    ax.grid(alpha=0.3)
    ax.legend()
    return figure


def plot_attention(maps: list[torch.Tensor], labels: list[str], layers: list[int] | None = None,
                   heads: list[int] | None = None):
    """A grid of attention maps (batch item 0), one row per layer and one column per head, the
    axes labelled with the tokens; maps as capture_attention or record give them."""
    layers = list(range(len(maps))) if layers is None else layers
    heads = list(range(maps[0].shape[1])) if heads is None else heads
    T = len(labels)
    size = max(2.5, 0.25 * T)
    figure = new_figure(size * len(heads), size * len(layers))
    axes = figure.subplots(len(layers), len(heads), squeeze=False)
    for row, layer in enumerate(layers):
        for column, head in enumerate(heads):
            ax = axes[row][column]
            ax.imshow(maps[layer][0, head].float().cpu().numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {layer}, head {head}", fontsize=9)
            ax.set_xticks(range(T), labels, rotation=90, fontsize=7)
            ax.set_yticks(range(T), labels, fontsize=7)
            ax.set_xlabel("key", fontsize=8)
            ax.set_ylabel("query", fontsize=8)
    return figure


def plot_head_ablation(rises: torch.Tensor, base: float):
    """The rise in loss when each head is switched off, as a layers x heads grid."""
    figure = new_figure(1 + 0.6 * rises.shape[1], 1 + 0.5 * rises.shape[0])
    ax = figure.add_subplot()
    image = ax.imshow(rises.numpy(), cmap="magma")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(f"loss rise without each head (base {base:.3f})", fontsize=9)
    figure.colorbar(image, ax=ax)
    return figure


def save(figure, path: str) -> None:
    """Write a figure to a file (its format from the name's suffix), whole or not at all."""
    path = user_path(path)
    file_format = path.suffix.lstrip(".").lower() or "png"
    try:
        write_atomically(path, lambda temp: figure.savefig(temp, format=file_format, dpi=120))
    except OSError as error:
        raise UserError(f"cannot write {path} ({error.strerror}); choose another file")
    except ValueError as error:  # a format matplotlib does not know
        raise UserError(f"cannot write {path}: {error}; use a name ending in .png, .svg or .pdf")
