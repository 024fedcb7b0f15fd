"""An explorer you can click: one self-contained HTML page of a prompt's attention, logit lens and
ablations, for a browser or inline in Jupyter.

    from minitransformer.explorer import explore
    view = explore(model, tokenizer, "ROMEO: But soft")
    view            # in Jupyter: shows inline
    view.save("attention.html")   # the same page as a file (`inspect --html FILE` writes it too)

The page shows the prompt's tokens, a layers x heads grid of attention thumbnails (click one to
choose that head), a head view (hover or click a token: the tokens it attends to light up, with
their weights listed), the logit lens (each layer's top guess per position) and, per head, how
much the loss on the prompt rises when that head is switched off.

Design choices:
- One file and nothing else: the data is JSON in a <script> tag and the drawing is a hundred
  lines of inline JavaScript on <canvas>; no network, no CDN, so it works offline and when sent
  by e-mail. In Jupyter it sits in an iframe (`srcdoc`), so its script runs in every front end.
- The weights are stored as 16-bit integers (weight x 65535, rounded: 1.5e-5 apart), base64
  encoded, and for a causal model only the lower triangle: a 256-token prompt on a 6-layer,
  6-head model is about 3 MB.
"""

import base64
import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .activations import ablation_losses, lens_rows, logit_lens
from .errors import UserError, user_path
from .inspection import capture_attention, token_label
from .machine.files import write_atomically
from .model import GPT

QUANT = 65535  # weights are stored as round(weight * QUANT) in 16 bits


@dataclass(frozen=True)
class Explorer:
    """The page, as HTML text; shows itself in Jupyter and saves itself as a file."""

    html: str

    def _repr_html_(self) -> str:
        return (f'<iframe srcdoc="{html.escape(self.html, quote=True)}" style="width:100%;height:760px;border:0" '
                'title="minitransformer explorer"></iframe>')

    def save(self, path: str | Path) -> Path:
        """Write the page to path, whole or not at all."""
        path = user_path(path)
        try:
            write_atomically(path, lambda temp: temp.write_text(self.html, encoding="utf-8"))
        except OSError as error:
            raise UserError(f"cannot write {path} ({error.strerror}); choose another file")
        return path


def packed_weights(maps: list[torch.Tensor], causal: bool) -> str:
    """Every layer's and head's (T, T) weights of batch item 0 as base64 of little-endian uint16,
    layer by layer, head by head, row by row (row i: keys 0..i when causal, else all T keys)."""
    weights = torch.stack([layer_map[0] for layer_map in maps]).float()  # (L, H, T, T)
    T = weights.shape[-1]
    if causal:
        rows, cols = torch.tril_indices(T, T)
        weights = weights[:, :, rows, cols]  # (L, H, T (T + 1) / 2)
    quantised = (weights.clamp(0, 1) * QUANT).round().to(torch.int32).numpy().astype("<u2")
    return base64.b64encode(quantised.tobytes()).decode("ascii")


@torch.no_grad()
def explore(model: GPT, tokenizer, prompt: str, lens: bool = True, ablation: bool = True) -> Explorer:
    """The explorer page for prompt: attention of every layer and head, the logit lens, and (with
    ablation) the rise in the prompt's loss when each head is switched off."""
    ids = tokenizer.encode(prompt)
    if not ids:
        raise UserError("the prompt is empty; give at least one token")
    if len(ids) > model.config.block_size:
        raise UserError(f"the prompt has {len(ids)} tokens; this model reads at most block_size = {model.config.block_size}")
    device = model.wte.weight.device
    idx = torch.tensor([ids], device=device)  # (1, T)
    label = lambda i: token_label(tokenizer, i)  # noqa: E731
    was_training = model.training
    model.eval()
    try:
        with capture_attention(model) as maps:
            model(idx)
        data = {
            "tokens": [label(i) for i in ids], "layers": model.config.n_layer, "heads": model.config.n_head,
            "causal": model.config.causal, "quant": QUANT, "weights": packed_weights(maps, model.config.causal),
            "lens": None, "ablation": None,
        }
        if lens:
            rows = lens_rows(logit_lens(model, idx), ids, label)
            data["lens"] = [{"layer": r["layer"], "position": r["position"], "top": r["top"][0][0],
                             "p_top": round(r["top"][0][1], 4), "p_next": None if r["p_next"] is None else round(r["p_next"], 4)}
                            for r in rows]
        if ablation and len(ids) > 1:
            x, y = idx[:, :-1], idx[:, 1:]  # the prompt predicting its own next tokens
            base, losses = ablation_losses(model, x, y)
            data["ablation"] = {"base": round(base, 4), "rises": (losses - base).round(decimals=4).tolist()}
    finally:
        model.train(was_training)
    return Explorer(page(data, prompt))


