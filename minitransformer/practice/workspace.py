"""The learner's side: stub files, loading her functions, hints, and her functions inside the model.

- `start(folder)`: one file per exercise, `<name>.py`, with our signature and docstring and a body
  that raises NotImplementedError; a file that exists is never overwritten.
- `load(folder, name)`: her function from `<name>.py` (a syntax error or an exception while
  importing it is shown as her traceback).
- `use(attention=..., layer_norm=..., ...)`: a context manager under which every GPT runs on the
  written-out path with her functions in place of ours; everything is restored when it ends.
- `run_shipped(pieces)`: the small trained model that ships with the package, with our pieces and
  with hers: validation loss, greedy text, and the first activation by name where they part.

Design choice: `use` replaces names where the model looks them up (the attention module's
functions, the model module's `F`, LayerNorm's forward), for the duration of the block only, so
the model's code carries no hooks for it; the one switch it needs is
`CausalSelfAttention.written_out`, which sends attention down the explicit path (PyTorch's fused
kernel would never call her function).
"""

import importlib.util
import inspect
import json
import types
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import attention as attention_module, model as model_module
from ..errors import UserError
from ..machine.files import write_atomically
from .checker import exercise, learner_traceback
from .exercises import EXERCISES

SHIPPED_MODEL = Path(__file__).parent.parent / "assets" / "practice_model"
HINTS_FILE = ".minitransformer-hints.json"  # which hint each exercise showed last; ours to rewrite
# The pieces `use` can put into the model, and where each goes.
PIECES = ("attention", "split_heads", "merge_heads", "apply_rotary", "layer_norm", "gelu", "cross_entropy")

STUB = '''"""Exercise: {name}. Write the body, then run: minitransformer practice check {name}"""

import math

import torch
import torch.nn.functional as F


def {name}{signature}:
{doc}
    raise NotImplementedError
'''


def stub_text(name: str) -> str:
    reference = exercise(name).reference
    doc = inspect.getdoc(reference) or ""
    indented = '    """' + doc.replace("\n", "\n    ").replace("\n    \n", "\n\n") + '\n    """'
    signature = str(inspect.signature(reference)).replace("torch.nn.modules.linear.Linear", "torch.nn.Linear")
    return STUB.format(name=name, signature=signature, doc=indented)


