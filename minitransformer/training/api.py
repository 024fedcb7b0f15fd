"""Training from Python (a notebook, a script): `train(config, out=..., **overrides)`.

    from minitransformer import train
    model, tokenizer, metrics = train("configs/tiny.toml", out="runs/nb", max_steps=300)

It runs the same training as `minitransformer train` (training/loop.py) and returns what a
notebook wants next: the trained model (eval mode), its tokenizer, and the metrics rows.

Design choices:
- Keyword overrides name a config key, alone (`max_steps=300`: every key is unique across the
  [model], [data] and [train] tables) or with its table (`**{"train.max_steps": 300}`).
- Progress shows as a bar that works in Jupyter and on a terminal (tqdm.auto), with a line at
  every evaluation; Ctrl-C, or Interrupt Kernel, saves `last/` as on the command line.
- Errors are `UserError` exceptions whose advice names this function's arguments
  (`resume=True`, `out=...`), not the command line's flags.
"""

import os
import re
from pathlib import Path
from typing import NamedTuple

from ..config import DEFAULT_MODEL, SECTIONS, TrainConfig, check_tables, load_config, read_toml
from ..formats.checkpoint import read_run_config
from ..errors import UserError
from ..model import GPT
from ..tokenizer import CharTokenizer, TiktokenTokenizer
from .loop import train as run_training
from .run_folder import check_has_run, read_metrics_rows

# Command-line advice in messages, and what it is in Python.
PYTHON_ADVICE = [
    (re.compile(r"--set (\w+)\.(\w+)=(\S+)"), r"\2=\3"),
    (re.compile(r"--resume"), "resume=True"),
    (re.compile(r"--out DIR"), "out=..."),
    (re.compile(r"--out"), "out="),
    (re.compile(r"--init-from"), "init_from="),
    (re.compile(r"--pause-after"), "pause_after"),
    (re.compile(r"--remeasure"), "remeasure=True"),
]


class Trained(NamedTuple):
    """What `train` returns: `model, tokenizer, metrics = train(...)`."""

    model: GPT  # in eval mode, on the training's device; the weights of last/ (the run folder also keeps best/)
    tokenizer: CharTokenizer | TiktokenTokenizer
    metrics: list[dict]  # the rows of metrics.jsonl: step, train_loss, val_loss, lr, elapsed_s, ...


def python_advice(message: str) -> str:
    for pattern, replacement in PYTHON_ADVICE:
        message = pattern.sub(replacement, message)
    return message


def sections_of(overrides: dict) -> dict[str, dict]:
    """Keyword overrides sorted into their tables: {"max_steps": 300} -> {"train": {"max_steps": 300}}."""
    tables: dict[str, dict] = {section: {} for section in SECTIONS}
    for key, value in overrides.items():
        section, dot, name = key.rpartition(".")
        if not dot:
            section = next((s for s, names in SECTIONS.items() if key in names), None)
            name = key
        if section not in SECTIONS or name not in SECTIONS[section]:
            valid = ", ".join(name for names in SECTIONS.values() for name in names)
            raise UserError(f"unknown setting {key!r}; the settings are: {valid}")
        tables[section][name] = value
    return tables


def check_arguments(**arguments) -> None:
    """Refuse arguments of train that are not of their kind: paths (str or Path, or None) and flags (True or False)."""
    for name, value in arguments.items():
        if name in ("config", "out", "init_from"):
            if value is not None and not isinstance(value, (str, os.PathLike)):
                raise UserError(f"{name} must be a path (a str or Path) or None; got {value!r}")
        elif not isinstance(value, bool):
            raise UserError(f"{name} must be True or False; got {value!r}")


def train(config: str | None = None, out: str | None = None, resume: bool = False, init_from: str | None = None,
          pause_after: int | None = None, quiet: bool = False, remeasure: bool = False, **overrides) -> Trained:
    """Train as the TOML file `config` says (the default run without one), changed by keyword
    overrides (e.g. max_steps=300, n_layer=2, learning_rate=1e-3), into the folder `out`.

    resume: continue the run in `out` (with its saved config, changed by the overrides);
    init_from: start from a checkpoint's model (fine-tuning); pause_after: stop after this many
    steps, saving `last/`; quiet: print nothing; remeasure: measure the "auto" precision again.
    Returns (model, tokenizer, metrics). Interrupted (Ctrl-C, Interrupt Kernel), it saves `last/`
    and raises KeyboardInterrupt saying where to resume.
    """
    try:
        check_arguments(config=config, out=out, resume=resume, init_from=init_from, quiet=quiet, remeasure=remeasure)
        changes = sections_of(overrides | ({"train.out_dir": str(out)} if out is not None else {}))
        if resume and config is None:  # as on the command line: the run's own config
            folder = Path(out if out is not None else TrainConfig().out_dir)
            check_has_run(folder)
            tables = read_run_config(folder / "last")
        elif init_from is not None and config is None:
            tables = {}  # the architecture comes from the checkpoint
        else:
            tables = read_toml(config) if config is not None else {"model": DEFAULT_MODEL}
            check_tables(tables, config)
        merged = {section: {**tables.get(section, {}), **changes[section]} for section in SECTIONS}
        run_config = load_config(tables=merged)
        result = run_training(run_config, resume=resume, pause_after=pause_after, quiet=quiet, init_from=init_from,
                              remeasure=remeasure, progress_bar="auto",
                              resume_hint=lambda folder: f"train(out={str(folder)!r}, resume=True)")
    except UserError as error:
        raise UserError(python_advice(str(error))) from None
    if result["stopped_by"] == "interrupt":
        # Interrupt Kernel (Ctrl-C) stops the cell as Jupyter expects, once last/ is saved: a normal
        # return would look like a finished training to the code after it.
        out = run_config.train.out_dir
        raise KeyboardInterrupt(f"training interrupted at step {result['step']}; {out}/last saved; "
                                f"resume with train(out={out!r}, resume=True)")
    metrics = read_metrics_rows(Path(run_config.train.out_dir) / "metrics.jsonl", say=lambda line: None)
    return Trained(result["model"].eval(), result["tokenizer"], metrics)
