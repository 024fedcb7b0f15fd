"""Config files and --set overrides: the shipped configs, and every error path."""

from dataclasses import asdict
from pathlib import Path

import pytest

from minitransformer.config import DataConfig, TrainConfig, load_config, parse_override
from minitransformer.errors import UserError

CONFIGS = Path(__file__).parent.parent / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = load_config(str(path))
    assert config.model_config(65).n_embd % config.model_config(65).n_head == 0


def test_default_config_is_shakespeare_char():
    """The defaults (used with no --config) and configs/shakespeare_char.toml say the same."""
    from_file = load_config(str(CONFIGS / "shakespeare_char.toml"))
    defaults = load_config()
    assert from_file.model_config(65) == defaults.model_config(65)
    assert from_file.data == defaults.data == DataConfig()
    assert from_file.train == defaults.train == TrainConfig()


@pytest.mark.parametrize("text, expected", [
    ("train.max_steps=200", ("train", "max_steps", 200)),
    ("train.learning_rate=3e-4", ("train", "learning_rate", 3e-4)),
    ("model.bias=false", ("model", "bias", False)),
    ("model.position=rope", ("model", "position", "rope")),
    ('train.out_dir="runs/x"', ("train", "out_dir", "runs/x")),
    ("train.out_dir=runs/x", ("train", "out_dir", "runs/x")),
])
def test_parse_override(text, expected):
    assert parse_override(text) == expected


def test_overrides_apply_on_top_of_a_file():
    config = load_config(str(CONFIGS / "tiny.toml"), ("train.max_steps=7", "model.position=rope"))
    assert config.train.max_steps == 7
    assert config.model_config(10).position == "rope"
    assert config.model_config(10).n_embd == 32  # from the file


@pytest.mark.parametrize("overrides, fragments", [
    (("model.n_heads=4",), ["model.n_heads", "n_head", "block_size"]),
    (("train.max_step=4",), ["train.max_step", "max_steps", "learning_rate"]),
    (("model.vocab_size=100",), ["vocab_size", "tokenizer"]),
    (("optim.lr=1",), ["optim", "model", "train"]),
    (("max_steps=4",), ["SECTION.KEY=VALUE"]),
    (("train.max_steps=many",), ["train.max_steps", "int"]),
    (("train.max_steps=0",), ["train.max_steps", "positive"]),
    (("train.dtype=float8",), ["train.dtype", "'bfloat16'", "'float16'"]),
    (("model.position=alibi",), ["model.position", "'rope'"]),
    (("model.n_embd=100", "model.n_head=3"), ["model.n_embd", "divisible"]),
    (("data.val_fraction=1.5",), ["data.val_fraction"]),
])
def test_bad_values_name_the_key_and_what_is_allowed(overrides, fragments):
    with pytest.raises(UserError) as error:
        load_config(str(CONFIGS / "tiny.toml"), overrides)
    for fragment in fragments:
        assert fragment in str(error.value)


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(str(tmp_path / "nope.toml"))
    broken = tmp_path / "broken.toml"
    broken.write_text("[model\nn_layer = 2")
    with pytest.raises(UserError, match="not valid TOML"):
        load_config(str(broken))
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[optimizer]\nlr = 1\n")
    with pytest.raises(UserError, match=r"unknown table \[optimizer\]"):
        load_config(str(unknown))


def test_saved_tables_round_trip():
    config = load_config(str(CONFIGS / "tiny.toml"))
    assert load_config(tables=config.to_dict()) == config
    assert asdict(config.train)["out_dir"] == "runs/tiny"
