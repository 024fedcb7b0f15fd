"""The `plot` command: train and val loss against steps, from a run's metrics.jsonl; given
several runs, one loss of each overlaid, with a legend (to compare experiments).

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


def grid_chart(series: list[tuple[str, list[int], list[float]]], height: int = CHART_HEIGHT) -> list[str]:
    """Lines of a character grid drawing each series (mark, steps, values) with its mark, and *
    where two marks fall in one cell; the step axis runs from 0 to the last step of any series."""
    # The grid is drawn on values divided by the largest magnitude, so that any finite losses (a
    # diverging run's 1e308 beside -1e308) keep finite differences; the labels scale back.
    scale = max(abs(value) for _, _, values in series for value in values) or 1.0
    scaled = [[value / scale for value in values] for _, _, values in series]
    low, high = min(min(values) for values in scaled), max(max(values) for values in scaled)
    span = (high - low) or 1.0
    last_step = max(max(steps) for _, steps, _ in series) or 1
    grid = [[" "] * CHART_WIDTH for _ in range(height)]
    for (mark, steps, _), values in zip(series, scaled):
        for step, value in zip(steps, values):
            column = round(step / last_step * (CHART_WIDTH - 1))
            line = round((high - value) / span * (height - 1))
            grid[line][column] = "*" if grid[line][column] not in (" ", mark) else mark
    lines = []
    for i, cells in enumerate(grid):
        value = (high - i * span / (height - 1)) * scale
        label = f"{shown(value):>7}" if i in (0, height // 2, height - 1) else " " * 7
        lines.append(f"{label} |{''.join(cells)}")
    lines.append(" " * 8 + "+" + "-" * CHART_WIDTH)
    lines.append(" " * 9 + f"{0:<{CHART_WIDTH - len(str(last_step))}}{last_step}  step")
    return lines


def summary(rows: list[dict]) -> str:
    best = min(rows, key=lambda row: row["val_loss"])
    return (f"last: step {rows[-1]['step']}, train {shown(rows[-1]['train_loss'])}, val {shown(rows[-1]['val_loss'])}; "
            f"best val {shown(best['val_loss'])} at step {best['step']}")


def text_chart(rows: list[dict]) -> str:
    """One run's losses on a character grid: t for train, v for val, * where both fall in one cell."""
    steps = [row["step"] for row in rows]
    lines = grid_chart([("t", steps, [row["train_loss"] for row in rows]), ("v", steps, [row["val_loss"] for row in rows])])
    lines.append(f"t = train loss, v = val loss, * = both. {summary(rows).capitalize()}")
    scored = [row for row in rows if "in_context" in row]
    if scored:  # the phase change: where induction heads form, this drops (induction.py)
        lines += ["", "in-context score (second half's loss / first half's, on repeated random tokens):",
                  *grid_chart([("i", [row["step"] for row in scored], [row["in_context"] for row in scored])], height=6),
                  f"last: {scored[-1]['in_context']:.2f} (1: no in-context learning; near 0: induction heads copy)"]
    return "\n".join(lines)


# The marks of several runs on one text chart, in the order they are named.
RUN_MARKS = "123456789abcdefghijklmnopqrstuvwxyz"


def compare_chart(runs: dict[str, list[dict]], split: str = "val") -> str:
    """Several runs' `split` loss overlaid on one character grid, each run drawn with its own mark
    (1, 2, ...), and a legend naming the runs."""
    series = [(mark, [row["step"] for row in rows], [row[f"{split}_loss"] for row in rows])
              for mark, rows in zip(RUN_MARKS, runs.values())]
    lines = [f"{split} loss of {len(runs)} runs", *grid_chart(series)]
    lines += [f"{mark} = {name}: {summary(rows)}" for mark, (name, rows) in zip(RUN_MARKS, runs.items())]
    lines.append("* = two runs in one cell")
    return "\n".join(lines)


def plot_runs(run_dirs: list[str], png: str | None = None, split: str = "val") -> None:
    """One run: its train and val loss. Several: their `split` loss overlaid, with a legend."""
    if not run_dirs:
        raise UserError("plot takes at least one run folder")
    if len(run_dirs) > len(RUN_MARKS):
        raise UserError(f"plot overlays at most {len(RUN_MARKS)} runs; got {len(run_dirs)}")
    if len(set(run_dirs)) != len(run_dirs):
        raise UserError("a run folder is named twice; name each run once")
    runs = {str(run_dir): read_metrics(run_dir) for run_dir in run_dirs}
    if png is not None:
        check_output_file(png, "--png")
    if png is not None and figures.available():
        figure = figures.plot_loss(*runs.values(), str(run_dirs[0])) if len(runs) == 1 else \
            figures.compare_loss(runs, split)
        figures.save(figure, png)
        print(f"wrote {png}")
        return
    if png is not None:
        print(f"matplotlib is not installed, so here is a text chart instead; for a PNG: {figures.INSTALL}")
    print(text_chart(*runs.values()) if len(runs) == 1 else compare_chart(runs, split))
