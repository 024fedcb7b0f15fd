"""Checkpoints: a folder holding everything needed to sample from a model or continue training it.

A checkpoint folder (a run keeps two, `last/` and `best/`) holds:
- `model.pt`: the weights, a state dict of tensors;
- `config.json`: the model's config and the whole run's config;
- `tokenizer.json`: the tokenizer's description, to rebuild it without the corpus;
- `state.pt`: the training state (step, optimizer, random-number generators, best val loss).

Design choices:
- Loading never runs code from a file: tensors come through `torch.load(..., weights_only=True)`,
  the rest is JSON.
- A checkpoint is written into `NAME.tmp/` and then swapped in by renames, so a crash leaves the
  previous checkpoint intact: under `NAME/`, or, if it struck between the two renames, under
  `NAME.old/`, where loading finds it.
- A missing or damaged checkpoint is a `UserError` that says what to do, never a traceback.
"""

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import __version__
from .config import ModelConfig
from .errors import UserError
from .model import GPT
from .tokenizer import CharTokenizer, TiktokenTokenizer, from_description

FILES = ("model.pt", "config.json", "tokenizer.json", "state.pt")


@dataclass
class Checkpoint:
    """What a checkpoint folder holds, loaded."""

    path: Path
    model_config: ModelConfig
    run_config: dict
    tokenizer: CharTokenizer | TiktokenTokenizer
    model_state: dict
    train_state: dict


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    run_config: dict,
    tokenizer: CharTokenizer | TiktokenTokenizer,
    train_state: dict,
) -> None:
    """Write a checkpoint folder at path, replacing any checkpoint there only once it is complete."""
    temp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    torch.save(model.state_dict(), temp / "model.pt")
    config = {"model": asdict(model.config), "run": run_config, "version": __version__}
    (temp / "config.json").write_text(json.dumps(config, indent=2))
    (temp / "tokenizer.json").write_text(json.dumps(tokenizer.describe()))
    torch.save(train_state, temp / "state.pt")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(temp, path)
    shutil.rmtree(old, ignore_errors=True)


def find_checkpoint(path: str | Path) -> Path:
    """Resolve a checkpoint folder, or a run folder (its `best/`, else its `last/`).

    A `NAME.old/` folder stands in for `NAME/` when a crash struck between save's two renames.
    """
    path = Path(path)
    for candidate in (path, path / "best", path / "last"):
        for folder in (candidate, candidate.with_name(candidate.name + ".old")):
            if (folder / "model.pt").is_file():
                return folder
    raise UserError(
        f"no checkpoint at {path}; pass a run folder written by `minitransformer train` "
        "(e.g. runs/shakespeare_char) or one of its best/ or last/ folders"
    )


def damaged(path: Path, error: Exception) -> UserError:
    """The one error for a checkpoint folder whose files cannot be read."""
    return UserError(
        f"the checkpoint at {path} is damaged ({type(error).__name__}: {error}); "
        f"it needs {', '.join(FILES)}; use another checkpoint or train again"
    )


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Load a checkpoint folder (or a run folder's best one) onto device."""
    path = find_checkpoint(path)
    try:
        config = json.loads((path / "config.json").read_text())
        tokenizer = from_description(json.loads((path / "tokenizer.json").read_text()))
        model_config = ModelConfig(**config["model"])
        model_state = torch.load(path / "model.pt", map_location=device, weights_only=True)
        train_state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except UserError:
        raise
    except Exception as error:  # a missing file, bad JSON, a truncated or foreign tensor file
        raise damaged(path, error)
    return Checkpoint(path, model_config, config["run"], tokenizer, model_state, train_state)


def read_run_config(path: str | Path) -> dict:
    """The whole run's config saved in a checkpoint folder (or a run folder's best one), read
    without loading any tensors."""
    path = find_checkpoint(path)
    try:
        return json.loads((path / "config.json").read_text())["run"]
    except Exception as error:  # a missing file, bad JSON, no "run" entry
        raise damaged(path, error)


def model_from_checkpoint(checkpoint: Checkpoint, device: torch.device | str = "cpu") -> GPT:
    """A GPT built from the checkpoint's config, with its weights loaded."""
    model = GPT(checkpoint.model_config).to(device)
    try:
        model.load_state_dict(checkpoint.model_state)
    except RuntimeError as error:  # missing, unexpected or mis-shaped tensors
        raise UserError(f"the weights in {checkpoint.path} do not fit its config.json ({error}); the checkpoint is damaged")
    return model
