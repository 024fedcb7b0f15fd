"""Configuration: frozen dataclasses for the model, the data and training, filled from TOML.

A config file has up to three tables, [model], [data] and [train], whose keys are the fields of
`ModelConfig` (less vocab_size), `DataConfig` and `TrainConfig`; `load_config` reads one and
applies command-line overrides such as `--set train.max_steps=200`.

Design choices:
- Frozen, so a config cannot change under a model that was built from it.
- Every check runs in `__post_init__`; every number must be finite and in its range, so a bad value fails where it is written, with a `UserError`
  (a `ValueError`) that names the field and the values it allows.
- Fields hold only plain TOML types (int, float, bool, str), so a config file maps onto them directly.
"""

import math
import tomllib
from dataclasses import asdict, dataclass, fields

from .errors import UserError, user_path

POSITIONS = ("learned", "sinusoidal", "rope", "none")
ATTENTIONS = ("manual", "sdpa")
GELUS = ("tanh", "exact")
SPLITS = ("characters", "files")  # how data.split holds text out for validation
MAX_BPE_VOCAB = 1_000_000


def check_field_types(config, section: str) -> None:
    """Raise UserError for a field whose value is not of its annotated type.

    An int is accepted where a float is expected (TOML writes `1` for 1.0) and stored as a float;
    a bool is never accepted as a number, although Python treats True as 1.
    """
    for field in fields(config):
        value = getattr(config, field.name)
        expected = field.type
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
            object.__setattr__(config, field.name, value)
        takes_bool = expected is bool or bool in getattr(expected, "__args__", ())  # bool, or a union with bool
        if isinstance(value, bool) and not takes_bool or not isinstance(value, expected):
            name = getattr(expected, "__name__", str(expected))
            raise UserError(f"{section}.{field.name} must be of type {name}, got {value!r}")
        # NaN passes every range check (nan <= 0 is False), and infinity is no setting either.
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{section}.{field.name} must be a finite number, got {value!r}")


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

    `causal = false`, `scale_attention = false` and `position = "none"` exist only for the
    "break it" experiments in docs/experiments.md; never train a real model with them.
    """

    vocab_size: int  # V, set from the tokenizer
    block_size: int = 256  # the longest context the model sees
    n_layer: int = 6
    n_head: int = 6  # H
    n_embd: int = 384  # C; each head has D = C // H dimensions
    dropout: float = 0.0
    bias: bool = True  # biases in the linear layers and LayerNorms, as GPT-2 has them
    position: str = "learned"  # one of POSITIONS; "none" is an experiment only
    attention: str = "manual"  # one of ATTENTIONS
    causal: bool = True  # experiment only: False lets every position see the future
    scale_attention: bool = True  # experiment only: False drops the 1/sqrt(D) in attention scores
    tie_weights: bool = True  # the output head shares the token embedding's weights, as GPT-2
    layer_norm_eps: float = 1e-5  # added to the variance in every LayerNorm; GPT-2's value
    # False: attention-only blocks, no MLP (configs/induction.toml: circuits are easier to read)
    mlp: bool = True
    # The MLP's GELU: "tanh", GPT-2's approximation, or "exact" (with erf), as nanoGPT and BERT
    # compute it: 2.7x cheaper forward and backward on an AVX2 CPU (model.py)
    gelu: str = "tanh"

    def __post_init__(self):
        check_field_types(self, "model")
        check_positive("model", self, "vocab_size", "block_size", "n_layer", "n_head", "n_embd", "layer_norm_eps")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"model.dropout must be in [0, 1), got {self.dropout}")
        check_choice("model", "position", self.position, POSITIONS)
        check_choice("model", "attention", self.attention, ATTENTIONS)
        check_choice("model", "gelu", self.gelu, GELUS)
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


DTYPES = ("auto", "float32", "bfloat16", "float16")
OPTIMIZERS = ("adamw", "muon")


@dataclass(frozen=True)
class DataConfig:
    """Where the text comes from and how it becomes tokens."""

    corpus: str = "tinyshakespeare"  # the shipped corpus, a text file, or a folder of .txt files
    tokenizer: str = "char"  # "char", "gpt2", "bpe" (learned from this corpus), or another tiktoken encoding's name
    val_fraction: float = 0.1  # the last 10% of the text is held out, as in nanoGPT
    split: str = "characters"  # or "files": a folder's last files (val_fraction of the text) are held out
    vocab_size: int = 4096  # the size of a "bpe" tokenizer learned from the training split (others ignore it)
    # The share of each training batch's rows that are a random segment of repeated_min to
    # repeated_max tokens repeated to fill the window (induction.py: what grows induction heads).
    repeated_share: float = 0.0
    repeated_min: int = 8
    repeated_max: int = 39

    def __post_init__(self):
        check_field_types(self, "data")
        if not 0.0 <= self.repeated_share <= 1.0:
            raise UserError(f"data.repeated_share must be between 0 and 1, got {self.repeated_share}")
        if not 1 <= self.repeated_min <= self.repeated_max:
            raise UserError(f"data.repeated_min and data.repeated_max must satisfy 1 <= min <= max, got "
                            f"{self.repeated_min} and {self.repeated_max}")
        check_choice("data", "split", self.split, SPLITS)
        if not 258 <= self.vocab_size <= MAX_BPE_VOCAB:
            raise UserError(f"data.vocab_size must be from 258 (the 256 bytes, one merge, the end-of-text token) "
                            f"to {MAX_BPE_VOCAB:,}, got {self.vocab_size}")
        if not 0.0 < self.val_fraction < 1.0:
            raise UserError(f"data.val_fraction must be between 0 and 1, got {self.val_fraction}")


MAX_TIME_BUDGET_S = 10_000_000  # seconds: past this a budget is a mistake (and math on it overflows)


@dataclass(frozen=True)
class TrainConfig:
    """How long and how fast to train, and where to write the run."""

    out_dir: str = "runs/shakespeare_char"
    device: str = "auto"  # "auto" (cuda, then mps, then cpu), or a name such as "cpu" or "cuda:0"
    dtype: str = "auto"  # "auto" picks bfloat16 where it is faster (see device.choose_dtype)
    seed: int = 1337
    batch_size: int = 4  # sequences per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int = 100_000
    # > 0: the whole train command's wall clock (start-up, evaluations and the final sample included);
    # the schedule runs on it. 0: the schedule runs on steps (max_steps).
    time_budget_s: float = 285.0
    # The steps this config was tuned for on a time budget: a run that gets far fewer says so (budget.py). 0: none.
    tuned_steps: int = 3000
    optimizer: str = "muon"  # "adamw", or "muon": Muon for the blocks' matrices and AdamW for the rest
    learning_rate: float = 6e-3  # AdamW's peak learning rate (with Muon: the embeddings', LayerNorms' and biases')
    muon_learning_rate: float = 0.02  # Muon's peak learning rate, when optimizer = "muon"
    min_lr_ratio: float = 0.02  # the cosine decays to learning_rate * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1  # on matrices (embeddings included); biases and LayerNorms get none
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # maximum global gradient norm; 0 turns clipping off
    eval_interval: int = 500  # steps between evaluations
    eval_batches: int = 20  # batches per split per evaluation
    sample_tokens: int = 300  # tokens sampled at the end of training; 0 for none
    # torch.compile the training step: true, false, "auto" (on CUDA only), or "reduce-overhead"
    # (compiled, and on CUDA the forward and backward replayed as CUDA graphs; one process only)
    compile: bool | str = "auto"

    def __post_init__(self):
        check_field_types(self, "train")
        check_positive("train", self, "batch_size", "grad_accum", "max_steps", "learning_rate",
                       "muon_learning_rate", "eval_interval", "eval_batches")
        if not self.out_dir.strip():
            raise UserError("train.out_dir is empty; name the run folder, e.g. runs/mine (\".\" is this folder)")
        check_choice("train", "dtype", self.dtype, DTYPES)
        check_choice("train", "optimizer", self.optimizer, OPTIMIZERS)
        if self.compile not in (True, False, "auto", "reduce-overhead"):
            raise UserError(f"train.compile = {self.compile!r} is not allowed; choose true, false, \"auto\" "
                            "or \"reduce-overhead\"")
        for name in ("time_budget_s", "tuned_steps", "warmup_steps", "weight_decay", "grad_clip", "sample_tokens"):
            if getattr(self, name) < 0:
                raise UserError(f"train.{name} must be zero or more, got {getattr(self, name)!r}")
        if self.time_budget_s > MAX_TIME_BUDGET_S:
            raise UserError(f"train.time_budget_s = {self.time_budget_s:g} is too long: at most {MAX_TIME_BUDGET_S:,} s "
                            "(about 16 weeks); for a run without a clock set it to 0 (then train.max_steps decides)")
        if not 0 <= self.seed < 2**64:
            raise UserError(f"train.seed must be a whole number from 0 to 2**64 - 1, got {self.seed}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise UserError(f"train.min_lr_ratio must be between 0 and 1, got {self.min_lr_ratio}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UserError(f"train.{name} must be in [0, 1), got {getattr(self, name)}")


# The default run's model, used when no config file is given; DataConfig's and TrainConfig's
# defaults complete it. configs/shakespeare_char.toml says the same (a test checks).
DEFAULT_MODEL = {"block_size": 256, "n_layer": 3, "n_head": 4, "n_embd": 128, "position": "rope", "attention": "sdpa",
                 "gelu": "exact"}

# vocab_size comes from the tokenizer, never from a config file.
MODEL_KEYS = tuple(field.name for field in fields(ModelConfig) if field.name != "vocab_size")


@dataclass(frozen=True)
class RunConfig:
    """A whole run: the [model], [data] and [train] tables of a config file.

    `model` holds the ModelConfig fields except vocab_size, which the tokenizer decides;
    `model_config(vocab_size)` makes the ModelConfig.
    """

    model: dict
    data: DataConfig
    train: TrainConfig

    def model_config(self, vocab_size: int) -> ModelConfig:
        return ModelConfig(vocab_size=vocab_size, **self.model)

    def to_dict(self) -> dict:
        return {"model": dict(self.model), "data": asdict(self.data), "train": asdict(self.train)}


SECTIONS = {"model": MODEL_KEYS, "data": tuple(f.name for f in fields(DataConfig)),
            "train": tuple(f.name for f in fields(TrainConfig))}


def parse_override(text: str) -> tuple[str, str, object]:
    """'train.max_steps=200' -> ('train', 'max_steps', 200).

    The value is read as a TOML value (200, 3e-4, true, "x"); anything that is not one, such as
    rope or runs/x, is taken as a string, so plain words need no quotes.
    """
    key, equals, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not equals or not dot or not name:
        raise UserError(f"--set expects SECTION.KEY=VALUE, e.g. train.max_steps=200; got {text!r}")
    try:
        value = tomllib.loads(f"value = {raw.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, name, value


def read_toml(path: str) -> dict:
    """A TOML file's tables; a missing or malformed file is a UserError."""
    try:
        with open(user_path(path), "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist; pass a path such as configs/tiny.toml")
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"config file {path} is not valid TOML: {error}")
    except IsADirectoryError:
        raise UserError(f"config file {path} is a folder; pass a TOML file such as configs/tiny.toml")
    except OSError as error:
        raise UserError(f"config file {path} cannot be read ({error.strerror}); pass a readable TOML file")
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not UTF-8 text; pass a TOML file such as configs/tiny.toml")


