"""Data: read a corpus, tokenise it once into memory-mapped files, and draw random batches.

Design choices:
- The corpus is "tinyshakespeare" (shipped in the package), a text file, or a folder of `.txt`
  files (read in sorted order, joined by newlines).
- Like nanoGPT, the text is split by characters, the first 90% for training and the rest for
  validation, and each part is tokenised on its own.
- Token ids are stored as uint16 when every id fits (vocab_size <= 65,536) and as uint32
  otherwise; a larger id stored as uint16 would silently wrap around.
- The tokenised files live in `<run dir>/data/` with a `meta.json` that records the corpus's
  sha256, the tokenizer, the split and each file's token count. A later run reuses them only if
  all of these match (the files' sizes included); otherwise they are rebuilt. The folder is built
  under a temporary name and swapped in whole, so an interrupted preparation leaves the previous
  folder as it was, never new bins beside an old meta.json.
- A batch is B random windows of block_size + 1 tokens: inputs are the first block_size tokens,
  targets the same window shifted by one. Positions come from a `torch.Generator`, whose state a
  checkpoint saves, so a resumed run draws the same batches as an uninterrupted one.
"""

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .errors import UserError
from .files import write_folder_atomically
from .tokenizer import CharTokenizer, TiktokenTokenizer, build_tokenizer

SHIPPED_CORPUS = "tinyshakespeare"


def read_corpus(corpus: str) -> str:
    """The text of the shipped corpus, a text file, or all `.txt` files in a folder."""
    if corpus == SHIPPED_CORPUS:
        return (resources.files("minitransformer") / "assets" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    path = Path(corpus).expanduser()
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise UserError(f"data.corpus: the folder {path} has no .txt files; point it at a text file or such a folder")
    elif path.is_file():
        files = [path]
    else:
        raise UserError(
            f"data.corpus: {corpus!r} is neither a file nor a folder; use a path to a text file, "
            f"a folder of .txt files, or {SHIPPED_CORPUS!r}"
        )
    try:
        text = "\n".join(file.read_text(encoding="utf-8") for file in files)
    except UnicodeDecodeError as error:
        raise UserError(f"data.corpus: a file under {path} is not UTF-8 text ({error.reason}); convert it to UTF-8")
    if len(text) < 2:
        raise UserError(f"data.corpus: {corpus!r} holds no text; give it at least a few thousand characters")
    return text


def token_dtype(vocab_size: int) -> type:
    """The smallest unsigned integer type that holds every id below vocab_size."""
    return np.uint16 if vocab_size <= 2**16 else np.uint32


@dataclass(frozen=True)
class Dataset:
    """Tokenised train and validation splits, memory-mapped from disk."""

    train: np.ndarray
    val: np.ndarray
    tokenizer: CharTokenizer | TiktokenTokenizer


def bins_match(data_dir: Path, meta: dict) -> bool:
    """True when train.bin and val.bin hold exactly the number of tokens meta.json records."""
    itemsize = np.dtype(meta["dtype"]).itemsize
    for name in ("train", "val"):
        path = data_dir / f"{name}.bin"
        if not path.is_file() or path.stat().st_size != meta.get(f"{name}_tokens", -1) * itemsize:
            return False
    return True


def write_splits(text: str, tokenizer, meta: dict, corpus: str, folder: Path) -> None:
    """Tokenise the two splits into folder/train.bin and folder/val.bin, then write meta.json."""
    split = int(len(text) * (1 - meta["val_fraction"]))
    for name, part in (("train", text[:split]), ("val", text[split:])):
        ids = np.array(tokenizer.encode(part), dtype=meta["dtype"])
        if len(ids) == 0:
            raise UserError(
                f"data.corpus {corpus!r} is too short: its {name} split is empty; "
                "use a longer text or change data.val_fraction"
            )
        meta[f"{name}_tokens"] = len(ids)
        ids.tofile(folder / f"{name}.bin")
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))


def prepare_data(corpus: str, tokenizer_kind: str, val_fraction: float, data_dir: Path, say=print,
                 tokenizer: CharTokenizer | TiktokenTokenizer | None = None) -> Dataset:
    """Tokenise the corpus into data_dir, or reuse what an earlier run left there.

    tokenizer: a given tokenizer (a pretrained model's) instead of building one of tokenizer_kind.
    The folder is built whole under `data.tmp/` and swapped in, so its bins and meta.json always
    belong together; on reuse, each bin's size is checked against meta.json as well.
    """
    text = read_corpus(corpus)
    tokenizer = tokenizer or build_tokenizer(tokenizer_kind, text)
    meta = {
        "corpus": corpus,
        "corpus_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "tokenizer": tokenizer.describe(),
        "val_fraction": val_fraction,
        "dtype": np.dtype(token_dtype(tokenizer.vocab_size)).name,
    }
    meta_path = data_dir / "meta.json"
    try:
        cached = json.loads(meta_path.read_text()) if meta_path.is_file() else None
    except (OSError, ValueError):
        cached = None
    reusable = isinstance(cached, dict) and {key: cached.get(key) for key in meta} == meta
    if reusable and not bins_match(data_dir, cached):
        say(f"note: the tokenised data in {data_dir} does not match its meta.json; preparing it again")
        reusable = False
    if reusable:
        meta = cached
    else:
        try:
            write_folder_atomically(data_dir, lambda folder: write_splits(text, tokenizer, meta, corpus, folder))
        except OSError as error:
            raise UserError(f"could not write the tokenised data to {data_dir} ({error.strerror or error}); "
                            "free some disk space or choose another --out")
    return Dataset(
        train=np.memmap(data_dir / "train.bin", dtype=meta["dtype"], mode="r"),
        val=np.memmap(data_dir / "val.bin", dtype=meta["dtype"], mode="r"),
        tokenizer=tokenizer,
    )


def check_split_length(split: np.ndarray, name: str, block_size: int) -> None:
    """Raise UserError when a split is too short to cut one window of block_size + 1 tokens."""
    if len(split) <= block_size:
        raise UserError(
            f"the {name} split has {len(split)} tokens, too few for model.block_size = {block_size}; "
            "use a longer corpus, a smaller block_size, or (for val) a larger data.val_fraction"
        )


def get_batch(
    split: np.ndarray,
    batch_size: int,
    block_size: int,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """B random windows: inputs x (B, T) and targets y (B, T), y[:, t] = the token after x[:, t]."""
    starts = torch.randint(len(split) - block_size, (batch_size,), generator=generator)  # (B,)
    windows = np.stack([split[s : s + block_size + 1] for s in starts.tolist()]).astype(np.int64)  # (B, T + 1)
    windows = torch.from_numpy(windows).to(device)
    return windows[:, :-1], windows[:, 1:]  # (B, T) each
