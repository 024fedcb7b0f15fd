"""GPT-2's tokenizer files in Hugging Face's format (`vocab.json`, `merges.txt`), made from the
shipped tiktoken ranks, so that an exported model comes with a tokenizer `transformers` loads.

Two facts make the conversion exact:
- Both formats describe one byte-level BPE. tiktoken keeps tokens as bytes with a rank each (the
  rank is the token id); Hugging Face keeps tokens as strings in which every byte is written as
  one printable character (GPT-2's `bytes_to_unicode` table: printable bytes stand for
  themselves, the others are moved to code points from 256 up), plus the list of merges in order.
- The merge that made a token of rank r joins the two pieces that BPE, allowed only merges of
  rank below r, splits the token into. Replaying that for every token in rank order gives the
  merges file.
"""

import json
from pathlib import Path

import tiktoken

from ..tokenizer import END_OF_TEXT


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from each byte to the one character that stands for it in vocab.json."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shift)  # whitespace and control bytes move past Latin-1
            shift += 1
    return table


def bpe_pieces(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """Split token into pieces by byte-level BPE, using only merges of rank below max_rank."""
    pieces = [bytes([b]) for b in token]
    while len(pieces) > 1:
        best = None  # (rank, index) of the lowest-ranked adjacent pair
        for i in range(len(pieces) - 1):
            rank = ranks.get(pieces[i] + pieces[i + 1])
            if rank is not None and rank < max_rank and (best is None or rank < best[0]):
                best = (rank, i)
        if best is None:
            break
        i = best[1]
        pieces = [*pieces[:i], pieces[i] + pieces[i + 1], *pieces[i + 2:]]
    return pieces


def vocab_and_merges(encoding: tiktoken.Encoding) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """vocab.json's mapping (token string -> id) and merges.txt's pairs, in rank order."""
    ranks = encoding._mergeable_ranks  # bytes -> rank; tiktoken exposes no public accessor
    char = bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(char[b] for b in token)

    vocab = {text(token): rank for token, rank in ranks.items()}
    vocab[END_OF_TEXT] = encoding.eot_token
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            pieces = bpe_pieces(ranks, token, rank)
            if len(pieces) != 2:
                raise ValueError(f"token {token!r} (rank {rank}) is not one merge of two lower-ranked tokens")
            merges.append((text(pieces[0]), text(pieces[1])))
    return vocab, merges


def write_gpt2_tokenizer_files(encoding: tiktoken.Encoding, folder: Path, max_length: int) -> list[str]:
    """Write vocab.json, merges.txt and tokenizer_config.json into folder; returns their names."""
    vocab, merges = vocab_and_merges(encoding)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": max_length, "add_prefix_space": False,
              "bos_token": END_OF_TEXT, "eos_token": END_OF_TEXT, "unk_token": END_OF_TEXT}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return ["vocab.json", "merges.txt", "tokenizer_config.json"]
