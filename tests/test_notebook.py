"""docs/walkthrough.ipynb runs top to bottom in a real Jupyter kernel, so it never rots."""

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).parent.parent / "docs" / "walkthrough.ipynb"


def test_the_walkthrough_notebook_runs_top_to_bottom(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="the test extra installs nbformat")
    nbclient = pytest.importorskip("nbclient", reason="the test extra installs nbclient")
    pytest.importorskip("ipykernel", reason="the test extra installs ipykernel")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    # Raises CellExecutionError, naming the cell, if any cell fails.
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    text = "".join(output.get("text", "") + str(output.get("data", {}).get("text/plain", "")) for output in outputs)
    assert "logits recomputed from the last residual stream: True" in text
    assert "Stopped at the first line of scaled_dot_product_attention" in text and "-inf" in text
    assert "probability of the actual next token" in text
    assert any("<iframe srcdoc=" in output.get("data", {}).get("text/html", "") for output in outputs)
