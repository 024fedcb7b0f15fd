"""Checkpoints: a folder holding everything needed to sample from a model or continue training it.

A checkpoint folder (a run keeps two, `last/` and `best/`) holds:
- `model.safetensors`: the weights (`model.pt` in checkpoints written before version 0.2, still read);
- `config.json`: the model's config and the whole run's config;
- `tokenizer.json`: the tokenizer's description, to rebuild it without the corpus;
- `state.pt`: the training state (step, optimizer, schedule, random-number generators, best val
  loss); an imported model (`import-gpt2`) has none.

Design choices:
- Loading never runs code from a file: safetensors holds tensors and nothing else, `state.pt` is
  read with `torch.load(..., weights_only=True)`, the rest is JSON.
- The weights record a digest of their tokenizer and of their model settings (`tokenizer_sha256`
  and `model_sha256` in the safetensors metadata): a tokenizer.json or a config.json that is not
  theirs is refused, never used.
- The tied output head (`lm_head.weight`, the same matrix as `wte.weight`) is stored once, as
  Hugging Face's GPT-2 files do; loading ties it again.
- A checkpoint is written into a temporary folder, fsynced and swapped in by renames
  (machine/files.py), so a crash leaves the previous checkpoint intact: under `NAME/`, or, if it
  struck between the two renames, under the name files.py moved it aside to, where loading finds
  it. Weights with NaN or infinite values are never written, and never loaded.
- A missing or damaged checkpoint is a `UserError` of one line that says what to do.
"""

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .. import __version__, pieces
from ..config import ModelConfig
from ..errors import UserError, short_cause
from ..machine.files import previous_copies, write_folder_atomically
from ..model import GPT
from ..tokenizer import CharTokenizer, TiktokenTokenizer, from_description

WEIGHTS = "model.safetensors"
LEGACY_WEIGHTS = "model.pt"  # written by minitransformer 0.1
TIED_HEAD = "lm_head.weight"
DIGEST_KEY = "tokenizer_sha256"  # in the weights' metadata
MODEL_DIGEST_KEY = "model_sha256"


@dataclass
class Checkpoint:
    """What a checkpoint folder holds, loaded."""

    path: Path
    model_config: ModelConfig
    run_config: dict
    tokenizer: CharTokenizer | TiktokenTokenizer
    model_state: dict
    train_state: dict | None  # None for an imported model


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity."""
    return [name for name, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]


def weights_of(model: GPT) -> dict[str, torch.Tensor]:
    """The model's weights to store: contiguous CPU tensors, the tied head left out."""
    state = model.state_dict()
    if model.config.tie_weights:
        state.pop(TIED_HEAD)
    return {name: tensor.detach().to("cpu").contiguous() for name, tensor in state.items()}


def save_checkpoint(
    path: Path,
    model: GPT,
    run_config: dict,
    tokenizer: CharTokenizer | TiktokenTokenizer,
    train_state: dict | None,
    source: str | None = None,
) -> None:
    """Write a checkpoint folder at path, replacing any checkpoint there only once it is complete.

    train_state None (an imported model) writes no state.pt. source: where the weights came from,
    recorded in config.json. Raises UserError (leaving the previous checkpoint as it was) for
    non-finite weights, and when the disk is full or the folder cannot be written.
    """
    weights = weights_of(model)
    bad = non_finite(weights)
    if bad:
        raise UserError(f"not saving {path}: the weights hold NaN or infinite values ({bad[0]}, ...); "
                        "the previous checkpoint is kept")
    config = {"model": asdict(model.config), "run": run_config, "version": __version__}
    if source is not None:
        config["source"] = source
    if pieces.chosen():  # trained with a learner's pieces (train --practice): said on sampling and resuming
        config["learner_pieces"] = pieces.origins()

    def write(folder: Path) -> None:
        save_file(weights, folder / WEIGHTS, metadata=weights_metadata(tokenizer, model.config))
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        (folder / "tokenizer.json").write_text(json.dumps(tokenizer.describe()))
        if train_state is not None:
            torch.save(train_state, folder / "state.pt")

    try:
        write_folder_atomically(path, write)
    except Exception as error:  # OSError, and torch's and safetensors' own errors for a full disk
        raise UserError(
            f"could not save the checkpoint {path} ({short_cause(error)}); the previous checkpoint is intact; "
            "free some disk space or fix the folder's permissions, then "
            + ("resume with --resume" if train_state is not None else "run the command again")
        )


