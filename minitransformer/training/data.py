"""Data: tokenise a corpus once into memory-mapped files, and draw random batches.

Design choices:
- The corpus streams through (corpus.py): a first reading counts, collects the alphabet and
  hashes; a second tokenises pieces straight into the token files, so memory stays bounded
  whatever the corpus's size. tiktoken encodes a batch of pieces on every core at once; the
  character tokenizer looks ids up in a table with numpy. A progress bar counts the bytes.
- Like nanoGPT, the text is split by characters, the first 90% for training and the rest for
  validation, and each part is tokenised on its own. With `data.split = "files"` a folder is
  split by whole files instead (the last files in sorted order go to validation), so validation
  text is never the continuation of a training file.
- Token ids are stored as uint16 when every id fits (vocab_size <= 65,536) and as uint32
  otherwise; a larger id stored as uint16 would silently wrap around.
- The tokenised files live in `<run dir>/data/` with a `meta.json` that records the corpus's
  sha256, the tokenizer, the split and each file's token count. A later run reuses them only if
  all of these match (the files' sizes included); otherwise they are rebuilt. The folder is built
  under a temporary name and swapped in whole, so an interrupted preparation leaves the previous
  folder as it was, never new bins beside an old meta.json. A data folder holding anything else
  (a user's corpus or notes) is refused, never replaced.
- A batch is B random windows of block_size + 1 tokens: inputs are the first block_size tokens,
  targets the same window shifted by one. Positions come from a `torch.Generator`, whose state a
  checkpoint saves, so a resumed run draws the same batches as an uninterrupted one. Under
  torchrun every rank draws the whole global batch (world x B windows) from the same generator
  and keeps its own slice, so N ranks together see exactly the batch one process would.
"""

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import SPLITS, DataConfig
from ..induction import repeated_rows
from .corpus import (PIECE_CHARS, CorpusScan, corpus_files, cut_pattern, safe_cut, scan_corpus, split_pieces,
                     text_pieces)
from ..errors import UserError
from ..machine.files import write_folder_atomically
from .run_folder import DATA_FILES
from ..bpe import BPETokenizer, EncodingTokenizer
from ..tokenizer import CharTokenizer, TiktokenTokenizer, build_tokenizer, from_description

def token_dtype(vocab_size: int) -> type:
    """The smallest unsigned integer type that holds every id below vocab_size."""
    return np.uint16 if vocab_size <= 2**16 else np.uint32


@dataclass(frozen=True)
class Dataset:
    """Tokenised train and validation splits, memory-mapped from disk."""

    train: np.ndarray
    val: np.ndarray
    tokenizer: CharTokenizer | EncodingTokenizer

    def bytes_per_token(self) -> float:
        """UTF-8 bytes of text per validation token (from its first BYTES_SAMPLE tokens, decoded):
        the exchange rate from nats per token to bits per byte."""
        tokens = np.asarray(self.val[:BYTES_SAMPLE]).tolist()
        return len(self.tokenizer.decode(tokens).encode("utf-8")) / max(len(tokens), 1)


# Validation tokens decoded to measure bytes per token: plenty for the ratio, quick for any corpus.
BYTES_SAMPLE = 1_000_000


def bits_per_byte(loss: float, bytes_per_token: float) -> float:
    """A loss in nats per token as bits per byte of text, a scale shared by every tokenizer:
    nats / ln 2 = bits per token, over bytes per token."""
    return loss / math.log(2) / bytes_per_token




