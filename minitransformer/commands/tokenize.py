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
        for chunk in split_into_chunks(text, tokenizer.pattern):
            say(f"chunk {readable(chunk.encode('utf-8'))}:")
            for rank, parts in merge_steps(chunk.encode("utf-8"), tokenizer.ranks):
                step = "  bytes     " if rank is None else f"  merge {rank:>5}"
                say(f"{step}: {' | '.join(readable(part) for part in parts)}")
    return ids