def find_checkpoint(path: str | Path) -> Path:
    """Resolve a checkpoint folder, or a run folder (its `best/`, else its `last/`).

    The previous copy of `NAME/` stands in for it when a crash struck between save's two renames.
    """
    path = Path(path)
    for candidate in (path, path / "best", path / "last"):
        for folder in (candidate, *previous_copies(candidate)):
            if (folder / WEIGHTS).is_file() or (folder / LEGACY_WEIGHTS).is_file():
                return folder
    raise UserError(
        f"no checkpoint at {path}; pass a run folder written by `minitransformer train` "
        "(e.g. runs/shakespeare_char), one of its best/ or last/ folders, or a Hugging Face GPT-2 folder"
    )


def damaged(path: Path, error: Exception) -> UserError:
    """The one error for a checkpoint folder whose files cannot be read (the cause in a few words)."""
    return UserError(f"the checkpoint at {path} is damaged ({short_cause(error)}); "
                     "use another checkpoint (its run's last/ or best/) or train again")


def tokenizer_digest(tokenizer: CharTokenizer | TiktokenTokenizer) -> str:
    """sha256 of the tokenizer's description: stored with the weights, so that a tokenizer.json
    that is not theirs (another run's, edited, permuted) is refused instead of decoding garbage."""
    return description_digest(tokenizer.describe())


def description_digest(description: object) -> str:
    """sha256 of a tokenizer description as tokenizer.json holds it (describe()'s JSON)."""
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


def model_digest(config: ModelConfig) -> str:
    """sha256 of the model settings that decide what the weights compute: config.json edited to
    another n_head (the same tensor shapes) would otherwise load and compute something else.
    dropout (training only) and attention (two paths to the same result) may differ."""
    settings = {key: value for key, value in asdict(config).items() if key not in ("dropout", "attention")}
    # Settings added later leave, at their defaults, the digests of older weights as they were.
    if settings["mlp"]:
        del settings["mlp"]
    if settings["gelu"] == "tanh":
        del settings["gelu"]
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def weights_metadata(tokenizer: CharTokenizer | TiktokenTokenizer, config: ModelConfig | None = None) -> dict[str, str]:
    """The safetensors metadata: the digests the weights are checked against when loaded."""
    metadata = {"format": "pt", DIGEST_KEY: tokenizer_digest(tokenizer)}
    if config is not None:
        metadata[MODEL_DIGEST_KEY] = model_digest(config)
    return metadata


def check_tokenizer_digest(metadata: dict[str, str] | None, description: object, folder: Path) -> None:
    """Refuse a tokenizer description (tokenizer.json's contents) whose digest differs from the one
    recorded with the weights, before it is built: so a tokenizer that is not theirs never reaches
    tiktoken (nor the network, for an encoding tiktoken must download). Weights written before
    version 0.3 record none, and are taken as they are."""
    recorded = (metadata or {}).get(DIGEST_KEY)
    if recorded is not None and recorded != description_digest(description):
        raise UserError(f"{folder / 'tokenizer.json'} does not belong to the weights beside it (it is not the "
                        "tokenizer they were trained with); put back that checkpoint's own tokenizer.json, "
                        "or use another checkpoint")


def check_model_digest(metadata: dict[str, str] | None, config: ModelConfig, folder: Path) -> None:
    """Refuse a config.json whose model settings differ from those recorded with the weights."""
    recorded = (metadata or {}).get(MODEL_DIGEST_KEY)
    if recorded is not None and recorded != model_digest(config):
        raise UserError(f"{folder / 'config.json'} does not describe the weights beside it (its model settings "
                        "are not those they were saved with); put back that checkpoint's own config.json, "
                        "or use another checkpoint")


def read_weights(path: Path, device: torch.device | str) -> tuple[dict[str, torch.Tensor], dict[str, str] | None]:
    """The weights in a checkpoint folder and their metadata, from model.safetensors or an old model.pt."""
    if (path / WEIGHTS).is_file():
        with safe_open(path / WEIGHTS, framework="pt") as file:
            metadata = file.metadata()
        return load_file(path / WEIGHTS, device=str(device)), metadata
    return torch.load(path / LEGACY_WEIGHTS, map_location=device, weights_only=True), None


