"""Byte-level BPE trained here (bpe.py): against a straightforward reference trainer, against
tiktoken, and on GPT-2's own ranks."""

import random

import pytest

from minitransformer.bpe import (BYTES, END_OF_TEXT, BPETokenizer, count_chunks, count_pairs, encode_chunk, merge_pair,
                                 readable, split_into_chunks, train_bpe)
from minitransformer.tokenizer import gpt2_encoding, from_description
from minitransformer.training.corpus import read_corpus

TEXT = read_corpus("tinyshakespeare")[:20_000]


def reference_merges(text: str, vocab_size: int) -> list[tuple[int, int]]:
    """The plainest BPE trainer: recount every pair of every chunk before each merge; the most
    frequent pair wins, ties to the smallest pair."""
    words = [list(chunk.encode("utf-8")) for chunk in split_into_chunks(text)]
    merges, pieces = [], [bytes([b]) for b in range(BYTES)]
    while BYTES + len(merges) < vocab_size:
        counts = {}
        for ids in words:
            for pair, n in count_pairs(ids).items():
                if pieces[pair[0]] + pieces[pair[1]] not in pieces:  # bytes that are a token already
                    counts[pair] = counts.get(pair, 0) + n
        if not counts or max(counts.values()) < 2:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        pieces.append(pieces[best[0]] + pieces[best[1]])
        words = [merge_pair(ids, best, BYTES + len(merges) - 1) for ids in words]
    return merges


def test_training_equals_the_reference_trainer_merge_for_merge():
    text = TEXT[:8_000]
    merges = train_bpe(count_chunks(split_into_chunks(text)), 256 + 100)
    assert merges == reference_merges(text, 256 + 100)


def test_bytes_made_twice_stay_one_token():
    """"ab"+"c" and "a"+"bc" both make "abc": the second is skipped, so the ranks stay a proper BPE."""
    text = " ".join(["xbc"] * 50 + ["abc"] * 40 + ["abd"] * 30 + ["ab"] * 20)
    tokenizer = BPETokenizer.train(text, 300)
    pieces = [tokenizer.piece(i) for i in range(tokenizer.vocab_size - 1)]
    assert len(pieces) == len(set(pieces))
    assert train_bpe(count_chunks(split_into_chunks(text)), 300) == reference_merges(text, 300)


def test_training_is_deterministic_and_reaches_the_size():
    first = BPETokenizer.train(TEXT, 600)
    assert first.merges == BPETokenizer.train(TEXT, 600).merges
    assert first.vocab_size == 600 and first.specials == {END_OF_TEXT: 599}


def test_readable_encoding_equals_tiktoken_for_the_same_ranks():
    tokenizer = BPETokenizer.train(TEXT, 800)
    text = read_corpus("tinyshakespeare")[50_000:60_000] + " naïve café 日本語 🙂 don't 12345"
    ours = [i for chunk in split_into_chunks(text) for i in encode_chunk(chunk.encode("utf-8"), tokenizer.ranks)]
    assert ours == tokenizer.encode(text)


def test_gpt2_ranks_through_the_same_code_give_gpt2_tokens():
    encoding = gpt2_encoding()
    ranks = encoding._mergeable_ranks
    text = "Hello world, this is GPT-2! naïve café, 日本語のテキスト 🙂\n\n  spaces\ttab don't we'll 3.14159"
    ours = [i for chunk in split_into_chunks(text) for i in encode_chunk(chunk.encode("utf-8"), ranks)]
    assert ours == encoding.encode_ordinary(text)


def test_any_text_round_trips():
    tokenizer = BPETokenizer.train(TEXT, 700)
    rng = random.Random(0)
    alphabet = [chr(c) for c in range(1, 0x3000) if not 0xD800 <= c < 0xE000] + ["🙂", "𝄞", "\u0301"]
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60)))
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.decode(tokenizer.encode(END_OF_TEXT)) == END_OF_TEXT  # plain text, not the special token
    for _ in range(200):  # any bytes at all, valid UTF-8 or not, are some sequence of tokens
        raw = bytes(rng.randrange(256) for _ in range(rng.randint(1, 40)))
        assert b"".join(tokenizer.piece(i) for i in encode_chunk(raw, tokenizer.ranks)) == raw


