"""The learner's side: stub files, loading her functions, hints, and her functions inside the model.

- `start(folder)`: one file per exercise, `<name>.py`, with our signature and docstring and a body
  that raises NotImplementedError. Each is created exclusively (a temporary, then a hard link
  that fails if the name is taken): a file that exists, or appears meanwhile, is never replaced.
- `load(folder, name)`: her function from `<name>.py`. Her file runs apart from our code
  (isolation.py): whatever it raises, SystemExit included, is shown as her traceback, and what it
  changed in the session (a torch function replaced, the folder) is put back and named.
- `use(attention=..., layer_norm=..., ...)`: her functions stand in for ours in every GPT inside
  the block, through the registry the model consults (pieces.py), and nowhere else.
- `compare(pieces)`: the small trained model that ships with the package,
  with our pieces and with hers: validation loss, greedy text, and the first activation by name
  where they part; the verdict passes only when all three agree.
"""

import importlib.util
import inspect
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import pieces as registry
from ..errors import UserError
from ..machine.files import current_umask, write_atomically
from ..taps import untapped
from .checker import check, exercise, learner_traceback
from .exercises import EXERCISES
from .isolation import original, run_hers

SHIPPED_MODEL = Path(__file__).parent.parent / "assets" / "practice_model"
HINTS_FILE = ".minitransformer-hints.json"  # which hint each exercise showed last; ours to rewrite
HINTS_MARK = "minitransformer practice hints"  # in every hints file we write: one without it is not ours
PIECES = registry.NAMES  # the pieces `use` can put into the model

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
    if str(folder) == "":
        raise UserError("the exercise folder is empty (''); give a folder name, e.g. practice")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} is a file; pass a folder for the exercises (it is made if missing)")
    folder.mkdir(parents=True, exist_ok=True)
    written, kept = [], []
    for name in EXERCISES:
        path = folder / f"{name}.py"
        (written if create_exclusively(path, stub_text(name)) else kept).append(path)
    return written, kept


