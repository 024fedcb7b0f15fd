"""The `sample` command: load a checkpoint and write generated text to stdout.

Design choice: text is printed as tokens arrive. A byte-level BPE token can end in the middle of
a multi-byte character, which decodes to the replacement character U+FFFD; such a tail is held
back until the next token completes it.
"""

import sys
from pathlib import Path

import torch

from ..errors import UserError
from ..generate import check_sampling, decoding_dtype, generate_batch, prepare_for_decoding, stream_tokens
from ..formats.checkpoint import pieces_note
from ..formats.load import load_model
from ..machine.device import choose_device
from ..training.memory import check_generation_memory

REPLACEMENT_CHARACTER = "\ufffd"


def sample(
    checkpoint: str,
    prompts: list[str] | str = "\n",
    max_new_tokens: int = 500,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    num_samples: int = 1,
    seed: int = 1337,
    device: str = "auto",
    dtype: str = "auto",
    remeasure: bool = False,
) -> None:
    """Write num_samples continuations of each prompt to stdout.

    One prompt streams as it is generated; several are generated together with generate_batch
    and printed in order. dtype: "float32", "bfloat16", "float16", or "auto" (a 16-bit one where
    measured faster; the choice and its reason go to stderr). remeasure: measure that choice again.
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    check_sampling(temperature, top_k, top_p)
    if max_new_tokens < 0 or num_samples < 1:
        raise UserError("--max-new-tokens must be 0 or more and --num-samples at least 1")
    if not 0 <= seed < 2**64:
        raise UserError(f"--seed must be a whole number from 0 to 2**64 - 1, got {seed}")
    if not prompts or any(not prompt for prompt in prompts):
        raise UserError("a prompt is empty; give at least one character, e.g. --prompt $'\\n'")
    if sys.stdout is None or sys.stdout.closed:
        raise UserError("standard output is closed, so the text has nowhere to go; redirect it instead, "
                        "e.g. > sample.txt")
    torch_device = choose_device(device)
    model, tokenizer = load_model(checkpoint, torch_device)
    if len(prompts) > 1:
        check_generation_memory(model.config, len(prompts) * num_samples, torch_device)
    encoded = [tokenizer.encode(prompt) for prompt in prompts]
    say = lambda message: print(message, file=sys.stderr)  # noqa: E731  (stdout is for the text alone)
    trained_with = pieces_note(checkpoint, "sampling")
    if trained_with:
        say(trained_with)
    rows = 1 if len(prompts) == 1 else len(prompts) * num_samples  # one prompt streams its samples one by one
    model = prepare_for_decoding(model, decoding_dtype(model, dtype, torch_device, say, remeasure, rows))
    generator = torch.Generator(device=torch_device).manual_seed(seed)
    if len(prompts) == 1:
        stream(model, tokenizer, prompts[0], encoded[0], max_new_tokens, temperature, top_k, top_p, num_samples, generator)
        return
    rows = generate_batch(model, [ids for ids in encoded for _ in range(num_samples)], max_new_tokens,
                          temperature, top_k, top_p, generator)
    out = sys.stdout
    for number, row in enumerate(rows):
        if number > 0:
            out.write("\n---------------\n")
        prompt, ids = prompts[number // num_samples], encoded[number // num_samples]
        out.write(prompt + tokenizer.decode(row[len(ids):]) + "\n")
    out.flush()


def stream(model, tokenizer, prompt: str, ids: list[int], max_new_tokens: int, temperature: float,
           top_k: int | None, top_p: float | None, num_samples: int, generator: torch.Generator) -> None:
    """Print num_samples continuations of one prompt, each token as it is generated."""
    idx = torch.tensor([ids], device=generator.device)  # (1, T)
    out = sys.stdout
    for number in range(num_samples):
        if number > 0:
            out.write("\n---------------\n")
        out.write(prompt)
        new_ids: list[int] = []
        printed = 0
        for token in stream_tokens(model, idx, max_new_tokens, temperature, top_k, top_p, generator=generator):
            new_ids.append(token.item())
            text = tokenizer.decode(new_ids).rstrip(REPLACEMENT_CHARACTER)
            out.write(text[printed:])
            out.flush()
            printed = len(text)
        out.write(tokenizer.decode(new_ids)[printed:] + "\n")
        out.flush()


def read_prompt_file(path: str) -> list[str]:
    """One prompt per line of a UTF-8 text file (empty lines skipped); "\\n" in a line is a newline."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"--prompt-file {path} cannot be read ({error}); give a UTF-8 text file, one prompt per line")
    prompts = [line.replace("\\n", "\n") for line in lines if line.strip()]
    if not prompts:
        raise UserError(f"--prompt-file {path} holds no prompt; write one prompt per line")
    return prompts