def page(data: dict, prompt: str) -> str:
    payload = json.dumps(data).replace("</", "<\\/")  # a "</script>" inside a token must not end the tag
    # One pass over the template: a prompt holding "DATA" stays in the title, never gets the payload.
    fills = {"TITLE": html.escape(prompt[:60]), "DATA": payload}
    return re.sub("TITLE|DATA", lambda match: fills[match.group()], PAGE)


PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>minitransformer: TITLE</title>
<style>
body{font:14px system-ui,sans-serif;margin:12px;color:#222}
h2{font-size:15px;margin:16px 0 6px}
.tok{display:inline-block;padding:2px 3px;margin:1px;border:1px solid #ddd;border-radius:3px;cursor:pointer;
  font-family:ui-monospace,monospace;white-space:pre}
.tok.query{outline:2px solid #d33}
#grid{display:grid;gap:4px;align-items:center}
#grid canvas{width:72px;height:72px;image-rendering:pixelated;border:2px solid transparent;cursor:pointer}
#grid canvas.chosen{border-color:#d33}
.lab{font-size:11px;color:#666;text-align:center}
table{border-collapse:collapse;font-family:ui-monospace,monospace;font-size:12px}
td,th{border:1px solid #eee;padding:1px 4px;text-align:right}
#weights td.w{min-width:56px}
</style></head><body>
<h2>Prompt <span id="which"></span></h2>
<div id="tokens"></div>
<h2>Attention: layers (rows) x heads (columns); click a map to choose its head</h2>
<div id="grid"></div>
<h2>Head view: hover or click a token to see what it attends to</h2>
<div id="headtokens"></div>
<table id="weights"><thead><tr><th>key</th><th>token</th><th>weight</th></tr></thead><tbody></tbody></table>
<h2 id="lenstitle">Logit lens: each layer's top guess for the next token (and its probability)</h2>
<table id="lens"></table>
<h2 id="ablationtitle">Switching each head off: rise in the prompt's loss</h2>
<table id="ablation"></table>
<script type="application/json" id="data">DATA</script>
<script>
const D = JSON.parse(document.getElementById("data").textContent);
const T = D.tokens.length, L = D.layers, H = D.heads;
const raw = atob(D.weights), bytes = new Uint8Array(raw.length);
for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
const q = new Uint16Array(bytes.buffer);
const per = D.causal ? T * (T + 1) / 2 : T * T;
function weight(l, h, i, j) {  // the weight query i gives key j in layer l, head h
  if (D.causal && j > i) return 0;
  const at = (l * H + h) * per + (D.causal ? i * (i + 1) / 2 + j : i * T + j);
  return q[at] / D.quant;
}
let layer = 0, head = 0, query = T - 1;
function esc(s) { const e = document.createElement("span"); e.textContent = s; return e.innerHTML; }
document.getElementById("tokens").innerHTML = D.tokens.map((t, i) => `<span class="tok" title="${i}">${esc(t)}</span>`).join("");
const grid = document.getElementById("grid");
grid.style.gridTemplateColumns = `40px repeat(${H}, 76px)`;
grid.innerHTML = "<div></div>" + Array.from({length: H}, (_, h) => `<div class="lab">head ${h}</div>`).join("");
for (let l = 0; l < L; l++) {
  grid.insertAdjacentHTML("beforeend", `<div class="lab">layer ${l}</div>`);
  for (let h = 0; h < H; h++) {
    const c = document.createElement("canvas");
    c.width = T; c.height = T; c.dataset.layer = l; c.dataset.head = h; c.title = `layer ${l}, head ${h}`;
    const ctx = c.getContext("2d"), img = ctx.createImageData(T, T);
    img.data.fill(255);  // white where a query may not look (above the diagonal)
    for (let i = 0; i < T; i++) for (let j = 0; j < (D.causal ? i + 1 : T); j++) {
      const v = 255 - Math.round(255 * Math.sqrt(weight(l, h, i, j))), p = 4 * (i * T + j);
      img.data[p] = v; img.data[p + 1] = v;
    }
    ctx.putImageData(img, 0, 0);
    c.onclick = () => { layer = l; head = h; show(); };
    grid.appendChild(c);
  }
}
const headTokens = document.getElementById("headtokens");
headTokens.innerHTML = D.tokens.map((t, i) => `<span class="tok" data-i="${i}">${esc(t)}</span>`).join("");
headTokens.querySelectorAll(".tok").forEach(s => {
  s.onmouseenter = s.onclick = () => { query = +s.dataset.i; show(); };
});
function show() {
  document.getElementById("which").textContent = `(layer ${layer}, head ${head}, query ${query}: ${D.tokens[query]})`;
  grid.querySelectorAll("canvas").forEach(c => c.classList.toggle("chosen", +c.dataset.layer === layer && +c.dataset.head === head));
  const rows = [];
  headTokens.querySelectorAll(".tok").forEach(s => {
    const j = +s.dataset.i, w = weight(layer, head, query, j);
    s.classList.toggle("query", j === query);
    s.style.background = `rgba(30, 90, 220, ${w.toFixed(3)})`;
    s.style.color = w > 0.5 ? "#fff" : "#222";
    if (D.causal ? j <= query : true) rows.push([j, w]);
  });
  rows.sort((a, b) => b[1] - a[1]);
  document.querySelector("#weights tbody").innerHTML = rows.map(([j, w]) =>
    `<tr data-j="${j}"><td>${j}</td><td>${esc(D.tokens[j])}</td><td class="w">${w.toFixed(4)}</td></tr>`).join("");
}
if (D.lens) {
  let html = "<tr><th></th>" + D.tokens.map(t => `<th>${esc(t)}</th>`).join("") + "</tr>";
  for (let l = 0; l <= L; l++) {
    html += `<tr><th>${l === 0 ? "embeddings" : "layer " + (l - 1)}</th>`;
    for (const r of D.lens.filter(r => r.layer === l))
      html += `<td title="p(actual next) = ${r.p_next === null ? "-" : r.p_next}">${esc(r.top)} ${r.p_top.toFixed(2)}</td>`;
    html += "</tr>";
  }
  document.getElementById("lens").innerHTML = html;
} else document.getElementById("lenstitle").remove();
if (D.ablation) {
  let html = `<tr><th>loss ${D.ablation.base.toFixed(4)}</th>` + Array.from({length: H}, (_, h) => `<th>head ${h}</th>`).join("") + "</tr>";
  D.ablation.rises.forEach((row, l) => { html += `<tr><th>layer ${l}</th>` + row.map(r => `<td>${r >= 0 ? "+" : ""}${r.toFixed(4)}</td>`).join("") + "</tr>"; });
  document.getElementById("ablation").innerHTML = html;
} else document.getElementById("ablationtitle").remove();
show();
</script></body></html>
"""
