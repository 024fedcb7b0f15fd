"""The `sample` command: load a checkpoint and stream generated text to stdout.

Design choice: text is printed as tokens arrive. A byte-level BPE token can end in the middle of
a multi-byte character, which decodes to the replacement character U+FFFD; such a tail is held
back until the next token completes it.
"""

import sys

import torch

from .errors import UserError
from .generate import check_sampling, stream_tokens
from .load import load_model
from .device import choose_device

REPLACEMENT_CHARACTER = "\ufffd"


def sample(
    checkpoint: str,
    prompt: str = "\n",
    max_new_tokens: int = 500,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    num_samples: int = 1,
    seed: int = 1337,
    device: str = "auto",
) -> None:
    """Write num_samples continuations of prompt to stdout, each as it is generated."""
    check_sampling(temperature, top_k, top_p)
    if max_new_tokens < 0 or num_samples < 1:
        raise UserError("--max-new-tokens must be 0 or more and --num-samples at least 1")
    if not prompt:
        raise UserError("the prompt is empty; give at least one character, e.g. --prompt $'\\n'")
    torch_device = choose_device(device)
    model, tokenizer = load_model(checkpoint, torch_device)
    idx = torch.tensor([tokenizer.encode(prompt)], device=torch_device)  # (1, T)
    generator = torch.Generator(device=torch_device).manual_seed(seed)
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
