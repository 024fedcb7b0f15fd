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


# The practice notebook's stubs, filled in as a learner would (each written her own way).
SOLUTIONS = {
    "def softmax(x, dim=-1):": "    e = (x - x.amax(dim, keepdim=True)).exp()\n    return e / e.sum(dim, keepdim=True)",
    "def causal_mask(T, past=0):": "    return torch.ones(T, past + T, dtype=torch.bool).tril(past)",
    "def attention(q, k, v, mask=None):": ("    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])\n"
                                           "    if mask is not None:\n        scores = scores.masked_fill(~mask, float('-inf'))\n"
                                           "    weights = torch.softmax(scores, dim=-1)\n    return weights @ v, weights"),
    "def layer_norm(x, weight, bias, eps=1e-5):": ("    mean = x.mean(-1, keepdim=True)\n    var = x.var(-1, keepdim=True, unbiased=False)\n"
                                                   "    return (x - mean) / torch.sqrt(var + eps) * weight + bias"),
    "def gelu(x):": "    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))",
    "def cross_entropy(logits, targets):": "    return (torch.logsumexp(logits, -1) - logits[torch.arange(len(targets)), targets]).mean()",
    "def next_token_probs(logits, temperature=1.0, top_k=None, top_p=None):": (
        "    logits = logits / temperature\n    if top_k is not None:\n"
        "        logits = logits.masked_fill(logits < torch.topk(logits, top_k).values[:, -1:], float('-inf'))\n"
        "    probs = logits.softmax(-1)\n    if top_p is not None:\n        p, order = probs.sort(-1, descending=True)\n"
        "        drop = p.cumsum(-1) - p >= top_p\n        drop[:, 0] = False\n"
        "        probs = torch.zeros_like(probs).scatter(-1, order, p.masked_fill(drop, 0.0))\n    return probs"),
}
STUB_BODY = "\n    raise NotImplementedError  # your code here"


def filled(solutions: dict) -> dict[str, str]:
    return {signature + STUB_BODY: signature + "\n" + body for signature, body in solutions.items()}


def test_the_practice_notebook_is_all_green_with_the_solutions_filled_in():
    text = text_of(run_notebook("practice.ipynb", filled(SOLUTIONS)))
    assert text.count(": passed (") == len(SOLUTIONS) and "FAILED" not in text
    assert "your pieces: attention, layer_norm, gelu, cross_entropy" in text and "every activation agrees with ours" in text


def test_the_practice_notebook_names_a_catalogued_mistake():
    wrong = dict(SOLUTIONS)
    wrong["def attention(q, k, v, mask=None):"] = wrong["def attention(q, k, v, mask=None):"].replace(
        "math.sqrt(q.shape[-1])", "q.shape[-1]")
    text = text_of(run_notebook("practice.ipynb", filled(wrong)))
    assert "attention: FAILED" in text and "scales the scores by 1/D instead of 1/sqrt(D)" in text
    assert "they part first at blocks.0.attn.weights" in text