def read_config(path: Path) -> tuple[ModelConfig, dict]:
    """The model's config and the whole run's, from a checkpoint folder's config.json."""
    config = json.loads((path / "config.json").read_text())
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict) or \
            not isinstance(config.get("run"), dict):
        raise ValueError("config.json needs a 'model' and a 'run' table")
    try:
        return ModelConfig(**config["model"]), config["run"]
    except UserError as error:  # a value no config file could hold: the file is damaged
        raise ValueError(str(error)) from None


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu", with_state: bool = False) -> Checkpoint:
    """Load a checkpoint folder (or a run folder's best one) onto device.

    with_state: also load state.pt (optimizer moments, twice the weights' size), which only
    resuming needs; train_state is None without it, and for imported models, which have none.
    """
    path = find_checkpoint(path)
    try:
        model_config, run_config = read_config(path)
        description = json.loads((path / "tokenizer.json").read_text())
        model_state, metadata = read_weights(path, device)
        check_tokenizer_digest(metadata, description, path)  # before the tokenizer is built
        tokenizer = from_description(description)
        if tokenizer.vocab_size != model_config.vocab_size:
            raise ValueError(f"tokenizer.json has {tokenizer.vocab_size} tokens but the model {model_config.vocab_size}")
        state_path = path / "state.pt"  # absent from imported models, which were never trained here
        train_state = None
        if with_state and state_path.exists():
            train_state = torch.load(state_path, map_location="cpu", weights_only=True)
    except UserError:  # already says what to do (e.g. a tiktoken encoding that needs the network)
        raise
    except Exception as error:  # a missing file, bad JSON or config values, a truncated or foreign file
        raise damaged(path, error)
    check_model_digest(metadata, model_config, path)
    return Checkpoint(path, model_config, run_config, tokenizer, model_state, train_state)


def learner_pieces(path: str | Path) -> dict[str, str]:
    """The learner's pieces a checkpoint (or a run folder's best one) was trained with: name -> file."""
    try:
        recorded = json.loads((find_checkpoint(path) / "config.json").read_text()).get("learner_pieces", {})
    except (OSError, ValueError, AttributeError, UserError):
        return {}
    return {str(k): str(v) for k, v in recorded.items()} if isinstance(recorded, dict) else {}


def pieces_note(path: str | Path, doing: str) -> str | None:
    """A line saying that the model was trained with a learner's pieces and what `doing` uses now."""
    recorded = learner_pieces(path)
    if not recorded:
        return None
    hers = ", ".join(f"{name} from {origin}" for name, origin in recorded.items())
    now = "yours again" if pieces.chosen() else "ours (give --practice DIR to use yours)" if doing == "resuming" else "ours"
    return f"note: this model was trained with your pieces ({hers}); {doing} computes with {now}"


def read_run_config(path: str | Path) -> dict:
    """The whole run's config saved in a checkpoint folder (or a run folder's best one), read
    without loading any tensors."""
    return checked_config(find_checkpoint(path))[1]


def read_model_config(path: str | Path) -> ModelConfig:
    """The model config a checkpoint folder (or a run folder's best one) records, read without
    loading any tensors."""
    return checked_config(find_checkpoint(path))[0]


def checked_config(path: Path) -> tuple[ModelConfig, dict]:
    """read_config, or the one-line damaged-checkpoint error."""
    try:
        return read_config(path)
    except Exception as error:  # a missing file, bad JSON, no "model" or "run" entry
        raise damaged(path, error)


def mismatch(model: GPT, state: dict[str, torch.Tensor]) -> str | None:
    """The first difference between the model's tensors and state's, in a few words; None if they fit."""
    expected = model.state_dict()
    if model.config.tie_weights:
        expected.pop(TIED_HEAD)
        state = {name: t for name, t in state.items() if name != TIED_HEAD}
    for name, tensor in expected.items():
        if name not in state:
            return f"{name} is missing"
        if state[name].shape != tensor.shape:
            return f"{name} is {tuple(state[name].shape)}, the config needs {tuple(tensor.shape)}"
    unexpected = sorted(state.keys() - expected.keys())
    return f"{unexpected[0]} is not part of this model" if unexpected else None


def load_weights(model: GPT, state: dict[str, torch.Tensor], source: Path) -> GPT:
    """Copy state into model, after checking that it fits and holds only finite numbers."""
    problem = mismatch(model, state)
    if problem:
        raise UserError(f"the weights in {source} do not fit its config ({problem}); the checkpoint is damaged")
    bad = non_finite(state)
    if bad:
        raise UserError(
            f"the weights in {source} hold NaN or infinite values ({bad[0]}): that training diverged; "
            "use an earlier checkpoint, or train again with a lower learning rate"
        )
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name in state:
                tensor.copy_(state[name])
    return model


def model_from_checkpoint(checkpoint: Checkpoint, device: torch.device | str = "cpu") -> GPT:
    """A GPT built from the checkpoint's config, with its weights loaded."""
    return load_weights(GPT(checkpoint.model_config).to(device), checkpoint.model_state, checkpoint.path)
