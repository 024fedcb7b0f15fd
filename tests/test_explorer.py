"""The explorer page (explorer.py): its embedded data checked in Python always; in a real,
headless Chromium (the system's, never a downloaded one) when one is installed."""

import base64
import html
import json
import re
import shutil

import numpy as np
import pytest
import torch

from minitransformer import GPT
from minitransformer.activations import ablation_losses, lens_rows, logit_lens
from minitransformer.commands.cli import main
from minitransformer.explorer import QUANT, explore
from minitransformer.inspection import capture_attention, token_label
from minitransformer.tokenizer import CharTokenizer
from tests.helpers import small_config

TEXT = "ROMEO: But soft, what light through yonder window breaks?"


@pytest.fixture(scope="module")
def model_and_tokenizer():
    tokenizer = CharTokenizer.from_text(TEXT + "</script>&<>'\"")
    torch.manual_seed(3)
    model = GPT(small_config(vocab_size=tokenizer.vocab_size, block_size=80, position="rope")).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(3)
    return model, tokenizer


def embedded(page: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)[1].replace("<\\/", "</"))


def unpack(data: dict) -> np.ndarray:
    """The weights as the page's JavaScript reads them: (L, H, T, T)."""
    q = np.frombuffer(base64.b64decode(data["weights"]), dtype="<u2").astype(np.float64) / data["quant"]
    L, H, T = data["layers"], data["heads"], len(data["tokens"])
    rows, cols = np.tril_indices(T)
    weights = np.zeros((L, H, T, T))
    weights[:, :, rows, cols] = q.reshape(L, H, -1)
    return weights


def test_the_page_holds_the_models_numbers_and_needs_no_network(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompt = TEXT + "</script>"  # a token that would end the script tag if it were not escaped
    view = explore(model, tokenizer, prompt)
    data = embedded(view.html)
    ids = tokenizer.encode(prompt)
    assert data["tokens"] == [token_label(tokenizer, i) for i in ids]
    with capture_attention(model) as maps, torch.no_grad():
        model(torch.tensor([ids]))
    expected = torch.stack([m[0] for m in maps]).numpy()
    assert np.abs(unpack(data) - expected).max() <= 0.5 / QUANT + 1e-7
    rows = lens_rows(logit_lens(model, torch.tensor([ids])), ids, lambda i: token_label(tokenizer, i))
    assert [(r["top"], r["p_next"]) for r in data["lens"]] == \
        [(r["top"][0][0], None if r["p_next"] is None else round(r["p_next"], 4)) for r in rows]
    base, losses = ablation_losses(model, torch.tensor([ids[:-1]]), torch.tensor([ids[1:]]))
    assert data["ablation"]["base"] == round(base, 4)
    assert np.allclose(data["ablation"]["rises"], (losses - base).numpy(), atol=1e-4)
    assert not re.search(r"(src|href)\s*=|https?://|@import|fetch\(", view.html)  # nothing to download
    frame = view._repr_html_()
    assert frame.startswith("<iframe srcdoc=") and html.unescape(frame.split('"')[1]) == view.html


def test_inspect_html_writes_the_page(tiny_run, tmp_path, capsys):
    assert main(["inspect", "--checkpoint", str(tiny_run), "--prompt", "ROMEO:", "--html", str(tmp_path / "e.html")]) == 0
    data = embedded((tmp_path / "e.html").read_text())
    assert data["layers"] == 2 and data["heads"] == 4 and len(data["tokens"]) == 6
    assert "open it in a browser" in capsys.readouterr().out


def chromium_or_skip():
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium installed: `apt-get install -y chromium` runs the browser tests")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e \".[test]\"")
    return browser, sync_playwright


def test_hovering_a_token_shows_its_weights_in_a_real_browser(model_and_tokenizer, tmp_path):
    browser_path, sync_playwright = chromium_or_skip()
    model, tokenizer = model_and_tokenizer
    path = explore(model, tokenizer, TEXT).save(tmp_path / "explorer.html")
    ids = tokenizer.encode(TEXT)
    with capture_attention(model) as maps, torch.no_grad():
        model(torch.tensor([ids]))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = browser.new_page()
        errors, requests = [], []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("request", lambda request: requests.append(request.url))
        page.goto(path.as_uri())
        for layer, head, query in ((0, 0, 5), (1, 2, 17), (1, 3, len(ids) - 1)):
            page.click(f"#grid canvas[data-layer='{layer}'][data-head='{head}']")
            page.hover(f"#headtokens .tok[data-i='{query}']")
            shown = page.eval_on_selector_all(
                "#weights tbody tr", "rows => rows.map(r => [+r.dataset.j, +r.querySelector('.w').textContent])")
            assert sorted(j for j, _ in shown) == list(range(query + 1))  # the query and every key before it
            for j, weight in shown:
                assert weight == pytest.approx(maps[layer][0, head, query, j].item(), abs=1e-4)
            assert f"layer {layer}, head {head}, query {query}" in page.text_content("#which")
        browser.close()
    assert errors == [] and requests == [path.as_uri()]
