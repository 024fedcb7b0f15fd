"""The `import-gpt2` and `export-gpt2` commands: Hugging Face GPT-2 folders in, our models out.

The conversions themselves (names, configs, tensors) live in formats/gpt2.py; this file decides
where the files go. Design choice: both commands write into a new or empty folder only, built under
a temporary name and renamed into place when complete, so an existing folder is never replaced.
"""

import json
import time
from dataclasses import asdict
from pathlib import Path

from safetensors.torch import save_file

from ..config import DataConfig, TrainConfig
from ..errors import UserError, short_cause, user_path
from ..formats.checkpoint import save_checkpoint, weights_metadata
from ..formats.gpt2 import HUB_MODELS, check_exportable, hf_config_for, load_hf_folder, state_to_hf
from ..formats.hf_tokenizer import write_gpt2_tokenizer_files
from ..formats.load import load_model
from ..machine.files import write_folder_atomically
from ..tokenizer import TiktokenTokenizer


def download(name: str) -> Path:
    """A hub model's folder, fetched by huggingface_hub (optional) into its cache."""
    how = (f"or download the folder yourself (config.json and model.safetensors from "
           f"huggingface.co/{name}) and pass its path")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UserError(f"fetching {name!r} needs huggingface_hub: pip install -e \".[hub]\"; {how}")
    try:
        return Path(snapshot_download(name, allow_patterns=["config.json", "model.safetensors"]))
    except Exception as error:  # offline, a refused connection, an unknown name
        raise UserError(f"could not fetch {name!r} from the Hugging Face hub ({type(error).__name__}); "
                        f"connect to the internet, {how}")


def make_parent(target: Path) -> None:
    """Create the folder that will hold target, or say in one line why it cannot be."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot make the folder {target.parent} ({error.strerror}); choose another --out")


def check_empty(target: Path) -> None:
    """Refuse to write into a file or a folder that already holds something."""
    if target.is_file() or target.is_dir() and any(target.iterdir()):
        raise UserError(f"{target} already exists and is not empty; choose another --out")


def import_gpt2(source: str, out: str, say=print) -> Path:
    """Write a checkpoint folder at out from a Hugging Face GPT-2 folder or hub name."""
    started = time.perf_counter()
    target = user_path(out)
    check_empty(target)
    make_parent(target)
    folder = user_path(source)
    if not folder.is_dir():
        if source not in HUB_MODELS:
            raise UserError(f"{source!r} is neither a folder nor a hub model; give a Hugging Face GPT-2 folder "
                            f"(config.json and model.safetensors) or one of {', '.join(HUB_MODELS)}")
        folder = download(source)
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder} has no config.json; give a Hugging Face GPT-2 model folder")
    model, tokenizer = load_hf_folder(folder)
    model_table = {key: value for key, value in asdict(model.config).items() if key != "vocab_size"}
    run_config = {"model": model_table, "data": asdict(DataConfig(tokenizer="gpt2")), "train": asdict(TrainConfig())}
    save_checkpoint(target, model, run_config, tokenizer, None, source=f"Hugging Face GPT-2 from {source}")
    say(f"imported {source}: {model.num_parameters():,} parameters, {model.config.n_layer} layers, "
        f"{model.config.n_embd} wide, context {model.config.block_size}, in {time.perf_counter() - started:.1f} s "
        f"-> {target}")
    return target


def export_gpt2(checkpoint: str, out: str, say=print) -> Path:
    """Write config.json, model.safetensors and tokenizer files that transformers loads, at out."""
    model, tokenizer = load_model(checkpoint)
    check_exportable(model.config)
    gpt2_tokens = isinstance(tokenizer, TiktokenTokenizer) and tokenizer.name == "gpt2"
    target = user_path(out)
    check_empty(target)
    make_parent(target)
    written = []

    def write(folder: Path) -> None:
        (folder / "config.json").write_text(json.dumps(hf_config_for(model.config, gpt2_tokens), indent=2))
        save_file(state_to_hf(model), folder / "model.safetensors", metadata=weights_metadata(tokenizer))
        written.extend(["config.json", "model.safetensors"])
        if gpt2_tokens:
            written.extend(write_gpt2_tokenizer_files(tokenizer.encoding, folder, model.config.block_size))
        else:
            (folder / "tokenizer.json").write_text(json.dumps(tokenizer.describe()))
            written.append("tokenizer.json")

    try:
        write_folder_atomically(target, write, replace=False)
    except Exception as error:  # OSError, and safetensors' own error for a full disk
        raise UserError(f"could not write {target} ({short_cause(error)}); free some disk space or choose another --out")
    say(f"wrote {target}: {', '.join(written)}")
    if not gpt2_tokens:
        say(f"note: this model's tokenizer ({tokenizer.describe()['kind']}) is not GPT-2's: transformers gets the "
            "model only; tokenizer.json is minitransformer's, for `minitransformer sample` and `import-gpt2`")
    return target
