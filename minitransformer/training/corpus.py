"""The corpus as a stream: which files it is, what they hold, and text in pieces of bounded size.

A corpus is "tinyshakespeare" (shipped in the package), a text file, or a folder of `.txt` files
(read in sorted order, joined by newlines). Nothing here holds the whole text at once, so a
corpus of any size is prepared in bounded memory:
- `scan_corpus` reads it once to count its characters (per file), collect its alphabet (for the
  character tokenizer) and hash it;
- `text_pieces` reads it again in pieces of about `PIECE_CHARS` characters;
- `safe_cut` finds where a piece may be cut so that BPE tokenises both sides exactly as it would
  tokenise the whole text.

Why a cut can be safe: tiktoken's encodings first split text into pieces with a regular
expression and run BPE inside each piece only. The patterns look only forwards, never back, so
where one of their pieces must end (a letter run at a space, say), the pieces after it come out
the same whether the text before is there or not: cutting there changes no token. `GPT2_CUTS`
and `OTHER_CUTS` below name such places for each pattern; a long line is cut at its spaces, and
text without spaces (Chinese, say) at its punctuation. Only text with no such place at all is
tokenised in one go.
"""

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tqdm import tqdm

from ..bpe import GPT2_PATTERN
from ..errors import UserError, user_path

SHIPPED_CORPUS = "tinyshakespeare"
PIECE_CHARS = 1 << 20  # characters read at a time: 1-4 MB of memory per piece


def corpus_files(corpus: str) -> list[Path]:
    """The files a corpus name stands for, in reading order."""
    if corpus == SHIPPED_CORPUS:
        return [Path(str(resources.files("minitransformer") / "assets" / "tinyshakespeare.txt"))]
    path = user_path(corpus)
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise UserError(f"data.corpus: the folder {path} has no .txt files; point it at a text file or such a folder")
        return files
    if path.is_file():
        return [path]
    raise UserError(
        f"data.corpus: {corpus!r} is neither a file nor a folder; use a path to a text file, "
        f"a folder of .txt files, or {SHIPPED_CORPUS!r}"
    )


def file_pieces(path: Path, bar: tqdm | None = None) -> Iterator[str]:
    """A file's text in pieces of PIECE_CHARS characters (newlines read as a newline, as Python's
    text mode does); bar (if given) advances by the file's bytes as they are read."""
    counted = 0
    try:
        with path.open(encoding="utf-8") as file:
            while piece := file.read(PIECE_CHARS):
                if bar is not None:
                    size = len(piece.encode("utf-8"))  # a "\r\n" read as "\n" counts one byte short: see below
                    bar.update(size)
                    counted += size
                yield piece
    except UnicodeDecodeError as error:
        raise UserError(f"data.corpus: {path} is not UTF-8 text ({error.reason}); convert it to UTF-8")
    if bar is not None:
        bar.update(path.stat().st_size - counted)


def text_pieces(files: list[Path], bar: tqdm | None = None) -> Iterator[str]:
    """The files' text joined by newlines, in pieces; bar (if given) advances by the bytes read."""
    for number, path in enumerate(files):
        if number:
            yield "\n"
        yield from file_pieces(path, bar)


def read_corpus(corpus: str) -> str:
    """The whole text at once: for small corpora and tests (preparation streams it instead)."""
    text = "".join(text_pieces(corpus_files(corpus)))
    if len(text) < 2:
        raise UserError(f"data.corpus: {corpus!r} holds no text; give it at least a few thousand characters")
    return text


@dataclass(frozen=True)
class CorpusScan:
    """What one reading of the corpus tells: sizes, alphabet and hash."""

    files: list[Path]
    file_chars: list[int]  # characters in each file
    alphabet: str  # every character that occurs, sorted
    sha256: str  # of the joined text in UTF-8, as the cache's key

    @property
    def chars(self) -> int:
        """Characters in the joined text (the newlines between files included)."""
        return sum(self.file_chars) + len(self.files) - 1


def scan_corpus(corpus: str, files: list[Path], bar: tqdm | None = None) -> CorpusScan:
    """Read the corpus's files once, in pieces: characters per file, alphabet, sha256."""
    digest = hashlib.sha256()
    alphabet: set[str] = set()
    file_chars = []
    for number, path in enumerate(files):
        if number:
            digest.update(b"\n")
            alphabet.add("\n")
        count = 0
        for piece in file_pieces(path, bar):
            digest.update(piece.encode("utf-8"))
            alphabet.update(piece)
            count += len(piece)
        file_chars.append(count)
    scan = CorpusScan(files, file_chars, "".join(sorted(alphabet)), digest.hexdigest())
    if scan.chars < 2:
        raise UserError(f"data.corpus: {corpus!r} holds no text; give it at least a few thousand characters")
    return scan


# Where a text may be cut without changing its BPE tokens: just before the character each pattern
# matches (see the module's docstring). GPT-2's split pattern (also r50k's and p50k's) ends every
# letter, number and punctuation run at whitespace, and a letter or number run at the first
# character of another kind, so a cut may go before a space, tab or newline that follows any
# non-space, or before punctuation that follows a letter or number. cl100k's and o200k's patterns
# attach newlines to punctuation and marks to letters: there a cut goes only before a space or tab
# that follows a non-space, or before a newline that follows a letter or digit.
GPT2_CUTS = re.compile(r"(?<=\S)[ \t\n]|(?<=[^\W\d_])[^\w\s']")
OTHER_CUTS = re.compile(r"(?<=\S)[ \t]|(?<=[^\W_])\n")


def cut_pattern(split_pattern: str) -> re.Pattern:
    """The safe cuts for a BPE whose text is split by split_pattern: GPT-2's pattern (also r50k's,
    p50k's, and a BPE learned here) allows more than any other, which gets the cautious rule."""
    return GPT2_CUTS if split_pattern == GPT2_PATTERN else OTHER_CUTS


def safe_cut(text: str, cuts: re.Pattern = GPT2_CUTS) -> int:
    """The last index at which text may be cut without changing its BPE tokens (0 for none).

    Looks at the text's tail first, then at longer tails, so that a text with cuts near its end
    (nearly every text) costs microseconds whatever its length."""
    window = 4096
    while True:
        start = max(len(text) - window, 0)
        last = 0
        for match in cuts.finditer(text, max(start, 1)):
            last = match.start()
        if last or start == 0:
            return last
        window *= 16


def split_pieces(text: str, size: int, cuts: re.Pattern = GPT2_CUTS) -> list[str]:
    """text cut at safe points into pieces of about `size` characters (longer where no safe point
    is near); joined, they are text again."""
    pieces, start = [], 0
    while len(text) - start > size:
        cut = safe_cut(text[start : start + size], cuts)
        if cut == 0:  # no safe point in this stretch: take the first one after it
            match = cuts.search(text, start + size)
            if match is None:
                break
            cut = match.start() - start
        pieces.append(text[start : start + cut])
        start += cut
    pieces.append(text[start:])
    return pieces