def read_meta(data_dir: Path) -> dict | None:
    """meta.json as written by prepare_data, or None if absent or not ours."""
    try:
        meta = json.loads((data_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and {"corpus_sha256", "tokenizer", "dtype"} <= meta.keys() else None


def check_data_folder(data_dir: Path) -> None:
    """Refuse a data folder that holds anything prepare_data did not write: it is replaced whole."""
    if data_dir.exists() and not data_dir.is_dir():
        raise UserError(f"{data_dir} is a file, where the run keeps its tokenised data; move it away, or choose another --out")
    if not data_dir.is_dir():
        return
    names = sorted(path.name for path in data_dir.iterdir())
    foreign = [name for name in names if name not in DATA_FILES]
    if not foreign and "meta.json" in names and read_meta(data_dir) is None:
        raise UserError(f"{data_dir / 'meta.json'} is damaged, or minitransformer did not write it (it does not say "
                        "what the bins hold), so the files beside it cannot be told apart from files of yours; if that "
                        f"folder is the run's own, delete {data_dir} and it is prepared again")
    if not foreign and names and read_meta(data_dir) is None:
        foreign = [name for name in names if name != "meta.json"] or names  # bins or a meta.json not ours
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise UserError(f"{data_dir} holds files minitransformer did not write ({shown}); the run keeps its "
                        "tokenised data in that folder and replaces it whole: move them elsewhere, or choose another --out")


def bins_match(data_dir: Path, meta: dict, vocab_size: int) -> bool:
    """True when train.bin and val.bin hold exactly the number of tokens meta.json records, and
    every token id is below vocab_size (a damaged file would otherwise index past the embedding)."""
    itemsize = np.dtype(meta["dtype"]).itemsize
    for name in ("train", "val"):
        path = data_dir / f"{name}.bin"
        if not path.is_file() or path.stat().st_size != meta.get(f"{name}_tokens", -1) * itemsize:
            return False
        tokens = np.memmap(path, dtype=meta["dtype"], mode="r")
        if len(tokens) and int(tokens.max()) >= vocab_size:
            return False
    return True


class TokenWriter:
    """Tokenises a stream of text into a token file, a batch of pieces at a time."""

    def __init__(self, path: Path, tokenizer: CharTokenizer | EncodingTokenizer, dtype: str):
        self.file = path.open("wb")
        self.tokenizer, self.dtype = tokenizer, dtype
        # Where BPE text may be cut (corpus.py); characters may be cut anywhere (flush).
        self.cuts = cut_pattern(tokenizer.pattern) if isinstance(tokenizer, EncodingTokenizer) else None
        self.pending: list[str] = []  # text not tokenised yet
        self.pending_chars = 0
        self.batch_chars = PIECE_CHARS * (os.cpu_count() or 1)  # one piece per core per batch
        self.tokens = 0

    def add(self, text: str) -> None:
        self.pending.append(text)
        self.pending_chars += len(text)
        if self.pending_chars >= self.batch_chars:
            self.flush(final=False)

    def flush(self, final: bool) -> None:
        """Tokenise the pending text up to its last safe cut (all of it when final)."""
        text = "".join(self.pending)
        anywhere = isinstance(self.tokenizer, CharTokenizer)  # one token per character: any cut is safe
        cut = len(text) if final or anywhere else safe_cut(text, self.cuts)
        if cut == 0:  # no safe cut yet: wait for more text before trying again
            self.batch_chars = 2 * len(text)
            return
        self.pending = [text[cut:]] if cut < len(text) else []
        self.pending_chars = len(text) - cut
        ready = text[:cut]
        pieces = [ready[i : i + PIECE_CHARS] for i in range(0, cut, PIECE_CHARS)] if anywhere else \
            split_pieces(ready, PIECE_CHARS, self.cuts)
        for ids in self.tokenizer.encode_batch(pieces):
            self.file.write(ids.astype(self.dtype).tobytes())
            self.tokens += len(ids)

    def close(self) -> int:
        """Tokenise what is left, close the file; returns the number of tokens written."""
        self.flush(final=True)
        self.file.close()
        return self.tokens


def write_splits(scan: CorpusScan, tokenizer, meta: dict, corpus: str, folder: Path, bar: tqdm | None) -> None:
    """Tokenise the corpus into folder/train.bin and folder/val.bin, then write meta.json."""
    writers = {name: TokenWriter(folder / f"{name}.bin", tokenizer, meta["dtype"]) for name in ("train", "val")}
    try:
        if meta["split"] == "files":
            n_train = train_file_count(scan, meta["val_fraction"], corpus)
            for name, files in (("train", scan.files[:n_train]), ("val", scan.files[n_train:])):
                for piece in text_pieces(files, bar):
                    writers[name].add(piece)
        else:
            train_chars, seen = int(scan.chars * (1 - meta["val_fraction"])), 0
            for piece in text_pieces(scan.files, bar):
                if seen < train_chars:
                    writers["train"].add(piece[: train_chars - seen])
                if seen + len(piece) > train_chars:
                    writers["val"].add(piece[max(train_chars - seen, 0):])
                seen += len(piece)
        for name, writer in writers.items():
            meta[f"{name}_tokens"] = writer.close()
    finally:
        for writer in writers.values():
            writer.file.close()
    for name in ("train", "val"):
        if meta[f"{name}_tokens"] == 0:
            raise UserError(
                f"data.corpus {corpus!r} is too short: its {name} split is empty; "
                "use a longer text or change data.val_fraction"
            )
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))


