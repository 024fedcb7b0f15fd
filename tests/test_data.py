"""Data preparation, its cache, and batches."""

import json

import numpy as np
import pytest
import torch

from minitransformer.training.corpus import read_corpus
from minitransformer.training.data import get_batch, prepare_data, token_dtype
from minitransformer.errors import UserError


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("".join(f"line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(200)))
    return path


def test_shipped_corpus_is_tiny_shakespeare():
    text = read_corpus("tinyshakespeare")
    assert len(text) == 1_115_394
    assert text.startswith("First Citizen:")


def test_prepare_splits_90_10_and_round_trips(corpus, tmp_path):
    text = corpus.read_text()
    data = prepare_data(str(corpus), "char", 0.1, tmp_path / "data")
    split = int(len(text) * 0.9)
    assert data.tokenizer.decode(data.train.tolist()) == text[:split]
    assert data.tokenizer.decode(data.val.tolist()) == text[split:]
    meta = json.loads((tmp_path / "data" / "meta.json").read_text())
    assert meta["train_tokens"] == split and meta["val_tokens"] == len(text) - split
    assert data.train.dtype == np.uint16


def test_gpt2_preparation_round_trips(corpus, tmp_path):
    data = prepare_data(str(corpus), "gpt2", 0.1, tmp_path / "data")
    text = corpus.read_text()
    assert data.tokenizer.decode(data.train.tolist()) + data.tokenizer.decode(data.val.tolist()) == text
    assert data.train.max() < 50257


def test_cache_is_reused_then_rebuilt_when_corpus_or_tokenizer_changes(corpus, tmp_path):
    data_dir = tmp_path / "data"
    prepare_data(str(corpus), "char", 0.1, data_dir)
    first = (data_dir / "train.bin").stat().st_mtime_ns
    prepare_data(str(corpus), "char", 0.1, data_dir)
    assert (data_dir / "train.bin").stat().st_mtime_ns == first  # reused

    corpus.write_text(corpus.read_text() + "a new line at the end\n")
    data = prepare_data(str(corpus), "char", 0.1, data_dir)
    assert data.tokenizer.decode(data.val.tolist()).endswith("a new line at the end\n")

    data = prepare_data(str(corpus), "gpt2", 0.1, data_dir)
    assert json.loads((data_dir / "meta.json").read_text())["tokenizer"] == {"kind": "tiktoken", "name": "gpt2"}
    assert len(data.train) < len(corpus.read_text()) * 0.9  # BPE tokens, fewer than characters


def test_folder_of_txt_files(tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "b.txt").write_text("second file")
    (folder / "a.txt").write_text("first file")
    (folder / "notes.md").write_text("ignored")
    assert read_corpus(str(folder)) == "first file\nsecond file"


@pytest.mark.parametrize("make, message", [
    (lambda tmp: str(tmp / "missing.txt"), "neither a file nor a folder"),
    (lambda tmp: str(tmp), "no .txt files"),
])
def test_bad_corpus_is_a_clear_error(tmp_path, make, message):
    with pytest.raises(UserError, match=message):
        read_corpus(make(tmp_path))


def test_corpus_too_short_for_a_split_is_a_clear_error(tmp_path):
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("abcdefgh")
    with pytest.raises(UserError, match="train split is empty"):
        prepare_data(str(tiny), "char", 0.9, tmp_path / "data")  # int(8 * 0.1) = 0 characters


def test_token_dtype_widens_past_65536():
    assert token_dtype(65) == np.uint16
    assert token_dtype(65536) == np.uint16  # ids 0..65535 fit
    assert token_dtype(65537) == np.uint32  # id 65536 would wrap to 0 as uint16
    assert token_dtype(100277) == np.uint32


def test_batches_are_windows_shifted_by_one():
    split = np.arange(1000, dtype=np.uint16)
    generator = torch.Generator().manual_seed(0)
    x, y = get_batch(split, 8, 16, generator, torch.device("cpu"))
    assert x.shape == y.shape == (8, 16) and x.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(8, 15, dtype=torch.int64))  # contiguous windows
    again = get_batch(split, 8, 16, torch.Generator().manual_seed(0), torch.device("cpu"))[0]
    assert torch.equal(again, x)


MIXED = ("ROMEO:\nBut soft! what light through yonder window breaks?\n\n  Indented, 12 numbers; naïve café —\r\n"
         "日本語のテキスト 🙂.\n\"Quoted,\" she said.\n'Tis done.\n\tTabbed line\nend")


@pytest.fixture
def small_pieces(monkeypatch):
    """Read the corpus in pieces of 257 characters, so even a small text crosses many pieces."""
    monkeypatch.setattr("minitransformer.training.corpus.PIECE_CHARS", 257)
    monkeypatch.setattr("minitransformer.training.data.PIECE_CHARS", 257)


@pytest.mark.parametrize("kind", ["char", "gpt2"])
def test_streaming_preparation_equals_tokenising_at_once(tmp_path, small_pieces, kind):
    folder = tmp_path / "texts"
    folder.mkdir()
    for number in range(3):
        (folder / f"{number}.txt").write_text((MIXED + f" file {number}\n") * 40, encoding="utf-8")
    text = read_corpus(str(folder))
    assert len(text) > 20 * 257
    data = prepare_data(str(folder), kind, 0.1, tmp_path / "data")
    split = int(len(text) * 0.9)
    assert data.train.tolist() == data.tokenizer.encode(text[:split])
    assert data.val.tolist() == data.tokenizer.encode(text[split:])


def test_safe_cuts_do_not_change_bpe_tokens():
    from minitransformer.training.corpus import safe_cut, split_pieces
    from minitransformer.tokenizer import tiktoken_tokenizer

    tokenizer = tiktoken_tokenizer("gpt2")
    text = read_corpus("tinyshakespeare")[:200_000] + MIXED * 30
    pieces = split_pieces(text, 3000)
    assert "".join(pieces) == text and len(pieces) > 30
    assert all(safe_cut(piece + "\n") == len(piece) for piece in pieces[:-1])  # each ends before a safe newline
    assert [t for piece in pieces for t in tokenizer.encode(piece)] == tokenizer.encode(text)


HARD_TEXTS = {
    "lines end in punctuation": "Hello, world. Is it 12:30? Yes!\n'Tis so; \"quoted.\"\n\n" * 300,
    "one huge line": "words, numbers 123 and more words; " * 800,
    "no spaces at all": "日本語のテキスト、東京都。漢字かな交じり文！" * 400,
    "whitespace runs": "a  \t b\n\n\n   c   \r\n\td .  ,  \n" * 500,
}


@pytest.mark.parametrize("name", HARD_TEXTS)
def test_bpe_texts_are_cut_into_pieces_without_changing_a_token(name):
    """The corpus is tokenised in pieces (on every core, in bounded memory): wherever the text is
    cut, the tokens must equal those of the whole text, and texts without newlines must be cut too."""
    from minitransformer.training.corpus import split_pieces
    from minitransformer.tokenizer import tiktoken_tokenizer

    tokenizer = tiktoken_tokenizer("gpt2")
    text = HARD_TEXTS[name] + MIXED
    pieces = split_pieces(text, 500)
    assert "".join(pieces) == text and len(pieces) > len(text) // 1000
    assert [t for piece in pieces for t in tokenizer.encode(piece)] == tokenizer.encode(text)


# cl100k's and o200k's split patterns, as tiktoken defines them: they need the network to load with
# their own ranks, but the cuts depend on the pattern alone, so GPT-2's ranks stand in.
CL100K_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""", r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""", r"""\s*[\r\n]+""", r"""\s+(?!\S)""", r"""\s+"""])
FUZZ_ALPHABET = [*"abcXYZ019'’.,;:!?-\"()/  \t\n\r", "日", "本", "。", "、", "é", "e\u0301", "🙂", "²", "½", "\u00a0",
                 "\u3000", "_", "\x1c", "\u2028", "'s", "'ll", "Ab"]


