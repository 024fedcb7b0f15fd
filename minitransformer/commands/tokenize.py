"""The `tokenize` command: how a tokenizer cuts a text, piece by piece, and (for BPE) merge by merge.

    minitransformer tokenize runs/shakespeare_bpe_own "To be, or not to be"
    minitransformer tokenize runs/shakespeare_bpe_own "To be, or not to be" --merges

It takes a checkpoint or run folder (its tokenizer), a Hugging Face GPT-2 folder, a
tokenizer.json, or a tiktoken encoding's name such as "gpt2" (a character vocabulary comes from a
corpus, so it has no name). `--merges` shows, for a
byte-level BPE, each chunk starting from its bytes and every merge applied to it in turn, as
tiktoken's educational visualiser does (bpe.merge_steps).
"""

import json
from pathlib import Path

from ..bpe import EncodingTokenizer, merge_steps, readable, split_into_chunks
from ..errors import UserError, short_cause
from ..formats.checkpoint import load_checkpoint
from ..formats.gpt2 import hf_folder_tokenizer, is_hf_folder
from ..tokenizer import from_description, tiktoken_tokenizer
from ..inspection import token_label


def load_tokenizer(source: str):
    """A tokenizer from a checkpoint or run folder, a tokenizer.json file, or a tiktoken name."""
    path = Path(source)
    if path.is_file():
        try:
            return from_description(json.loads(path.read_text()))
        except (OSError, ValueError) as error:
            raise UserError(f"{path} is not a tokenizer.json of ours ({short_cause(error)}); give a checkpoint or run folder")
    if is_hf_folder(path):
        return hf_folder_tokenizer(path) or tiktoken_tokenizer("gpt2")
    if path.is_dir():
        return load_checkpoint(path).tokenizer
    return tiktoken_tokenizer(source)


def tokenize(source: str, text: str, merges: bool = False, say=print) -> list[int]:
    """Print text's tokens (their pieces and ids) and, with merges, each BPE merge; returns the ids."""
    tokenizer = load_tokenizer(source)
    ids = tokenizer.encode(text)
    say(f"{len(text)} characters -> {len(ids)} tokens")
    say(" | ".join(token_label(tokenizer, i) for i in ids))
    say(str(ids))
    if merges:
        if not isinstance(tokenizer, EncodingTokenizer):
            raise UserError("--merges shows byte-level BPE merges; this tokenizer has one token per character")
        shown = 0
        for chunk in split_into_chunks(text, tokenizer.pattern):
            data = chunk.encode("utf-8")
            if shown >= MAX_MERGE_LINES:
                say(f"... the merges of the remaining chunks are not shown (the first {MAX_MERGE_LINES:,} lines are); "
                    "the tokens above are the whole text's")
                break
            if len(data) > MAX_CHUNK_BYTES:
                # Each merge reprints the chunk: a chunk of n bytes would print about n * n / 2 pieces.
                say(f"chunk {readable(data[:24])}... ({len(data):,} bytes): too long to show merge by merge (more "
                    f"than {MAX_CHUNK_BYTES}); its tokens are among those above")
                shown += 1
                continue
            say(f"chunk {readable(data)}:")
            for rank, parts in merge_steps(data, tokenizer.ranks):
                step = "  bytes     " if rank is None else f"  merge {rank:>5}"
                say(f"{step}: {' | '.join(readable(part) for part in parts)}")
                shown += 1
    return ids


# --merges prints every merge of a chunk with the chunk's pieces: bounded, so that a long text
# (or one long chunk: 20,000 a's) prints a readable amount and finishes at once.
MAX_CHUNK_BYTES = 200
MAX_MERGE_LINES = 2000