def check_tables(tables: dict, source: str) -> None:
    """Refuse a table that is not [model], [data] or [train] (a misspelled [trian] would be ignored)."""
    for section, table in tables.items():
        if section not in SECTIONS or not isinstance(table, dict):
            raise UserError(f"{source}: unknown table [{section}]; the tables are {list(SECTIONS)}")


def load_config(path: str | None = None, overrides: tuple[str, ...] = (), tables: dict | None = None) -> RunConfig:
    """Build a RunConfig from a TOML file, or from tables already read (a checkpoint's saved
    config), or from the defaults (shakespeare_char's); then apply --set overrides.

    Every key is checked against the dataclasses' fields; an unknown one is an error that lists
    the valid keys. The model's values are checked here too, with a stand-in vocab_size, so that
    a bad value stops the run before any data is read.
    """
    source = path or "the saved config"
    if path is not None:
        tables = read_toml(path)
    elif tables is None:
        tables = {"model": DEFAULT_MODEL}
    check_tables(tables or {}, source)
    merged: dict[str, dict] = {section: {} for section in SECTIONS}
    for section, table in (tables or {}).items():
        merged[section].update(table)
    for override in overrides:
        section, name, value = parse_override(override)
        if section not in SECTIONS:
            raise UserError(f"--set {override}: unknown section {section!r}; the sections are {list(SECTIONS)}")
        merged[section][name] = value
    for section, table in merged.items():
        for name in table:
            if name not in SECTIONS[section]:
                hint = " (it comes from the tokenizer; data.vocab_size sets a \"bpe\" one's)" if name == "vocab_size" else ""
                raise UserError(
                    f"unknown key {section}.{name}{hint}; valid keys in [{section}]: {', '.join(SECTIONS[section])}"
                )
    model = merged["model"]
    checked = ModelConfig(vocab_size=1, **model)
    return RunConfig(
        model={name: getattr(checked, name) for name in model},
        data=DataConfig(**merged["data"]),
        train=TrainConfig(**merged["train"]),
    )
