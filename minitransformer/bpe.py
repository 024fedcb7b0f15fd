"""Byte-level BPE, written out: train a vocabulary on your text, then encode and decode with it.

Training, one idea per function:
1. `split_into_chunks`: cut the text with a regular expression (GPT-2's by default) into chunks
   that BPE never merges across: words with their leading space, numbers, punctuation, spaces.
2. `count_chunks`: each distinct chunk as a tuple of its UTF-8 bytes (ids 0-255), with how often
   it occurs. Byte-level: any text, in any script, is some sequence of the 256 bytes.
3. `train_bpe`: repeatedly find the most frequent adjacent pair of ids (`count_pairs`), give it a
   new id, and replace it everywhere (`merge_pair`), until the vocabulary has vocab_size ids.
   Ties between equally frequent pairs go to the smallest pair (first id, then second), so the
   same text and size always give the same merges. A pair whose joined bytes are a token already
   (made from other parts) is skipped: every token has one id.

Encoding is the same idea backwards (`merge_steps`, `encode_chunk`): start from a chunk's bytes,
and keep merging the adjacent pair whose merged token was learned earliest. That is exactly what tiktoken computes,
in Rust and on every core; `BPETokenizer` hands the learned ranks to a `tiktoken.Encoding`, so
preparing a large corpus is as fast as with GPT-2's own BPE, and a test checks the two agree.

Design choices:
- `train_bpe` updates pair counts incrementally: a merge changes only the chunks that hold the
  pair, so each merge costs the work on those chunks, not a pass over the whole corpus (which
  makes a 4,096-token vocabulary on Tiny Shakespeare a matter of seconds, not hours).
- Special tokens (an end-of-text) are never learned from text: they get the ids after the merges.
- The tokenizer is saved as JSON: the split pattern, the merges in order as pairs of ids with the
  pieces they make (readable, `␣` for a space), and the special tokens.
"""

import heapq
import os
from collections import Counter, defaultdict
from collections.abc import Iterable

import numpy as np
import regex  # tiktoken's own dependency: the split patterns need \p{L}, which re lacks
import tiktoken

from .errors import UserError

# tiktoken's split pattern for GPT-2 (r50k_base): contractions, letters, numbers, other symbols
# and whitespace are split apart before BPE merges bytes within each piece.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
END_OF_TEXT = "<|endoftext|>"
BYTES = 256  # ids 0-255 are the bytes themselves


def split_into_chunks(text: str, pattern: str = GPT2_PATTERN) -> list[str]:
    """text cut into the pieces BPE works inside: "Hello world!" -> ["Hello", " world", "!"]."""
    return regex.findall(pattern, text)


def count_chunks(chunks: Iterable[str]) -> Counter:
    """Each distinct chunk as a tuple of byte ids, with its count: {(72, 105): 3, ...}."""
    return Counter(tuple(chunk.encode("utf-8")) for chunk in chunks)