def train_file_count(scan: CorpusScan, val_fraction: float, corpus: str) -> int:
    """How many leading files train on when a folder is split by files: the last files, at least
    one, go to validation until they hold val_fraction of the characters."""
    if len(scan.files) < 2:
        raise UserError(f"data.split = 'files' needs a folder of at least two .txt files; {corpus!r} has "
                        f"{len(scan.files)}. Use data.split = 'characters' or add files")
    n_train, val_chars = len(scan.files) - 1, scan.file_chars[-1]
    while n_train > 1 and val_chars < val_fraction * scan.chars:
        n_train -= 1
        val_chars += scan.file_chars[n_train]
    return n_train


def progress_bar(description: str, total: int, progress: bool | None) -> tqdm:
    """A bar in bytes on stderr; progress None shows it only when stderr is a terminal."""
    return tqdm(total=total, desc=description, unit="B", unit_scale=True, unit_divisor=1024,
                disable=None if progress is None else not progress, dynamic_ncols=True)


# A "bpe" tokenizer learns its merges from at most this many characters of the training split
# (its beginning): enough for the pair statistics, and a bounded cost on a corpus of any size.
BPE_TRAINING_CHARS = 20_000_000


def training_text(scan: CorpusScan, val_fraction: float, split: str, corpus: str, limit: int) -> tuple[str, int]:
    """The beginning of the training split, at most limit characters, and the split's length:
    what a "bpe" tokenizer learns from (validation text never is)."""
    if split == "files":
        files = scan.files[: train_file_count(scan, val_fraction, corpus)]
        total = sum(scan.file_chars[: len(files)]) + len(files) - 1
    else:
        files, total = scan.files, int(scan.chars * (1 - val_fraction))
    pieces, wanted, taken = [], min(limit, total), 0
    for piece in text_pieces(files):
        pieces.append(piece[: wanted - taken])
        taken += len(pieces[-1])
        if taken >= wanted:
            break
    return "".join(pieces), total


def run_bpe(scan: CorpusScan, cached: dict | None, val_fraction: float, split: str, corpus: str, vocab_size: int,
            say, progress: bool | None) -> BPETokenizer:
    """The run's BPE: the one an earlier preparation of the same data learned (training is
    deterministic, so it would learn it again), or one learned now from the training split."""
    if cached is not None and [cached.get(k) for k in ("corpus_sha256", "val_fraction", "split", "bpe_vocab_size")] \
            == [scan.sha256, val_fraction, split, vocab_size] and cached["tokenizer"].get("kind") == "bpe":
        try:
            return from_description(cached["tokenizer"])
        except ValueError:  # a damaged description: learn it again
            pass
    text, total = training_text(scan, val_fraction, split, corpus, BPE_TRAINING_CHARS)
    started = time.perf_counter()
    with tqdm(total=vocab_size - 257, desc="learning BPE merges", unit="merge", dynamic_ncols=True,
              disable=None if progress is None else not progress) as bar:
        tokenizer = BPETokenizer.train(text, vocab_size, progress=lambda done, _: bar.update(done - bar.n))
    sampled = f"the first {len(text):,} of its {total:,} characters" if len(text) < total else f"its {total:,} characters"
    say(f"learned a {tokenizer.vocab_size:,}-token BPE from the training split ({sampled}) in "
        f"{time.perf_counter() - started:.1f} s")
    return tokenizer