def test_a_description_round_trips_and_a_damaged_one_is_refused():
    tokenizer = BPETokenizer.train(TEXT, 400)
    description = tokenizer.describe()
    again = from_description(description)
    assert again.merges == tokenizer.merges and again.encode(TEXT[:500]) == tokenizer.encode(TEXT[:500])
    assert description["pieces"] == [readable(tokenizer.piece(BYTES + k)) for k in range(len(tokenizer.merges))]
    for damage in ({"merges": [[300, 1]]}, {"merges": "x"}, {"pattern": 5}, {"specials": {END_OF_TEXT: 3}}):
        with pytest.raises(ValueError):
            from_description({**description, **damage})


def test_a_run_with_a_learned_bpe_trains_samples_inspects_and_resumes(tmp_path, capsys):
    """data.tokenizer = "bpe": learned from the training split only, saved with the run and every
    checkpoint, used by sample and inspect, and reused (not learned again) on resume."""
    from minitransformer.commands.cli import main
    from minitransformer.formats.load import load_model
    from tests.conftest import QUICK, TINY

    out, corpus = tmp_path / "run", tmp_path / "corpus.txt"
    text = read_corpus("tinyshakespeare")[:100_000]
    corpus.write_text(text)
    common = ["--set", "data.tokenizer=bpe", "--set", "data.vocab_size=300", "--set", "train.max_steps=10",
              "--set", f"data.corpus={corpus}"]
    assert main(["train", "--config", TINY, "--out", str(out), *QUICK, *common, "--pause-after", "5"]) == 0
    assert "learned a 300-token BPE from the training split" in capsys.readouterr().out
    model, tokenizer = load_model(out / "last")
    assert isinstance(tokenizer, BPETokenizer) and tokenizer.vocab_size == model.config.vocab_size == 300
    assert tokenizer.merges == BPETokenizer.train(text[: int(len(text) * 0.9)], 300).merges  # training text only
    assert main(["sample", "--checkpoint", str(out), "--prompt", "ROMEO:", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith("ROMEO:")
    assert main(["inspect", "--checkpoint", str(out), "--prompt", "ROMEO: the", "--layer", "0", "--head", "0"]) == 0
    assert "␣the" in capsys.readouterr().out  # " the" is the 11th merge: one token, labelled as it reads
    assert main(["train", "--out", str(out), "--resume"]) == 0
    assert "learned a" not in capsys.readouterr().out  # the data folder's BPE, reused


def test_tokenize_shows_pieces_ids_and_merges(tmp_path, capsys):
    from minitransformer.commands.cli import main

    tokenizer = BPETokenizer.train(TEXT, 400)
    path = tmp_path / "tokenizer.json"
    path.write_text(__import__("json").dumps(tokenizer.describe()))
    assert main(["tokenize", str(path), "the king"]) == 0
    out = capsys.readouterr().out
    ids = tokenizer.encode("the king")
    assert str(ids) in out and readable(tokenizer.piece(ids[-1])) in out
    assert main(["tokenize", str(path), "the king", "--merges"]) == 0
    steps = capsys.readouterr().out
    assert "t | h | e" in steps and "␣ | k | i | n | g" in steps  # each chunk starts as its bytes
    assert steps.count("merge ") >= len("the king") - len(ids)  # each merge shown, until the tokens


def test_a_short_corpus_ends_with_fewer_tokens_and_is_not_learned_again(tmp_path):
    from minitransformer.training.data import prepare_data

    corpus = tmp_path / "short.txt"
    corpus.write_text("to be or not to be, that is the question\n" * 40)
    said = []
    first = prepare_data(str(corpus), "bpe", 0.1, tmp_path / "data", say=said.append, vocab_size=5000)
    assert first.tokenizer.vocab_size < 5000 and sum("learned a" in line for line in said) == 1
    again = prepare_data(str(corpus), "bpe", 0.1, tmp_path / "data", say=said.append, vocab_size=5000)
    assert again.tokenizer.merges == first.tokenizer.merges and sum("learned a" in line for line in said) == 1