def create_exclusively(path: Path, text: str) -> bool:
    """Write a new file at path, whole or not at all; False (nothing written) if path is taken,
    even by a file created a moment ago: a hard link to a finished temporary fails then."""
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".mt-tmp")
    temp = Path(name)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
        os.chmod(temp, 0o666 & ~current_umask())
        try:
            os.link(temp, path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive creation, then the text
            try:
                with open(path, "x") as file:
                    file.write(text)
            except FileExistsError:
                return False
        return True
    finally:
        temp.unlink(missing_ok=True)


class NotLoadable(Exception):
    """Her file could not be imported: the message is her traceback."""


def load(folder: Path, name: str):
    """Her function `name` from folder/<name>.py; None when the file does not exist. Her file runs
    apart from ours: what it raises is NotLoadable with her traceback, and what it changes in the
    session is put back (and refused when it would change results)."""
    exercise(name)
    original()  # torch's own functions, taken before her file runs
    path = Path(folder) / f"{name}.py"
    if not path.is_file():
        return None
    module_name = f"minitransformer_practice_{name}_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    outcome = run_hers(spec.loader.exec_module, module)
    if outcome.raised is not None:  # a syntax error, an import that fails, sys.exit(), ...
        raise NotLoadable(learner_traceback(outcome.raised.error))
    if outcome.serious:
        raise NotLoadable(f"{path}, when imported, {'; '.join(outcome.serious)}. That would change what ours computes "
                          "too: it was put back; remove that line from the file")
    fn = getattr(module, name, None)
    if not callable(fn):
        raise NotLoadable(f"{path} defines no function named {name}")
    fn.origin = str(path)
    return fn


def next_hint(folder: Path, name: str, fn=None) -> tuple[int, int, str, str | None]:
    """The next hint for an exercise: (1-based number, how many, the text, a note or None).

    With her function (fn), the first hint is the one for what fails now (the catalogued
    mistake's line to look at, else the hint for the failing property or case); the next calls go
    on through the others. Remembered in folder/HINTS_FILE, a file of ours; one that is not ours
    (or not readable) is left as it is, and the hints start from the first."""
    hints = [hint.text for hint in exercise(name).hints]
    path = Path(folder) / HINTS_FILE
    record, note = read_hints(path)
    failure = failing_topic(name, fn)
    if failure is not None and failure[1] not in hints:
        hints.insert(0, failure[1])
    first = hints.index(failure[1]) if failure is not None else 0
    mine = record.get(name) if isinstance(record.get(name), dict) else {}
    same_failure = failure is not None and mine.get("failure") == failure[0]
    shown = mine.get("shown", -1) if same_failure or failure is None and "failure" not in mine else -1
    number = (first + shown + 1) % len(hints) if isinstance(shown, int) and shown >= 0 else first
    order = number - first if number >= first else number + len(hints) - first
    record[name] = {"shown": order, **({"failure": failure[0]} if failure is not None else {})}
    if note is None and Path(folder).is_dir():
        write_atomically(path, lambda temp: temp.write_text(json.dumps({"written by": HINTS_MARK, **record}, indent=1)))
    return number + 1, len(hints), hints[number], note


def read_hints(path: Path) -> tuple[dict, str | None]:
    """Our record of hints shown, and a note when the file there is not ours to rewrite."""
    if not path.exists() and not path.is_symlink():
        return {}, None
    try:
        record = json.loads(path.read_text()) if path.is_file() and not path.is_symlink() else None
    except (OSError, ValueError, UnicodeDecodeError):
        record = None
    if not isinstance(record, dict) or record.pop("written by", None) != HINTS_MARK:
        return {}, (f"note: {path} is not a hints record written by minitransformer (or is damaged); it is left as it "
                    "is, and the hints start from the first")
    return record, None


def failing_topic(name: str, fn) -> tuple[str, str] | None:
    """(what fails, the hint for it) for her function, or None when it passes or is not given."""
    if fn is None:
        return None
    report = check(name, fn)
    if report.passed or report.failed in ("not written yet", "not started"):
        return None
    if report.mistakes:
        return report.mistake, "look at: " + "; ".join(exercise(name).mistakes[m].look_at for m in report.mistakes)
    for hint in exercise(name).hints:
        if any(report.failed.startswith(topic) for topic in hint.helps):
            return report.failed, hint.text
    return None


class HerCodeFailed(UserError):
    """Her code failed where our command runs it: the message holds her traceback; commands print
    it and exit 1, as a failed check does."""


class PieceFailed(HerCodeFailed):
    """Her piece raised an exception inside the model, or returned what the model cannot use."""

    def __init__(self, piece: "Piece", words: str):
        super().__init__(f"your {piece.name} ({piece.origin}) {words}")
        self.piece = piece


class Piece:
    """One of her functions as the model calls it (pieces.py): an exception she raises, sys.exit()
    included, becomes PieceFailed naming her piece with her traceback; and a NaN or inf she returns
    from finite inputs is noted on the device (no wait for the GPU), for `blamed()` to name."""

    def __init__(self, name: str, fn):
        self.name, self.fn = name, fn
        self.origin = getattr(fn, "origin", None) or f"{getattr(fn, '__qualname__', type(fn).__name__)} from Python"
        self.broke: torch.Tensor | None = None  # True once her output was non-finite where her inputs were not

    def __call__(self, *args):
        try:
            out = self.fn(*args)
        except KeyboardInterrupt:  # Ctrl-C: a stop, not her piece's failure
            raise
        except BaseException as error:
            raise PieceFailed(self, f"raised an exception inside the model:\n{learner_traceback(error)}") from None
        tensors = list(out) if isinstance(out, tuple) else [out]
        if not tensors or not all(torch.is_tensor(t) for t in tensors):
            raise PieceFailed(self, f"returned {type(out).__name__}; run: minitransformer practice check {self.name}")
        with torch.no_grad():
            inputs = [a for a in args if torch.is_tensor(a) and a.is_floating_point()]
            finite_in = torch.stack([a.isfinite().all() for a in inputs]).all() if inputs else torch.tensor(True)
            floats = [t for t in tensors if t.is_floating_point()]
            finite_out = torch.stack([t.isfinite().all() for t in floats]).all() if floats else finite_in
            broke = finite_in & ~finite_out
            self.broke = broke if self.broke is None else self.broke | broke
        return out


class AttentionPiece(Piece):
    """Her attention(q, k, v, mask) -> (out, weights) where the model calls ours, which also takes
    dropout, a scale and the taps: no dropout in hers; a scale other than 1/sqrt(D) is put into q
    (hers divides by sqrt(D)); her weights and output pass the taps as ours do."""

    def __call__(self, q, k, v, mask=None, dropout_p=0.0, scale=None, tap=untapped):
        if scale is not None:
            q = q * (scale * math.sqrt(q.shape[-1]))
        result = super().__call__(q, k, v, mask)
        if len(result) != 2 if isinstance(result, tuple) else True:
            raise PieceFailed(self, "did not return (out, weights); run: minitransformer practice check attention")
        out, weights = result
        return tap("heads", out), tap("weights", weights)


def use(**pieces):
    """Every GPT computes with the given functions in place of ours inside the block:
    attention(q, k, v, mask) -> (out, weights), split_heads, merge_heads, apply_rotary,
    layer_norm(x, weight, bias, eps), gelu(x), cross_entropy(logits, targets).

    Only our GPT models see them, in this thread, inside this block (pieces.py): a block inside it
    keeps its pieces; the checker's references never see them. Refused at once: a name that is
    not a piece, or something that is not a function."""
    unknown = sorted(set(pieces) - set(PIECES))
    if unknown:
        raise UserError(f"practice.use takes {', '.join(PIECES)}; got {', '.join(unknown)}")
    for name, fn in pieces.items():
        if not callable(fn):
            raise UserError(f"practice.use({name}=...) takes a function; got {type(fn).__name__}")
    made = {name: fn if isinstance(fn, Piece) else (AttentionPiece if name == "attention" else Piece)(name, fn)
            for name, fn in pieces.items()}
    return registry.replaced(made)


def blamed() -> list[str]:
    """Her pieces in force that returned NaN or inf from finite inputs ("attention (practice/attention.py)")."""
    return [f"{piece.name} ({piece.origin})" for piece in registry.chosen().values()
            if isinstance(piece, Piece) and piece.broke is not None and bool(piece.broke)]


def load_pieces(folder: Path) -> dict:
    """Her functions that `use` can put into the model, from the files she has written (stubs that
    still raise NotImplementedError are left out by the caller's check)."""
    found = {}
    for name in PIECES:
        fn = load(folder, name)
        if fn is not None:
            found[name] = fn
    return found


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


LOSS_TOLERANCE = 1e-4  # hers and ours agree when the losses differ by at most this, relative (float32's rounding)


@dataclass(frozen=True)
class Comparison:
    """The shipped model computed with our pieces and with hers: the validation loss, the greedy
    text, the first activation where the two part, and her pieces that returned NaN or inf.
    `passed` only when loss, text and every activation agree."""

    pieces: tuple[str, ...]
    ours_loss: float
    hers_loss: float
    ours_text: str
    hers_text: str
    parting: str | None
    blamed: tuple[str, ...] = ()

    @property
    def same_loss(self) -> bool:
        return math.isfinite(self.hers_loss) and abs(self.hers_loss - self.ours_loss) <= LOSS_TOLERANCE * max(1.0, abs(self.ours_loss))

    @property
    def passed(self) -> bool:
        return self.same_loss and self.hers_text == self.ours_text and self.parting is None and not self.blamed

    def __str__(self) -> str:
        lines = [f"your pieces: {', '.join(self.pieces) or 'none written yet (ours only)'}",
                 f"ours  val loss {self.ours_loss:.4f}; greedy text:\n{self.ours_text}",
                 f"yours val loss {self.hers_loss:.4f}; greedy text:\n{self.hers_text}", ""]
        if self.blamed:
            lines.append(f"FAILED: your {', '.join(self.blamed)} returned NaN or inf from finite inputs")
        elif self.passed:
            lines.append("passed: the same loss, the same text, and every activation agrees with ours" if self.pieces
                         else "ours only: write a piece to compare it")
        else:
            parts = [("the same loss" if self.same_loss else f"another loss ({self.hers_loss:.6g} against "
                      f"{self.ours_loss:.6g})"), "the same text" if self.hers_text == self.ours_text else "another text"]
            where = f"; the activations part first at {self.parting} (the names: minitransformer/taps.py)" \
                if self.parting else "; every activation agrees, so look at the loss itself (cross_entropy)"
            lines.append(f"FAILED: {', '.join(parts)}{where}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return str(self)


@torch.no_grad()
def score(model, tokenizer, x, y, prompt: str, tokens: int) -> tuple[float, str]:
    from ..generate import generate

    _, loss = model(x, y)
    if blamed():  # her piece made NaN: no text to draw from it
        return loss.item(), ""
    start = torch.tensor([tokenizer.encode(prompt)])
    text = tokenizer.decode(generate(model, start, tokens, temperature=0.0)[0].tolist())
    return loss.item(), text


@torch.no_grad()
def first_parting(model, x: torch.Tensor) -> str | None:
    """The first activation (in the order the model computes them) where hers (the pieces in
    force) and ours differ."""
    from ..activations import record

    with registry.ours_only(), record(model) as ours:
        model(x[:1])
    with record(model) as hers:
        model(x[:1])
    for name, tensor in ours[0].items():
        other = hers[0].get(name)
        if other is None:  # her attention shows only its weights and output (not the scores)
            continue
        if other.shape != tensor.shape:
            return f"{name} (shape {tuple(other.shape)}, ours {tuple(tensor.shape)})"
        if not torch.allclose(other, tensor, rtol=1e-4, atol=1e-5, equal_nan=True):
            return f"{name} (largest difference {(other - tensor).abs().max().item():.3g})"
    return None


def compare(pieces: dict | None = None, prompt: str = "ROMEO:", tokens: int = 120) -> Comparison:
    """The shipped model with our pieces and with hers: pieces, or (None) those in force under
    practice.use. Her piece raising inside the model is PieceFailed, with her traceback."""
    model, tokenizer = shipped_model()
    model.eval()
    x, y = val_batch(tokenizer, model.config.block_size)
    with use(**(pieces or {})) if pieces is not None else registry.replaced({}):
        hers_in_force = registry.chosen()
        with registry.ours_only():
            ours_loss, ours_text = score(model, tokenizer, x, y, prompt, tokens)
        hers_loss, hers_text = score(model, tokenizer, x, y, prompt, tokens)
        parting = first_parting(model, x) if hers_in_force else None
        return Comparison(tuple(hers_in_force), ours_loss, hers_loss, ours_text, hers_text, parting, tuple(blamed()))
