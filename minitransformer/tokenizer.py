"""Tokenizers: text to token ids and back, behind one small interface.

Every tokenizer has `encode(text) -> list[int]`, `encode_batch(texts) -> list of id arrays` (fast,
for preparing corpora), `decode(ids) -> str`, `vocab_size`, and
`describe() -> dict`, a JSON-able description saved with every checkpoint so that
`from_description` rebuilds the same tokenizer without the corpus.

- "char": one token per character, the vocabulary being the sorted characters of the corpus.
- "gpt2": GPT-2's byte-level BPE (50,257 tokens), built offline from the `gpt2.tiktoken` ranks
  shipped in the package, whose sha256 is checked on load.
- "bpe": a byte-level BPE trained on the run's own training text (bpe.py), `data.vocab_size` tokens.
- any other name: a tiktoken encoding by that name (e.g. "cl100k_base"), when tiktoken can load
  it, which means from its cache or the network; otherwise a clear error naming the offline choices.
"""

from importlib import resources

import numpy as np
import tiktoken
from tiktoken.load import load_tiktoken_bpe

from .bpe import END_OF_TEXT, GPT2_PATTERN, BPETokenizer, EncodingTokenizer
from .errors import UserError

GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
OFFLINE_CHOICES = "'char' or 'gpt2' (both work offline)"


class CharTokenizer:
    """One token per character of a fixed alphabet."""

    def __init__(self, chars: str):
        self.chars = chars
        self.stoi = {ch: i for i, ch in enumerate(chars)}
        self.vocab_size = len(chars)
        self._table: np.ndarray | None = None  # code point -> id, made on first encode_batch

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls("".join(sorted(set(text))))

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - self.stoi.keys())
        if unknown:
            shown = ", ".join(repr(ch) for ch in unknown)
            raise UserError(
                f"the text has characters outside this character-level vocabulary: {shown}; "
                "use only characters that occur in the training corpus"
            )
        return [self.stoi[ch] for ch in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Encode several texts at once, vectorised: each character's code point indexes a
        table of ids (-1 for characters outside the vocabulary)."""
        if self._table is None:
            self._table = np.full(max(map(ord, self.chars)) + 1, -1, dtype=np.int64)
            self._table[[ord(ch) for ch in self.chars]] = np.arange(len(self.chars))
        out = []
        for text in texts:
            points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # (N,) code points
            ids = self._table[np.minimum(points, len(self._table) - 1)]
            ids[points >= len(self._table)] = -1
            if (ids < 0).any():
                self.encode(text)  # raises the error that names the unknown characters
            out.append(ids)
        return out

    def describe(self) -> dict:
        return {"kind": "char", "chars": self.chars}


class TiktokenTokenizer(EncodingTokenizer):
    """A byte-level BPE tokenizer from tiktoken (GPT-2's, or another named encoding); encodes any text."""

    def __init__(self, name: str, encoding: tiktoken.Encoding):
        self.name = name
        self.encoding = encoding
        self.vocab_size = encoding.n_vocab

    def describe(self) -> dict:
        return {"kind": "tiktoken", "name": self.name}


def gpt2_encoding() -> tiktoken.Encoding:
    """GPT-2's encoding from the ranks file shipped in the package: no network needed."""
    path = resources.files("minitransformer") / "assets" / "gpt2.tiktoken"
    try:
        ranks = load_tiktoken_bpe(str(path), expected_hash=GPT2_RANKS_SHA256)
    except ValueError as error:  # tiktoken's message on a hash mismatch
        raise UserError(f"the shipped GPT-2 ranks file {path} is damaged ({error}); reinstall minitransformer")
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={END_OF_TEXT: 50256},
        explicit_n_vocab=50257,
    )


def tiktoken_encoding(name: str) -> tiktoken.Encoding:
    """Any other tiktoken encoding, if tiktoken can load it (cached or downloadable)."""
    if name not in tiktoken.list_encoding_names():
        raise UserError(
            f"unknown tokenizer {name!r}; choose {OFFLINE_CHOICES}, or a tiktoken encoding: "
            f"{tiktoken.list_encoding_names()}"
        )
    try:
        return tiktoken.get_encoding(name)
    except Exception as error:  # tiktoken raises requests' or urllib's errors when offline
        raise UserError(
            f"tiktoken could not load the encoding {name!r} ({type(error).__name__}): it needs the "
            f"network or tiktoken's cache; offline, choose {OFFLINE_CHOICES}"
        )


def tiktoken_tokenizer(name: str) -> TiktokenTokenizer:
    """GPT-2's tokenizer from the shipped ranks, or another tiktoken encoding by name."""
    return TiktokenTokenizer(name, gpt2_encoding() if name == "gpt2" else tiktoken_encoding(name))


def build_tokenizer(kind: str, corpus_text: str) -> CharTokenizer | TiktokenTokenizer:
    """The tokenizer named by `data.tokenizer`; "char" builds its vocabulary from the corpus."""
    if kind == "char":
        return CharTokenizer.from_text(corpus_text)
    return tiktoken_tokenizer(kind)


def from_description(description: object) -> CharTokenizer | TiktokenTokenizer | BPETokenizer:
    """Rebuild a tokenizer from what `describe()` returned.

    A description that `describe()` cannot have written raises ValueError (the caller knows which
    file it came from); a tiktoken encoding that cannot be loaded raises UserError, saying why.
    """
    if not isinstance(description, dict):
        raise ValueError(f"a tokenizer description is a JSON object, got {type(description).__name__}")
    kind = description.get("kind")
    if kind == "char":
        chars = description.get("chars")
        if not isinstance(chars, str) or not chars or len(set(chars)) != len(chars):
            raise ValueError("a character tokenizer needs 'chars': a string of distinct characters")
        return CharTokenizer(chars)
    if kind == "tiktoken":
        name = description.get("name")
        if not isinstance(name, str):
            raise ValueError("a tiktoken tokenizer needs 'name': an encoding's name")
        return tiktoken_tokenizer(name)
    if kind == "bpe":
        return BPETokenizer.from_description(description)
    raise ValueError(f"unknown tokenizer kind {kind!r}; expected 'char', 'tiktoken' or 'bpe'")
