"""A bad ModelConfig raises a ValueError that names the field and what is allowed."""

import pytest

from minitransformer import ModelConfig
from tests.helpers import small_config


def test_defaults_are_valid():
    config = ModelConfig(vocab_size=65)
    assert config.head_size == config.n_embd // config.n_head


def test_config_is_frozen():
    config = small_config()
    with pytest.raises(AttributeError):
        config.n_layer = 3


@pytest.mark.parametrize(
    "overrides, fragments",
    [
        (dict(n_embd=30, n_head=4), ["model.n_embd", "model.n_head", "divisible"]),
        (dict(n_embd=36, n_head=4, position="rope"), ["model.position", "rope", "even", "9"]),
        (dict(position="absolute"), ["model.position", "'learned'", "'sinusoidal'", "'rope'"]),
        (dict(attention="flash"), ["model.attention", "'manual'", "'sdpa'"]),
        (dict(n_layer=0), ["model.n_layer", "positive"]),
        (dict(dropout=1.0), ["model.dropout", "[0, 1)"]),
        (dict(n_head="4"), ["model.n_head", "int"]),
        (dict(bias=1), ["model.bias", "bool"]),
        (dict(block_size=True), ["model.block_size", "int"]),
    ],
)
def test_bad_config_names_field_and_allowed_values(overrides, fragments):
    with pytest.raises(ValueError) as error:
        small_config(**overrides)
    for fragment in fragments:
        assert fragment in str(error.value)


def test_int_is_accepted_for_float():
    config = small_config(dropout=0)
    assert isinstance(config.dropout, float)