def count_pairs(ids: tuple[int, ...] | list[int]) -> Counter:
    """Adjacent pairs in one sequence of ids: (1, 2, 1, 2) -> {(1, 2): 2, (2, 1): 1}."""
    return Counter(zip(ids, ids[1:]))


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """ids with every occurrence of pair, left to right, replaced by new_id."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_bpe(chunk_counts: Counter, vocab_size: int, progress=None) -> list[tuple[int, int]]:
    """The merges, in order: merge k turns its pair into id 256 + k.

    chunk_counts: count_chunks' output. progress(done, total), if given, is called as merges are
    found. Stops early when no pair occurs twice (the text has nothing left to compress).
    """
    if vocab_size <= BYTES:
        raise UserError(f"data.vocab_size must be more than {BYTES} (the bytes), got {vocab_size}")
    words = [list(ids) for ids in chunk_counts]  # each distinct chunk's current ids
    counts = list(chunk_counts.values())  # how often each chunk occurs
    pair_counts: Counter = Counter()  # (a, b) -> occurrences in the whole text
    where: dict[tuple[int, int], set[int]] = defaultdict(set)  # (a, b) -> the words holding it
    for w, ids in enumerate(words):
        for pair, n in count_pairs(ids).items():
            pair_counts[pair] += n * counts[w]
            where[pair].add(w)
    # Most frequent first; among equals the smallest pair. Stale entries (a count that has since
    # changed) are skipped when popped.
    heap = [(-n, pair) for pair, n in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[int, int]] = []
    pieces = [bytes([b]) for b in range(BYTES)]  # each id's bytes
    known = set(pieces)
    total = vocab_size - BYTES
    while len(merges) < total and heap:
        negative, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -negative:
            continue  # stale
        if -negative < 2:
            break
        joined = pieces[pair[0]] + pieces[pair[1]]
        if joined in known:  # the same bytes made another way ("a"+"bc" after "ab"+"c"): a token has one id
            continue
        new_id = BYTES + len(merges)
        merges.append(pair)
        pieces.append(joined)
        known.add(joined)
        changed: set[tuple[int, int]] = set()
        for w in where.pop(pair):
            old = words[w]
            new = merge_pair(old, pair, new_id)
            for p, n in count_pairs(old).items():
                pair_counts[p] -= n * counts[w]
                changed.add(p)
            for p, n in count_pairs(new).items():
                pair_counts[p] += n * counts[w]
                where[p].add(w)
                changed.add(p)
            words[w] = new
        for p in changed:
            if pair_counts[p] > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
            else:
                pair_counts.pop(p, None)
        if progress is not None:
            progress(len(merges), total)
    return merges


def token_bytes(merges: list[tuple[int, int]]) -> list[bytes]:
    """The bytes of every id: 0-255 the bytes themselves, then each merge's two parts joined."""
    table = [bytes([b]) for b in range(BYTES)]
    for a, b in merges:
        table.append(table[a] + table[b])
    return table


def merge_steps(chunk: bytes, ranks: dict[bytes, int]) -> list[tuple[int | None, list[bytes]]]:
    """How BPE encodes one chunk, the readable way: start from its bytes and keep merging the
    adjacent pair whose joined bytes were learned earliest (the lowest rank), until no adjacent
    pair is a learned token. Returns the pieces before any merge, then after each: (rank, pieces)."""
    parts = [bytes([b]) for b in chunk]
    steps: list[tuple[int | None, list[bytes]]] = [(None, list(parts))]
    while len(parts) > 1:
        learned = [(ranks[parts[i] + parts[i + 1]], i) for i in range(len(parts) - 1) if parts[i] + parts[i + 1] in ranks]
        if not learned:
            break
        rank, i = min(learned)  # the pair learned earliest
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
        steps.append((rank, list(parts)))
    return steps


def encode_chunk(chunk: bytes, ranks: dict[bytes, int]) -> list[int]:
    """One chunk's token ids: the ranks of its pieces after the last merge. tiktoken computes
    exactly this, much faster (a test checks)."""
    _, parts = merge_steps(chunk, ranks)[-1]
    return [ranks[part] for part in parts]


def readable_token(text: str) -> str:
    """A token's text with whitespace made visible: space ␣, newline ⏎, tab ⇥ (∅ when empty)."""
    return text.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥") or "∅"


def readable(piece: bytes) -> str:
    """A byte-level token as it reads (readable_token), or, when its bytes are only part of a
    character, the bytes in hex: "⟨e6 97⟩"."""
    try:
        return readable_token(piece.decode("utf-8"))
    except UnicodeDecodeError:
        return "⟨" + piece.hex(" ") + "⟩"


