"""GPT-2 in and out, with Hugging Face transformers as the numerical reference.

Every model here is small, random and made on the spot (no download): transformers' GPT-2 with
odd head counts and non-trivial biases and LayerNorms, saved with `save_pretrained`.
"""

import json
import shutil
import tomllib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.testing import assert_close
from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

from minitransformer import GPT, ModelConfig, generate, load_model
from minitransformer.formats.checkpoint import save_checkpoint
from minitransformer.commands.cli import main
from minitransformer.config import load_config
from minitransformer.tokenizer import CharTokenizer, gpt2_encoding, tiktoken_tokenizer
from tests.conftest import ROOT, error_line

VOCAB = 50257
TEXTS = ["Hello world, this is GPT-2!", "naïve café, 日本語のテキスト 🙂\n\n  spaces\ttab",
         "don't we'll they're 12345 3.14159", "ROMEO:\nBut soft, what light through yonder window breaks?"]


def random_hf_model(**overrides) -> GPT2LMHeadModel:
    """A small GPT-2 whose every parameter (biases and LayerNorms included) is random."""
    settings = dict(vocab_size=VOCAB, n_positions=64, n_embd=48, n_layer=2, n_head=3)
    settings.update(overrides)
    model = GPT2LMHeadModel(GPT2Config(**settings))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.normal_(1.0 if "ln_" in name and name.endswith("weight") else 0.0, 0.1)  # LayerNorm scales near 1
    return model.eval()


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> tuple[GPT2LMHeadModel, Path]:
    torch.manual_seed(7)
    model = random_hf_model()
    folder = tmp_path_factory.mktemp("hf") / "gpt2-small-random"
    model.save_pretrained(folder)
    return model, folder


