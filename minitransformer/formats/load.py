"""`load_model`: one call from any saved model to a ready GPT and its tokenizer.

It is what `sample`, `inspect`, `export-gpt2` and `train --init-from` use, so each of them takes
any of the three kinds of folder:
- a checkpoint folder written by training or `import-gpt2` (`best/`, `last/`, ...);
- a run folder (its best checkpoint, else its last);
- a Hugging Face GPT-2 folder (`config.json` with `model.safetensors` or `pytorch_model.bin`).
"""

import os
from pathlib import Path

import torch

from .checkpoint import load_checkpoint, model_from_checkpoint
from ..errors import UserError, user_path
from ..machine.device import choose_device
from .gpt2 import is_hf_folder, load_hf_folder
from ..model import GPT
from ..tokenizer import CharTokenizer, TiktokenTokenizer


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[GPT, CharTokenizer | TiktokenTokenizer]:
    """(model, tokenizer) for a checkpoint, run or Hugging Face GPT-2 folder; the model in eval mode.

    device: a torch.device or its name ("cpu", "cuda", "cuda:1", "mps", "auto"); one this machine
    lacks is said to be that, before the checkpoint is read."""
    if not isinstance(path, (str, os.PathLike)):
        raise UserError(f"load_model takes the path of a checkpoint, run or GPT-2 folder (a str or Path); got {path!r}")
    if not isinstance(device, (str, torch.device)):
        raise UserError(f"device must be a name such as 'cpu' or 'cuda', or a torch.device; got {device!r}")
    device = choose_device(str(device))
    path = user_path(path)
    if is_hf_folder(path):
        return load_hf_folder(path, device)
    checkpoint = load_checkpoint(path, device)
    return model_from_checkpoint(checkpoint, device).eval(), checkpoint.tokenizer
