"""Data preparation, its cache, and batches."""

import json

import numpy as np
import pytest
import torch

from minitransformer.data import get_batch, prepare_data, read_corpus, token_dtype
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
