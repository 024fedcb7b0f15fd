"""Tokenizers: round trips, GPT-2's known ids, descriptions, and the offline error."""

import pytest
import tiktoken

from minitransformer.training.corpus import read_corpus
from minitransformer.errors import UserError
from minitransformer.tokenizer import CharTokenizer, build_tokenizer, from_description


def test_char_round_trip_and_vocabulary():
    text = read_corpus("tinyshakespeare")
    tokenizer = CharTokenizer.from_text(text)
    assert tokenizer.vocab_size == 65  # Tiny Shakespeare has 65 distinct characters
    sample = text[1000:3000]
    ids = tokenizer.encode(sample)
    assert len(ids) == len(sample)
    assert tokenizer.decode(ids) == sample
    assert ids[:2] == [tokenizer.chars.index(sample[0]), tokenizer.chars.index(sample[1])]


def test_char_tokenizer_lists_unknown_characters():
    tokenizer = CharTokenizer.from_text("abc ")
    with pytest.raises(UserError) as error:
        tokenizer.encode("a cab é z")
    assert "'é'" in str(error.value) and "'z'" in str(error.value)


def test_gpt2_known_ids_and_round_trip():
    tokenizer = build_tokenizer("gpt2", "")
    assert tokenizer.vocab_size == 50257
    assert tokenizer.encode("Hello world") == [15496, 995]
    text = "First Citizen:\nBefore we proceed any further, hear me speak. — naïve ünïcödé 😀"
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_gpt2_treats_special_token_text_as_plain_text():
    tokenizer = build_tokenizer("gpt2", "")
    assert 50256 not in tokenizer.encode("<|endoftext|>")


@pytest.mark.parametrize("kind", ["char", "gpt2"])
def test_description_rebuilds_the_same_tokenizer(kind):
    text = "To be, or not to be: that is the question."
    tokenizer = build_tokenizer(kind, text)
    rebuilt = from_description(tokenizer.describe())
    assert rebuilt.vocab_size == tokenizer.vocab_size
    assert rebuilt.encode(text) == tokenizer.encode(text)


def test_unknown_tokenizer_name_lists_choices():
    with pytest.raises(UserError, match="'char' or 'gpt2'"):
        build_tokenizer("gpt5", "")


def test_tiktoken_encoding_that_cannot_load_is_a_clear_error(monkeypatch):
    def offline(name):
        raise ConnectionError("no network")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(UserError) as error:
        build_tokenizer("cl100k_base", "")
    message = str(error.value)
    assert "cl100k_base" in message and "offline" in message and "'gpt2'" in message
