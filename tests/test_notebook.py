"""The notebooks in docs/ run top to bottom in a real Jupyter kernel, so they never rot, and
show their figures as pictures."""

from pathlib import Path

import pytest

from tests.helpers import HANG_S

DOCS = Path(__file__).parent.parent / "docs"


@pytest.fixture(autouse=True)
def kernel_temporary_folder(tmp_path, monkeypatch):
    """The kernel inherits TMPDIR: the scratch runs the notebooks make with tempfile.mkdtemp (which
    a learner may keep) go into this test's folder, which pytest clears, not the machine's /tmp."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))


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
    "def split_heads(x, n_head):": "    B, T, C = x.shape\n    return x.view(B, T, n_head, C // n_head).transpose(1, 2)",
    "def merge_heads(x):": "    B, H, T, D = x.shape\n    return x.transpose(1, 2).reshape(B, T, H * D)",
    "def sinusoidal_positions(n_positions, C):": (
        "    w = 10000.0 ** (-torch.arange(0, C, 2) / C)\n    a = torch.outer(torch.arange(float(n_positions)), w)\n"
        "    return torch.stack((a.sin(), a.cos()), -1).reshape(n_positions, C)"),
    "def apply_rotary(x, cos, sin):": ("    u, w = x[..., 0::2], x[..., 1::2]\n"
                                       "    return torch.stack((u * cos - w * sin, u * sin + w * cos), -1).flatten(-2)"),
    "def layer_norm(x, weight, bias, eps=1e-5):": ("    mean = x.mean(-1, keepdim=True)\n    var = x.var(-1, keepdim=True, unbiased=False)\n"
                                                   "    return (x - mean) / torch.sqrt(var + eps) * weight + bias"),
    "def gelu(x):": "    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))",
    "def mlp(x, c_fc, c_proj):": "    return c_proj(gelu(c_fc(x)))",
    "def block(x, ln_1, attn, ln_2, mlp):": "    x = x + attn(ln_1(x))\n    return x + mlp(ln_2(x))",
    "def cross_entropy(logits, targets):": "    return (torch.logsumexp(logits, -1) - logits[torch.arange(len(targets)), targets]).mean()",
    "def next_token_probs(logits, temperature=1.0, top_k=None, top_p=None):": (
        "    logits = logits / temperature\n    if top_k is not None:\n"
        "        logits = logits.masked_fill(logits < torch.topk(logits, top_k).values[:, -1:], float('-inf'))\n"
        "    probs = logits.softmax(-1)\n    if top_p is not None:\n        p, order = probs.sort(-1, descending=True)\n"
        "        drop = p.cumsum(-1) - p >= top_p\n        drop[:, 0] = False\n"
        "        probs = torch.zeros_like(probs).scatter(-1, order, p.masked_fill(drop, 0.0))\n    return probs"),
    "def kv_cache_update(past_k, past_v, k, v):": "    return torch.cat((past_k, k), dim=2), torch.cat((past_v, v), dim=2)",
    "def cache_positions(past, T):": "    return torch.arange(past, past + T)",
    "def merge_pair(ids, pair, new_id):": ("    out, i = [], 0\n    while i < len(ids):\n"
                                          "        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):\n"
                                          "            out.append(new_id)\n            i += 2\n"
                                          "        else:\n            out.append(ids[i])\n            i += 1\n    return out"),
    "def repeat_twice(first):": "    return torch.cat((first, first), dim=1)",
    "def head_scores(maps, period):": (
        "    w = torch.stack(maps).mean(1)\n    T = w.shape[-1]\n    t = torch.arange(1, T)\n"
        "    previous = w[:, :, t, t - 1].mean(-1)\n    t = torch.arange(period, T)\n"
        "    return previous, w[:, :, t, t - period + 1].mean(-1)"),
    "def half_losses(per_position, length):": (
        "    return torch.stack((per_position[:length - 1].mean(), per_position[length:].mean()))"),
}
STUB_BODY = "\n    raise NotImplementedError  # your code here"


def filled(solutions: dict) -> dict[str, str]:
    return {signature + STUB_BODY: signature + "\n" + body for signature, body in solutions.items()}


def test_the_practice_notebook_has_every_exercise_and_is_all_green_with_the_solutions_filled_in():
    from minitransformer.practice.exercises import EXERCISES

    assert len(SOLUTIONS) == len(EXERCISES)
    text = text_of(run_notebook("practice.ipynb", filled(SOLUTIONS)))
    assert text.count(": passed (") == len(EXERCISES) and "FAILED" not in text
    assert "your pieces: attention, split_heads, merge_heads, apply_rotary, layer_norm, gelu, cross_entropy" in text
    assert "passed: the same loss, the same text, and every activation agrees with ours" in text


def test_the_practice_notebook_names_a_catalogued_mistake():
    wrong = dict(SOLUTIONS)
    wrong["def attention(q, k, v, mask=None):"] = wrong["def attention(q, k, v, mask=None):"].replace(
        "math.sqrt(q.shape[-1])", "q.shape[-1]")
    text = text_of(run_notebook("practice.ipynb", filled(wrong)))
    assert "attention: FAILED" in text and "scales the scores by 1/D instead of 1/sqrt(D)" in text
    assert "the activations part first at blocks.0.attn.weights" in text


def test_the_induction_notebook_runs_on_a_tiny_setting_with_its_pictures_and_exercises():
    """40 steps instead of 1,500 (no heads form so soon: the notebook says so and still draws)."""
    exercises = {signature: body for signature, body in SOLUTIONS.items()
                 if signature.split("(")[0][4:] in ("repeat_twice", "head_scores", "half_losses")}
    outputs = run_notebook("induction.ipynb", {"max_steps=1500": "max_steps=40", "eval_interval=100": "eval_interval=20",
                                               **filled(exercises)})
    text = text_of(outputs)
    assert "first half" in text and "induction scores (layers x heads)" in text
    assert text.count(": passed (") == 3 and "FAILED" not in text
    assert images_in(outputs) == 2  # the loss with the in-context score, and the four induction pictures