@pytest.mark.parametrize("encoding", ["gpt2", "cl100k_base", "o200k_base"])
def test_safe_cuts_hold_for_each_split_pattern_on_random_text(encoding):
    """Random text from an alphabet of the awkward cases (contractions, marks, CJK, odd spaces,
    newlines after punctuation), cut into pieces of 5 to 40 characters: tokens equal the whole's."""
    import random

    import tiktoken

    from minitransformer.training.corpus import cut_pattern, split_pieces
    from minitransformer.tokenizer import GPT2_PATTERN, gpt2_encoding

    pattern = {"gpt2": GPT2_PATTERN, "cl100k_base": CL100K_PATTERN, "o200k_base": O200K_PATTERN}[encoding]
    bpe = tiktoken.Encoding(encoding, pat_str=pattern, mergeable_ranks=gpt2_encoding()._mergeable_ranks,
                            special_tokens={})
    rng = random.Random(0)
    for _ in range(400):
        text = "".join(rng.choice(FUZZ_ALPHABET) for _ in range(rng.randint(50, 300)))
        pieces = split_pieces(text, rng.randint(5, 40), cut_pattern(pattern))
        assert "".join(pieces) == text
        assert [t for piece in pieces for t in bpe.encode_ordinary(piece)] == bpe.encode_ordinary(text), text


@pytest.mark.parametrize("name", HARD_TEXTS)
def test_streaming_preparation_of_hard_texts_equals_tokenising_at_once(tmp_path, small_pieces, name):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(HARD_TEXTS[name], encoding="utf-8")
    text = read_corpus(str(corpus))
    data = prepare_data(str(corpus), "gpt2", 0.1, tmp_path / "data")
    split = int(len(text) * 0.9)
    assert data.train.tolist() == data.tokenizer.encode(text[:split])
    assert data.val.tolist() == data.tokenizer.encode(text[split:])


def test_split_by_files_holds_out_whole_files(tmp_path):
    folder = tmp_path / "books"
    folder.mkdir()
    texts = [f"book {number}: " + "words and more words\n" * (50 + 10 * number) for number in range(5)]
    for number, text in enumerate(texts):
        (folder / f"{number}.txt").write_text(text)
    data = prepare_data(str(folder), "char", 0.25, tmp_path / "data", split="files")
    train, val = data.tokenizer.decode(data.train.tolist()), data.tokenizer.decode(data.val.tolist())
    held_out = [text for text in texts if text in val]
    assert val == "\n".join(held_out) and train == "\n".join(texts[: len(texts) - len(held_out)])
    assert len(val) >= 0.25 * (len(train) + len(val) + 1) - len(texts[-1])  # about val_fraction, in whole files
    with pytest.raises(UserError, match="at least two"):
        prepare_data(str(folder / "0.txt"), "char", 0.1, tmp_path / "one", split="files")


def test_preparation_shows_progress_in_bytes(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(MIXED * 100)
    prepare_data(str(corpus), "gpt2", 0.1, tmp_path / "data", progress=True)
    err = capsys.readouterr().err
    size = corpus.stat().st_size
    assert "reading corpus" in err and "tokenising" in err
    assert f"{size / 1024:.1f}k/{size / 1024:.1f}k" in err.replace("kB", "k")
