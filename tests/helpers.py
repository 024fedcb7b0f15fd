"""Helpers shared by the tests: small model configs and the option lists to sweep."""

from minitransformer import ModelConfig

POSITIONS = ("learned", "sinusoidal", "rope")
ATTENTIONS = ("manual", "sdpa")


def small_config(**overrides) -> ModelConfig:
    """A model small enough for a test to run in milliseconds."""
    settings = dict(vocab_size=37, block_size=16, n_layer=2, n_head=4, n_embd=32)
    settings.update(overrides)
    return ModelConfig(**settings)
