"""The model's configuration: one frozen dataclass, checked when it is made.

Design choices:
- Frozen, so a config cannot change under a model that was built from it.
- Every check runs in `__post_init__`, so a bad value fails where it is written, with a `UserError`
  (a `ValueError`) that names the field and the values it allows.
- Fields hold only plain TOML types (int, float, bool, str), so a config file maps onto them directly.
"""

from dataclasses import dataclass, fields

from .errors import UserError

POSITIONS = ("learned", "sinusoidal", "rope", "none")
ATTENTIONS = ("manual", "sdpa")


def check_field_types(config, section: str) -> None:
    """Raise UserError for a field whose value is not of its annotated type.

    An int is accepted where a float is expected (TOML writes `1` for 1.0) and stored as a float;
    a bool is never accepted as a number, although Python treats True as 1.
    """
    for field in fields(config):
        value = getattr(config, field.name)
        expected = field.type
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(config, field.name, float(value))
            continue
        if isinstance(value, bool) and expected is not bool or not isinstance(value, expected):
            raise UserError(
                f"{section}.{field.name} must be of type {expected.__name__}, got {value!r}"
            )


def check_choice(section: str, name: str, value: str, allowed: tuple[str, ...]) -> None:
    """Raise UserError when `value` is not one of `allowed`."""
    if value not in allowed:
        raise UserError(f"{section}.{name} = {value!r} is not allowed; choose one of {list(allowed)}")


def check_positive(section: str, config, *names: str) -> None:
    """Raise UserError when one of the named fields is zero or negative."""
    for name in names:
        if getattr(config, name) <= 0:
            raise UserError(f"{section}.{name} must be positive, got {getattr(config, name)!r}")


@dataclass(frozen=True)
class ModelConfig:
    """The shape and options of a GPT.

    The last three fields exist for the "break it" experiments in docs/experiments.md; a normal
    model keeps their defaults.
    """

    vocab_size: int  # V, set from the tokenizer
    block_size: int = 256  # the longest context the model sees
    n_layer: int = 6
    n_head: int = 6  # H
    n_embd: int = 384  # C; each head has D = C // H dimensions
    dropout: float = 0.0
    bias: bool = True  # biases in the linear layers and LayerNorms, as GPT-2 has them
    position: str = "learned"  # one of POSITIONS
    attention: str = "manual"  # one of ATTENTIONS
    causal: bool = True  # experiment: False lets every position see the future
    scale_attention: bool = True  # experiment: False drops the 1/sqrt(D) in attention scores
    tie_weights: bool = True  # the output head shares the token embedding's weights, as GPT-2

    def __post_init__(self):
        check_field_types(self, "model")
        check_positive("model", self, "vocab_size", "block_size", "n_layer", "n_head", "n_embd")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"model.dropout must be in [0, 1), got {self.dropout}")
        check_choice("model", "position", self.position, POSITIONS)
        check_choice("model", "attention", self.attention, ATTENTIONS)
        if self.n_embd % self.n_head:
            divisors = [h for h in range(1, self.n_embd + 1) if self.n_embd % h == 0]
            raise UserError(
                f"model.n_embd = {self.n_embd} is not divisible by model.n_head = {self.n_head}; "
                f"n_head must divide n_embd, e.g. one of {divisors[:12]}"
            )
        if self.position == "rope" and self.head_size % 2:
            raise UserError(
                f"model.position = 'rope' rotates pairs of dimensions, so the head size "
                f"n_embd // n_head must be even, got {self.n_embd} // {self.n_head} = {self.head_size}"
            )

    @property
    def head_size(self) -> int:
        """D, the dimensions of one attention head."""
        return self.n_embd // self.n_head