def start(folder: Path) -> tuple[list[Path], list[Path]]:
    """Write a stub for every exercise into folder; returns (written, kept because they exist)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file; pass a folder for the exercises (it is made if missing)")
    folder.mkdir(parents=True, exist_ok=True)
    written, kept = [], []
    for name in EXERCISES:
        path = folder / f"{name}.py"
        if path.exists() or path.is_symlink():
            kept.append(path)
            continue
        write_atomically(path, lambda temp, name=name: temp.write_text(stub_text(name)))
        written.append(path)
    return written, kept


class NotLoadable(Exception):
    """Her file could not be imported: the message is her traceback."""


def load(folder: Path, name: str):
    """Her function `name` from folder/<name>.py; None when the file does not exist."""
    exercise(name)
    path = Path(folder) / f"{name}.py"
    if not path.is_file():
        return None
    module_name = f"minitransformer_practice_{name}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # her file: a syntax error, an import that fails, ...
        raise NotLoadable(learner_traceback(error)) from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise NotLoadable(f"{path} defines no function named {name}")
    return fn


def next_hint(folder: Path, name: str) -> tuple[int, int, str]:
    """The next hint for an exercise (1-based number, how many there are, the text), remembered in
    folder/HINTS_FILE; after the last, the hints start again."""
    hints = exercise(name).hints
    path = Path(folder) / HINTS_FILE
    try:
        shown = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        shown = {}
    shown = shown if isinstance(shown, dict) else {}
    number = shown.get(name, 0) % len(hints) + 1
    shown[name] = number
    if Path(folder).is_dir():
        write_atomically(path, lambda temp: temp.write_text(json.dumps(shown, indent=1)))
    return number, len(hints), hints[number - 1]


class FunctionalWith(types.ModuleType):
    """torch.nn.functional, with some functions replaced: what model.py sees as `F` under `use`."""

    def __init__(self, replaced: dict):
        super().__init__("torch.nn.functional (practice)")
        self.replaced = replaced

    def __getattr__(self, name: str):
        return self.replaced.get(name) or getattr(F, name)


@contextmanager
def use(**pieces):
    """Every GPT computes with the given functions in place of ours inside the block:
    attention(q, k, v, mask) -> (out, weights), split_heads, merge_heads, apply_rotary,
    layer_norm(x, weight, bias, eps), gelu(x), cross_entropy(logits, targets)."""
    unknown = set(pieces) - set(PIECES)
    if unknown:
        raise UserError(f"practice.use takes {', '.join(PIECES)}; got {', '.join(sorted(unknown))}")
    with ExitStack() as stack:
        def replace(owner, name, value):
            saved = getattr(owner, name)
            setattr(owner, name, value)
            stack.callback(setattr, owner, name, saved)

        replace(attention_module.CausalSelfAttention, "written_out", True)
        if "attention" in pieces:
            # Ours also takes dropout, scale and the taps (its caller passes them); hers computes
            # softmax(q k^T / sqrt(D)) v, so it stands in where the model uses that (no dropout, the scale).
            replace(attention_module, "scaled_dot_product_attention",
                    lambda q, k, v, mask=None, dropout_p=0.0, scale=None, tap=None, fn=pieces["attention"]:
                    tapped(fn(q, k, v, mask), tap))
        for name in ("split_heads", "merge_heads", "apply_rotary"):
            if name in pieces:
                replace(attention_module, name, pieces[name])
        functional = {}
        if "gelu" in pieces:
            functional["gelu"] = lambda x, approximate="none": pieces["gelu"](x)
        if "cross_entropy" in pieces:
            functional["cross_entropy"] = lambda logits, targets, **kw: pieces["cross_entropy"](logits, targets)
        if functional:
            replace(model_module, "F", FunctionalWith(functional))
        if "layer_norm" in pieces:
            replace(torch.nn.LayerNorm, "forward",
                    lambda self, x, fn=pieces["layer_norm"]: fn(x, self.weight, self.bias, self.eps))
        yield


def tapped(result, tap):
    """Her (out, weights), shown to the taps as ours are, so recording and comparing work alike."""
    out, weights = result
    if tap is not None:
        weights = tap("weights", weights)
        out = tap("heads", out)
    return out, weights


def load_pieces(folder: Path) -> dict:
    """Her functions that `use` can put into the model, from the files she has written (stubs that
    still raise NotImplementedError are left out by the caller's check)."""
    pieces = {}
    for name in PIECES:
        fn = load(folder, name)
        if fn is not None:
            pieces[name] = fn
    return pieces


VAL_WINDOWS = 16  # windows of the validation text the shipped model is scored on


def shipped_model():
    from ..formats.load import load_model

    model, tokenizer = load_model(str(SHIPPED_MODEL), torch.device("cpu"))
    return model.float(), tokenizer


def val_batch(tokenizer, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """VAL_WINDOWS windows spread over Tiny Shakespeare's validation text (its last 10%)."""
    text = (Path(__file__).parent.parent / "assets" / "tinyshakespeare.txt").read_text()
    ids = np.array(tokenizer.encode(text[int(len(text) * 0.9):]), dtype=np.int64)
    starts = np.linspace(0, len(ids) - block_size - 2, VAL_WINDOWS).astype(np.int64)
    windows = torch.from_numpy(np.stack([ids[s: s + block_size + 1] for s in starts]))
    return windows[:, :-1], windows[:, 1:]


@torch.no_grad()
def score(model, tokenizer, x, y, prompt: str, tokens: int) -> tuple[float, str]:
    from ..generate import generate

    _, loss = model(x, y)
    start = torch.tensor([tokenizer.encode(prompt)])
    text = tokenizer.decode(generate(model, start, tokens, temperature=0.0)[0].tolist())
    return loss.item(), text


@torch.no_grad()
def first_parting(model, x: torch.Tensor, pieces: dict) -> str | None:
    """The first activation (in the order the model computes them) where hers and ours differ."""
    from ..activations import record

    with record(model) as ours:
        model(x[:1])
    with use(**pieces), record(model) as hers:
        model(x[:1])
    for name, tensor in ours[0].items():
        other = hers[0].get(name)
        if other is None:  # her attention shows only its weights and output (not the scores)
            continue
        if other.shape != tensor.shape:
            return f"{name} (shape {tuple(other.shape)}, ours {tuple(tensor.shape)})"
        if not torch.allclose(other, tensor, rtol=1e-4, atol=1e-5):
            return f"{name} (largest difference {(other - tensor).abs().max().item():.3g})"
    return None


def run_shipped(pieces: dict, prompt: str = "ROMEO:", tokens: int = 120) -> dict:
    """The shipped model with our pieces and with hers: {"ours": (val loss, text), "hers": ...,
    "parting": the first activation that differs, or None}."""
    model, tokenizer = shipped_model()
    model.eval()
    x, y = val_batch(tokenizer, model.config.block_size)
    with use():  # ours, on the same written-out path as hers
        ours = score(model, tokenizer, x, y, prompt, tokens)
    with use(**pieces):
        hers = score(model, tokenizer, x, y, prompt, tokens)
    return {"ours": ours, "hers": hers, "parting": first_parting(model, x, pieces) if pieces else None}



