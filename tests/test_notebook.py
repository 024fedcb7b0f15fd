"""The notebooks in docs/ run top to bottom in a real Jupyter kernel, so they never rot, and
show their figures as pictures."""

from pathlib import Path

import pytest

from tests.helpers import HANG_S

DOCS = Path(__file__).parent.parent / "docs"


def run_notebook(name: str, replace: dict[str, str] | None = None) -> list[dict]:
    """Execute docs/<name> (with `replace`'s substitutions in its code); returns every output."""
    nbformat = pytest.importorskip("nbformat", reason="the test extra installs nbformat")
    nbclient = pytest.importorskip("nbclient", reason="the test extra installs nbclient")
    pytest.importorskip("ipykernel", reason="the test extra installs ipykernel")
    notebook = nbformat.read(DOCS / name, as_version=4)
    for cell in notebook.cells:
        for old, new in (replace or {}).items():
            cell.source = cell.source.replace(old, new)
    # Raises CellExecutionError, naming the cell, if any cell fails.
    nbclient.NotebookClient(notebook, timeout=HANG_S, kernel_name="python3",
                            resources={"metadata": {"path": str(DOCS)}}).execute()
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]


def text_of(outputs: list[dict]) -> str:
    return "".join(output.get("text", "") + str(output.get("data", {}).get("text/plain", "")) for output in outputs)


def images_in(outputs: list[dict]) -> int:
    """How many outputs are pictures; "<Figure size ...>" text instead of one fails."""
    pytest.importorskip("matplotlib", reason="the test extra installs matplotlib")
    assert "<Figure size" not in text_of(outputs)
    return sum("image/png" in output.get("data", {}) for output in outputs)


def test_the_walkthrough_notebook_runs_top_to_bottom():
    outputs = run_notebook("walkthrough.ipynb")
    text = text_of(outputs)
    assert "logits recomputed from the last residual stream: True" in text
    assert "Stopped at the first line of scaled_dot_product_attention" in text and "-inf" in text
    assert "probability of the actual next token" in text
    assert any("<iframe srcdoc=" in output.get("data", {}).get("text/html", "") for output in outputs)
    assert images_in(outputs) >= 2  # the loss curve and the attention maps
    # The progress bar is a widget (ipywidgets present), with no warning that it cannot be one.
    stderr = "".join(output.get("text", "") for output in outputs if output.get("name") == "stderr")
    assert "IProgress not found" not in stderr


def test_the_experiments_notebook_shows_both_runs_side_by_side():
    """On the tiny config for 30 steps (the notebook's own are the experiment config's 300)."""
    outputs = run_notebook("experiments.ipynb", {'"../configs/experiment.toml"': '"../configs/tiny.toml"',
                                                 "STEPS = 300": "STEPS = 30"})
    text = text_of(outputs)
    assert "baseline  step 30" in text and "broken    step 30" in text
    assert "--- baseline" in text and "--- broken" in text
    assert images_in(outputs) == 3  # the two loss curves on one figure, one attention figure per model
