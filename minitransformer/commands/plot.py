"""The `plot` command: train and val loss against steps, from a run's metrics.jsonl.

With matplotlib installed (the optional `plot` extra) and `--png FILE`, it draws a PNG; otherwise
it prints a compact text chart, so the command works everywhere.
"""

import sys

from .. import figures
from ..errors import UserError, user_path
from ..machine.files import check_output_file
from ..training.run_folder import read_metrics_rows

CHART_HEIGHT = 12
CHART_WIDTH = 60


def read_metrics(run_dir: str) -> list[dict]:
    """The run's metrics rows; damaged lines are dropped with a warning on stderr."""
    path = user_path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"no metrics at {path}; pass a run folder written by `minitransformer train`")
    warnings: list[str] = []
    rows = read_metrics_rows(path, say=warnings.append)
    if not rows:
        raise UserError(f"{path} has no readable rows; train for at least one evaluation first")
    for warning in warnings:
        print(warning, file=sys.stderr)
    return rows


def shown(value: float) -> str:
    """A loss for the chart: 4 decimals, or 4 significant digits when it is huge (a diverged run)."""
    return f"{value:.4f}" if abs(value) < 1e6 else f"{value:.4g}"


def text_chart(rows: list[dict]) -> str:
    """Losses on a character grid: t for train, v for val, * where both fall in one cell."""
    steps = [row["step"] for row in rows]
    # The grid is drawn on losses divided by the largest magnitude, so that any finite losses (a
    # diverging run's 1e308 beside -1e308) keep finite differences; the labels scale back.
    scale = max(abs(row[key]) for row in rows for key in ("train_loss", "val_loss")) or 1.0
    rows_scaled = [{**row, "train_loss": row["train_loss"] / scale, "val_loss": row["val_loss"] / scale} for row in rows]
    values = [row[key] for row in rows_scaled for key in ("train_loss", "val_loss")]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    last_step = max(steps) or 1
    grid = [[" "] * CHART_WIDTH for _ in range(CHART_HEIGHT)]
    for row in rows_scaled:
        column = round(row["step"] / last_step * (CHART_WIDTH - 1))
        for key, mark in (("train_loss", "t"), ("val_loss", "v")):
            line = round((high - row[key]) / span * (CHART_HEIGHT - 1))
            grid[line][column] = "*" if grid[line][column] not in (" ", mark) else mark
    lines = []
    for i, cells in enumerate(grid):
        value = (high - i * span / (CHART_HEIGHT - 1)) * scale
        label = f"{shown(value):>7}" if i in (0, CHART_HEIGHT // 2, CHART_HEIGHT - 1) else " " * 7
        lines.append(f"{label} |{''.join(cells)}")
    lines.append(" " * 8 + "+" + "-" * CHART_WIDTH)
    lines.append(" " * 9 + f"{0:<{CHART_WIDTH - len(str(last_step))}}{last_step}  step")
    best = min(rows, key=lambda row: row["val_loss"])
    lines.append(f"t = train loss, v = val loss, * = both. Last: step {rows[-1]['step']}, train "
                 f"{shown(rows[-1]['train_loss'])}, val {shown(rows[-1]['val_loss'])}; best val {shown(best['val_loss'])} "
                 f"at step {best['step']}")
    return "\n".join(lines)


def plot_run(run_dir: str, png: str | None = None) -> None:
    rows = read_metrics(run_dir)
    if png is not None:
        check_output_file(png, "--png")
    if png is not None and figures.available():
        figures.save(figures.plot_loss(rows, str(run_dir)), png)
        print(f"wrote {png}")
        return
    if png is not None:
        print(f"matplotlib is not installed, so here is a text chart instead; for a PNG: {figures.INSTALL}")
    print(text_chart(rows))