class EncodingTokenizer:
    """A tokenizer that encodes and decodes through a tiktoken.Encoding (`self.encoding`): GPT-2's
    (tokenizer.TiktokenTokenizer) or one learned here (BPETokenizer)."""

    encoding: tiktoken.Encoding

    @property
    def pattern(self) -> str:
        """The regular expression that splits text into chunks before BPE."""
        return self.encoding._pat_str  # tiktoken has no public accessor

    @property
    def ranks(self) -> dict[bytes, int]:
        """Each token's bytes -> its id (its rank: lower was learned earlier)."""
        return self.encoding._mergeable_ranks  # tiktoken has no public accessor

    def encode(self, text: str) -> list[int]:
        # The corpus is plain text: "<|endoftext|>" in it is ordinary characters, not the special token.
        return self.encoding.encode_ordinary(text)

    def decode(self, ids: list[int]) -> str:
        return self.encoding.decode(ids)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Encode several texts at once; tiktoken spreads them over threads (one per core)."""
        batches = self.encoding.encode_ordinary_batch(texts, num_threads=os.cpu_count() or 1)
        return [np.array(ids, dtype=np.int64) for ids in batches]

    def piece(self, token_id: int) -> bytes:
        """The bytes of one token."""
        return self.encoding.decode_single_token_bytes(token_id)


# A text every chunking pattern must cover entirely: letters, digits, punctuation, spaces, a tab,
# newlines, an accent and an emoji.
PATTERN_PROBE = "To be, or not to be: 42 times!\n\tHe said 'naïve' 🙂  done.\n"


class BPETokenizer(EncodingTokenizer):
    """A byte-level BPE trained here: encode and decode through tiktoken, describe as JSON."""

    def __init__(self, merges: list[tuple[int, int]], pattern: str = GPT2_PATTERN,
                 specials: tuple[str, ...] = (END_OF_TEXT,)):
        self.merges = [tuple(pair) for pair in merges]
        table = token_bytes(self.merges)
        ranks = {piece: rank for rank, piece in enumerate(table)}
        if len(ranks) != len(table):
            raise ValueError("two merges make the same token; the merges are not a trained BPE")
        self.specials = {name: len(table) + k for k, name in enumerate(specials)}
        self.vocab_size = len(table) + len(self.specials)
        self.encoding = tiktoken.Encoding(name=f"bpe{self.vocab_size}", pat_str=pattern, mergeable_ranks=ranks,
                                          special_tokens=self.specials)

    @classmethod
    def train(cls, text: str, vocab_size: int, pattern: str = GPT2_PATTERN, progress=None) -> "BPETokenizer":
        """Learn vocab_size - 256 - 1 merges from text (one id stays for the end-of-text token)."""
        chunk_counts = count_chunks(split_into_chunks(text, pattern))
        return cls(train_bpe(chunk_counts, vocab_size - 1, progress), pattern)

    def describe(self) -> dict:
        table = token_bytes(self.merges)
        return {"kind": "bpe", "pattern": self.pattern, "specials": self.specials,
                "merges": [list(pair) for pair in self.merges],
                "pieces": [readable(table[BYTES + k]) for k in range(len(self.merges))]}

    @classmethod
    def from_description(cls, description: dict) -> "BPETokenizer":
        """The tokenizer a description (tokenizer.json) holds, checked whole first: ValueError names
        what is wrong. Every loader (checkpoints, Hugging Face folders, `tokenize`) comes here."""
        merges, pattern, specials = description.get("merges"), description.get("pattern"), description.get("specials")
        if not isinstance(merges, list) or not isinstance(pattern, str) or not isinstance(specials, dict):
            raise ValueError("a BPE tokenizer needs 'merges', 'pattern' and 'specials'")
        if not pattern:
            raise ValueError("'pattern' is empty; it must be the regular expression that splits text into chunks")
        if not all(isinstance(name, str) and name and isinstance(i, int) and not isinstance(i, bool)
                   for name, i in specials.items()):
            raise ValueError("'specials' must map each special token's text to its id (an integer)")
        for k, pair in enumerate(merges):
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(i, int) and 0 <= i < BYTES + k for i in pair)):
                raise ValueError(f"merge {k} is {pair!r}: it must be two ids made before it")
        try:
            tokenizer = cls(merges, pattern, tuple(sorted(specials, key=specials.get)))
            probe = tokenizer.decode(tokenizer.encode(PATTERN_PROBE))
        except ValueError:
            raise
        except Exception as error:  # tiktoken's own errors for a pattern it cannot compile or run
            raise ValueError(f"tiktoken cannot use 'pattern' {pattern[:40]!r} ({type(error).__name__})") from None
        if tokenizer.specials != specials:
            raise ValueError("the special tokens' ids do not follow the merges")
        if probe != PATTERN_PROBE:  # a pattern that skips text, or backtracks until it gives up
            raise ValueError(f"'pattern' {pattern[:40]!r} does not cut text into chunks that cover all of it (a probe "
                             "text came back different); use the pattern the tokenizer was trained with")
        return tokenizer