def prepare_data(corpus: str, tokenizer_kind: str, val_fraction: float, data_dir: Path, say=print,
                 tokenizer: CharTokenizer | TiktokenTokenizer | BPETokenizer | None = None, split: str = "characters",
                 progress: bool | None = None, vocab_size: int = 4096) -> Dataset:
    """Tokenise the corpus into data_dir, or reuse what an earlier run left there.

    tokenizer: a given tokenizer (a pretrained model's) instead of building one of tokenizer_kind;
    "bpe" learns vocab_size tokens from the training split (run_bpe).
    split: "characters" (the last val_fraction of the text) or "files" (the last files).
    progress: show byte progress bars (None: only on a terminal).
    The folder is built whole under a temporary name and swapped in, so its bins and meta.json always
    belong together; on reuse, each bin's size is checked against meta.json as well.
    """
    if split not in SPLITS:
        raise UserError(f"data.split = {split!r} is not allowed; choose one of {list(SPLITS)}")
    check_data_folder(data_dir)
    files = corpus_files(corpus)
    size = sum(path.stat().st_size for path in files)  # bytes, the bars' total
    with progress_bar("reading corpus", size, progress) as bar:
        scan = scan_corpus(corpus, files, bar)
    cached = read_meta(data_dir)
    if tokenizer is None and tokenizer_kind == "bpe":
        tokenizer = run_bpe(scan, cached, val_fraction, split, corpus, vocab_size, say, progress)
    tokenizer = tokenizer or build_tokenizer(tokenizer_kind, scan.alphabet)
    meta = {
        "corpus": corpus,
        "corpus_sha256": scan.sha256,
        "tokenizer": tokenizer.describe(),
        "val_fraction": val_fraction,
        "split": split,
        "dtype": np.dtype(token_dtype(tokenizer.vocab_size)).name,
    }
    if isinstance(tokenizer, BPETokenizer) and tokenizer_kind == "bpe":
        meta["bpe_vocab_size"] = vocab_size  # asked for: a short text can end with fewer tokens
    reusable = cached is not None and {key: cached.get(key, "characters" if key == "split" else None)
                                       for key in meta} == meta
    if reusable and not bins_match(data_dir, cached, tokenizer.vocab_size):
        say(f"note: the tokenised data in {data_dir} does not match its meta.json; preparing it again")
        reusable = False
    elif cached is not None and not reusable:  # say what changed: a resumed run then trains on other data
        changed = [key for key in meta if cached.get(key, "characters" if key == "split" else None) != meta[key]]
        reasons = {"corpus": "another corpus", "corpus_sha256": "the corpus's text has changed",
                   "tokenizer": "another tokenizer", "val_fraction": "another split", "split": "another split",
                   "dtype": "another token type", "bpe_vocab_size": "another data.vocab_size"}
        said = ", ".join(dict.fromkeys(reasons[key] for key in changed))
        say(f"note: {data_dir} was prepared from other data ({said}); preparing it again")
    if reusable:
        meta = cached
    else:
        try:
            with progress_bar("tokenising", size, progress) as bar:
                write_folder_atomically(data_dir, lambda folder: write_splits(scan, tokenizer, meta, corpus, folder, bar))
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


def mix_repeated(x: torch.Tensor, y: torch.Tensor, data: DataConfig, vocab_size: int, generator: torch.Generator,
                 rank: int = 0, world: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """x and y (B, T) with their first round(repeated_share x B) rows replaced by random segments
    repeated to fill the window (induction.repeated_rows), drawn from the batch generator (so a
    resumed run draws the same); under torchrun each rank keeps its slice of world x that many."""
    rows = round(data.repeated_share * x.shape[0])
    if rows == 0:
        return x, y
    windows = repeated_rows(rows * world, x.shape[1] + 1, (data.repeated_min, data.repeated_max), vocab_size, generator)
    windows = windows[rank * rows : (rank + 1) * rows].to(x.device)  # (rows, T + 1)
    x, y = x.clone(), y.clone()
    x[:rows], y[:rows] = windows[:, :-1], windows[:, 1:]
    return x, y


def get_batch(
    split: np.ndarray,
    batch_size: int,
    block_size: int,
    generator: torch.Generator,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """B random windows: inputs x (B, T) and targets y (B, T), y[:, t] = the token after x[:, t].

    With world > 1 (torchrun), world x B windows are drawn, the same on every rank, and this rank
    keeps the B of its slice: together the ranks see exactly one process's batch of world x B.
    """
    starts = torch.randint(len(split) - block_size, (batch_size * world,), generator=generator)  # (world * B,)
    starts = starts[rank * batch_size : (rank + 1) * batch_size]  # (B,): this rank's slice
    # One gather of all B windows (5x faster than slicing them one by one from the memory map).
    windows = split[starts.numpy()[:, None] + np.arange(block_size + 1)].astype(np.int64)  # (B, T + 1)
    windows = torch.from_numpy(windows)
    if device.type == "cuda":
        # From pinned (page-locked) memory the copy runs in the background, and the host does not
        # wait for the GPU to finish the steps before it (a copy from ordinary memory would).
        windows = windows.pin_memory().to(device, non_blocking=True)
    else:
        windows = windows.to(device)
    return windows[:, :-1], windows[:, 1:]  # (B, T) each