def hf_logits(model: GPT2LMHeadModel, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(idx).logits


@pytest.mark.parametrize("attention", ["manual", "sdpa"])
def test_logits_equal_transformers(hf_folder, attention):
    hf, folder = hf_folder
    ours, tokenizer = load_model(folder)
    for block in ours.blocks:
        block.attn.impl = attention
    idx = torch.randint(0, VOCAB, (2, 40))
    with torch.no_grad():
        logits, _ = ours(idx)
    assert_close(logits, hf_logits(hf, idx), atol=1e-5, rtol=1e-5)
    assert tokenizer.vocab_size == VOCAB and not ours.training


def test_pytorch_model_bin_folders_load_too(hf_folder, tmp_path):
    """Older GPT-2 folders: pytorch_model.bin, with the causal-mask buffers in the state dict."""
    hf, folder = hf_folder
    (tmp_path / "bin").mkdir()
    shutil.copy(folder / "config.json", tmp_path / "bin")
    state = dict(hf.state_dict())
    for layer in range(hf.config.n_layer):
        state[f"transformer.h.{layer}.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64, dtype=torch.bool))
        state[f"transformer.h.{layer}.attn.masked_bias"] = torch.tensor(-1e4)
    torch.save(state, tmp_path / "bin" / "pytorch_model.bin")
    ours, _ = load_model(tmp_path / "bin")
    idx = torch.randint(0, VOCAB, (1, 17))
    assert_close(ours(idx)[0], hf_logits(hf, idx), atol=1e-5, rtol=1e-5)


def test_greedy_generation_equals_transformers_generate(hf_folder):
    hf, folder = hf_folder
    ours, _ = load_model(folder)
    prompt = torch.randint(0, VOCAB, (1, 7))
    expected = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=30, do_sample=False,
                           eos_token_id=None, pad_token_id=0)
    assert torch.equal(generate(ours, prompt, 30, temperature=0.0), expected)


def test_odd_heads_and_other_layer_norm_epsilon(tmp_path):
    hf = random_hf_model(n_embd=35, n_head=5, n_layer=3, layer_norm_epsilon=1e-3)
    hf.save_pretrained(tmp_path / "odd")
    ours, _ = load_model(tmp_path / "odd")
    assert ours.config.layer_norm_eps == 1e-3 and ours.config.n_head == 5
    idx = torch.randint(0, VOCAB, (3, 21))
    assert_close(ours(idx)[0], hf_logits(hf, idx), atol=1e-5, rtol=1e-5)


def test_import_writes_a_checkpoint_that_samples_and_matches(hf_folder, tmp_path, capsys):
    hf, folder = hf_folder
    out = tmp_path / "imported"
    assert main(["import-gpt2", str(folder), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert "lm_head.weight" not in load_file(out / "model.safetensors")  # tied: stored once
    ours, tokenizer = load_model(out)
    idx = torch.randint(0, VOCAB, (2, 12))
    assert_close(ours(idx)[0], hf_logits(hf, idx), atol=1e-5, rtol=1e-5)
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(out), "--prompt", "Hello", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.startswith("Hello")
    assert main(["train", "--out", str(out), "--resume"]) == 2
    assert "--init-from" in error_line(capsys)


def test_import_refuses_an_occupied_folder_and_unknown_sources(hf_folder, tmp_path, capsys):
    _, folder = hf_folder
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    assert main(["import-gpt2", str(folder), "--out", str(tmp_path / "full")]) == 2
    assert "not empty" in error_line(capsys)
    assert main(["import-gpt2", "gpt3", "--out", str(tmp_path / "new")]) == 2
    assert "neither a folder nor a hub model" in error_line(capsys)


def test_hub_names_without_huggingface_hub_or_network_are_one_line(tmp_path, capsys, monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    assert main(["import-gpt2", "gpt2", "--out", str(tmp_path / "a")]) == 2
    assert "could not fetch 'gpt2'" in error_line(capsys)
    monkeypatch.setitem(__import__("sys").modules, "huggingface_hub", None)  # as if not installed
    assert main(["import-gpt2", "distilgpt2", "--out", str(tmp_path / "b")]) == 2
    assert "pip install" in error_line(capsys)


def test_an_untied_head_loads_and_exports_exactly(tmp_path):
    """tie_word_embeddings = false: our model keeps lm_head.weight apart (tie_weights = false), in
    both directions, and computes transformers' logits."""
    hf = random_hf_model(tie_word_embeddings=False)
    assert not torch.equal(hf.lm_head.weight, hf.transformer.wte.weight)
    hf.save_pretrained(tmp_path / "untied")
    ours, _ = load_model(tmp_path / "untied")
    assert not ours.config.tie_weights
    idx = torch.randint(0, VOCAB, (2, 19))
    assert_close(ours(idx)[0], hf_logits(hf, idx), atol=1e-5, rtol=1e-5)
    assert main(["import-gpt2", str(tmp_path / "untied"), "--out", str(tmp_path / "ours")]) == 0
    assert main(["export-gpt2", str(tmp_path / "ours"), "--out", str(tmp_path / "back")]) == 0
    again, _ = load_model(tmp_path / "back")
    assert_close(again(idx)[0], hf_logits(hf, idx), atol=1e-5, rtol=1e-5)
    reloaded = GPT2LMHeadModel.from_pretrained(tmp_path / "back").eval()
    assert_close(hf_logits(reloaded, idx), hf_logits(hf, idx), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("change, fragment", [
    ({"activation_function": "relu"}, "activation_function"),
    ({"activation_function": "gelu_fast"}, "activation_function"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ({"reorder_and_upcast_attn": True}, "reorder_and_upcast_attn"),
    ({"layer_norm_epsilon": None}, "layer_norm_epsilon = None"),
    ({"n_embd": "48"}, "n_embd = '48'"),
    ({"n_layer": 2.5}, "n_layer = 2.5"),
    ({"vocab_size": 50304}, "does not fit GPT-2's tokenizer"),
    ({"vocab_size": 1000}, "does not fit GPT-2's tokenizer"),
    ({"n_inner": 100}, "n_inner"),
    ({"model_type": "llama"}, "'llama'"),
])
@pytest.mark.parametrize("command", ["sample", "import-gpt2"])
def test_configs_this_model_cannot_compute_exactly_are_refused(hf_folder, tmp_path, capsys, change, fragment, command):
    _, folder = hf_folder
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    config = json.loads((bad / "config.json").read_text())
    config.update(change)
    (bad / "config.json").write_text(json.dumps(config))
    args = ["sample", "--checkpoint", str(bad)] if command == "sample" else ["import-gpt2", str(bad), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert fragment in error_line(capsys)


def our_checkpoint(path: Path, config: ModelConfig, tokenizer) -> GPT:
    """Save a random model of ours (random biases too) as a checkpoint folder."""
    model = GPT(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 1:
                parameter.normal_(1.0 if "ln" in name and name.endswith("weight") else 0.0, 0.1)
    save_checkpoint(path, model, {}, tokenizer, None)
    return model.eval()


@pytest.mark.parametrize("overrides", [{}, {"bias": False}, {"tie_weights": False}, {"n_head": 3, "n_embd": 24},
                                       {"gelu": "exact"}])
def test_export_loads_in_transformers_with_equal_logits(tmp_path, capsys, overrides):
    settings = dict(vocab_size=VOCAB, block_size=32, n_layer=2, n_head=2, n_embd=32, position="learned")
    model = our_checkpoint(tmp_path / "ckpt", ModelConfig(**{**settings, **overrides}), tiktoken_tokenizer("gpt2"))
    assert main(["export-gpt2", str(tmp_path / "ckpt"), "--out", str(tmp_path / "hf")]) == 0
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    idx = torch.randint(0, VOCAB, (2, 32))
    with torch.no_grad():
        assert_close(hf(idx).logits, model(idx)[0], atol=1e-5, rtol=1e-5)
    if model.config.tie_weights:  # and back again (import refuses untied heads: GPT-2 ties its head)
        back, _ = load_model(tmp_path / "hf")
        assert back.config.gelu == model.config.gelu
        assert_close(back(idx)[0], model(idx)[0], atol=1e-5, rtol=1e-5)


def test_an_exact_gelu_gpt2_loads_and_computes_transformers_logits(tmp_path):
    """activation_function = "gelu" (the exact GELU) maps to model.gelu = "exact"; the tanh forms
    to "tanh". Each computes transformers' logits, and the two differ (so the choice matters)."""
    torch.manual_seed(3)
    idx = torch.randint(0, VOCAB, (2, 23))
    logits = {}
    for activation, ours_name in (("gelu", "exact"), ("gelu_pytorch_tanh", "tanh")):
        torch.manual_seed(5)
        hf = random_hf_model(activation_function=activation)
        hf.save_pretrained(tmp_path / activation)
        ours, _ = load_model(tmp_path / activation)
        assert ours.config.gelu == ours_name
        logits[activation] = hf_logits(hf, idx)
        assert_close(ours(idx)[0], logits[activation], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits["gelu"], logits["gelu_pytorch_tanh"], atol=1e-4)


def test_exported_tokenizer_files_tokenise_like_tiktoken(tmp_path):
    our_checkpoint(tmp_path / "ckpt", ModelConfig(vocab_size=VOCAB, block_size=16, n_layer=1, n_head=2, n_embd=16),
                   tiktoken_tokenizer("gpt2"))
    assert main(["export-gpt2", str(tmp_path / "ckpt"), "--out", str(tmp_path / "hf")]) == 0
    hf_tokenizer = GPT2TokenizerFast.from_pretrained(tmp_path / "hf")
    encoding = gpt2_encoding()
    for text in TEXTS:
        ids = encoding.encode_ordinary(text)
        assert hf_tokenizer.encode(text) == ids
        assert hf_tokenizer.decode(ids) == text
    special = "end<|endoftext|>start"
    assert hf_tokenizer.encode(special) == encoding.encode(special, allowed_special="all")


def test_merges_match_tiktokens_own_ranks():
    """The merges file rebuilds every multi-byte token from two lower-ranked ones."""
    from minitransformer.formats.hf_tokenizer import vocab_and_merges

    vocab, merges = vocab_and_merges(gpt2_encoding())
    assert len(vocab) == VOCAB and len(merges) == VOCAB - 256 - 1
    assert all(vocab[a + b] > max(vocab[a], vocab[b]) for a, b in merges[:2000])


def test_char_model_exports_model_only_and_comes_back(tmp_path, capsys):
    chars = CharTokenizer("\n !abcdefghijklmnopqrstuvwxyz")
    model = our_checkpoint(tmp_path / "ckpt", ModelConfig(vocab_size=chars.vocab_size, block_size=16, n_layer=1,
                                                          n_head=2, n_embd=16), chars)
    assert main(["export-gpt2", str(tmp_path / "ckpt"), "--out", str(tmp_path / "hf")]) == 0
    assert "transformers gets the model only" in capsys.readouterr().out
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    idx = torch.randint(0, chars.vocab_size, (1, 16))
    assert_close(hf(idx).logits, model(idx)[0].detach(), atol=1e-5, rtol=1e-5)
    back, tokenizer = load_model(tmp_path / "hf")
    assert tokenizer.describe() == chars.describe()


@pytest.mark.parametrize("overrides, fragment", [
    ({"position": "rope"}, "model.position = 'rope'"),
    ({"position": "sinusoidal"}, "model.position = 'sinusoidal'"),
    ({"causal": False}, "model.causal"),
    ({"scale_attention": False}, "model.scale_attention"),
])
def test_export_refuses_models_that_are_not_gpt2s_function(tmp_path, capsys, overrides, fragment):
    settings = dict(vocab_size=VOCAB, block_size=16, n_layer=1, n_head=2, n_embd=16, position="learned")
    our_checkpoint(tmp_path / "ckpt", ModelConfig(**{**settings, **overrides}), tiktoken_tokenizer("gpt2"))
    assert main(["export-gpt2", str(tmp_path / "ckpt"), "--out", str(tmp_path / "hf")]) == 2
    assert fragment in error_line(capsys)
    assert not (tmp_path / "hf").exists()


@pytest.fixture
def small_corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text((ROOT / "minitransformer" / "assets" / "tinyshakespeare.txt").read_text()[:20_000])
    return path


def test_fine_tuning_starts_from_the_pretrained_weights(hf_folder, tmp_path, small_corpus):
    hf, folder = hf_folder
    out = tmp_path / "run"
    assert main(["train", "--init-from", str(folder), "--out", str(out), "--set", "data.tokenizer=gpt2",
                 "--set", f"data.corpus={small_corpus}", "--set", "model.block_size=32", "--set", "model.dropout=0.1",
                 "--set", "train.optimizer=adamw", "--set", "train.learning_rate=1e-12", "--set", "train.max_steps=2",
                 "--set", "train.time_budget_s=0", "--set", "train.eval_batches=1", "--set", "train.sample_tokens=0"]) == 0
    tuned, _ = load_model(out / "last")
    assert tuned.config.block_size == 32 and tuned.config.dropout == 0.1 and tuned.config.n_head == 3
    reference = hf.state_dict()
    assert_close(tuned.wpe.weight, reference["transformer.wpe.weight"][:32], atol=1e-6, rtol=0)
    assert_close(tuned.blocks[1].mlp.c_fc.weight, reference["transformer.h.1.mlp.c_fc.weight"].t(), atol=1e-6, rtol=0)
    assert main(["train", "--out", str(out), "--resume", "--set", "train.max_steps=3"]) == 0  # a normal run now


@pytest.mark.parametrize("extra, fragment", [
    (["--set", "model.n_layer=3"], "would change the architecture"),
    (["--set", "model.position=rope"], "would change the architecture"),
    (["--set", "model.block_size=128"], "longer than the context"),
    (["--set", "data.tokenizer=char"], "'gpt2' tokenizer"),
    (["--resume"], "only one of them"),
])
def test_fine_tuning_refusals_are_one_line(hf_folder, tmp_path, small_corpus, capsys, extra, fragment):
    _, folder = hf_folder
    args = ["train", "--init-from", str(folder), "--out", str(tmp_path / "run"), "--set", "data.tokenizer=gpt2",
            "--set", f"data.corpus={small_corpus}", *extra]
    assert main(args) == 2
    assert fragment in error_line(capsys)


def test_fine_tuning_one_of_our_runs(tiny_run, tmp_path):
    assert main(["train", "--init-from", str(tiny_run), "--out", str(tmp_path / "run"), "--set", "train.max_steps=3",
                 "--set", "train.time_budget_s=0", "--set", "train.eval_batches=1", "--set", "train.sample_tokens=0"]) == 0
    assert load_model(tmp_path / "run")[0].config == load_model(tiny_run)[0].config


def test_inspect_labels_bpe_tokens_readably(hf_folder, capsys):
    _, folder = hf_folder
    assert main(["inspect", "--checkpoint", str(folder), "--prompt", "The cat sat", "--layer", "0", "--head", "2"]) == 0
    out = capsys.readouterr().out
    assert "prompt: 3 tokens: The ␣cat ␣sat" in out


def test_inspect_shows_partial_characters_as_bytes():
    from minitransformer.inspection import token_label

    tokenizer = tiktoken_tokenizer("gpt2")
    pieces = [token_label(tokenizer, i) for i in tokenizer.encode("日本")]
    assert any(piece.startswith("⟨") for piece in pieces)
    assert token_label(tokenizer, tokenizer.encode(" the")[0]) == "␣the"


def test_finetune_config_has_no_architecture_keys():
    path = ROOT / "configs" / "finetune_gpt2_shakespeare.toml"
    assert "model" not in tomllib.loads(path.read_text())
    config = load_config(str(path))
    assert config.data.tokenizer == "gpt2" and config.model == {}
