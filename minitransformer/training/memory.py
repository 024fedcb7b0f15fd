"""What a training run costs, from its config alone: the memory it needs (checked before anything
is built) and the arithmetic per token (for the model FLOP utilisation that training reports).

`check_memory` refuses a config that cannot fit, in milliseconds and with one line naming the
knob to turn, instead of letting the allocator fail minutes later with a traceback (or the
machine swap itself to a halt).

Design choices:
- The estimate counts float32 numbers (4 bytes each), an upper bound also for bf16 autocast:
  - model state: weights, gradients and two AdamW moments per parameter, 16 bytes a parameter;
  - activations kept for the backward pass: per layer and token about 34 vectors of C numbers
    (LayerNorms, q, k, v, the 4C-wide MLP, residuals; Korthikanti et al. 2022 count the same),
    plus the manual attention path's scores, masked scores and weights, 3 x H x T per token;
  - the output layer's logits, their softmax and its gradient: 3 x V per token.
- Available memory is the operating system's "available" figure (less a container's limit when
  that is lower), or the GPU's free memory. Where it cannot be read, nothing is refused.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ModelConfig, TrainConfig
from ..errors import UserError

BYTES = 4  # float32
STATE_BYTES_PER_PARAMETER = 4 * BYTES  # weight, gradient, AdamW's two moments
ACTIVATION_VECTORS_PER_LAYER = 34  # C-wide vectors kept per token and layer (see the docstring)
GIB = 2**30


def flops_per_token(config: ModelConfig) -> float:
    """Floating-point operations of one training step per token (forward and backward), as
    nanoGPT and the PaLM paper count them: 6 per weight of every matrix product (2 forward, 4
    backward), plus attention's scores and weighted sums, 12 x n_layer x context x C."""
    C = config.n_embd
    per_block = 12 * C * C if config.mlp else 4 * C * C  # attention's 4 C x C, the MLP's 8
    matmul_weights = config.n_layer * per_block + config.vocab_size * C  # the blocks, and the output head
    return 6 * matmul_weights + 12 * config.n_layer * config.block_size * C


def count_parameters(config: ModelConfig) -> int:
    """The parameters GPT(config) will have, counted from the config alone (tied matrices once)."""
    C, V = config.n_embd, config.vocab_size
    bias = 1 if config.bias else 0
    layer_norm = C * (1 + bias)
    attention = layer_norm + (3 * C * C + 3 * C * bias) + (C * C + C * bias)
    mlp = layer_norm + (4 * C * C + 4 * C * bias) + (4 * C * C + C * bias)
    block = attention + (mlp if config.mlp else 0)
    total = V * C + config.n_layer * block + layer_norm
    if config.position == "learned":
        total += config.block_size * C
    if not config.tie_weights:
        total += V * C
    return total


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    state_bytes: int
    activation_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.state_bytes + self.activation_bytes


def estimate_training_memory(config: ModelConfig, train: TrainConfig) -> MemoryEstimate:
    """Bytes that one training step of this model and micro-batch keeps in memory at its peak."""
    parameters = count_parameters(config)
    tokens = train.batch_size * config.block_size  # B x T
    attention_scores = 3 * config.n_head * config.block_size if config.attention == "manual" else 0
    per_token = config.n_layer * (ACTIVATION_VECTORS_PER_LAYER * config.n_embd + attention_scores) + 3 * config.vocab_size
    return MemoryEstimate(parameters, parameters * STATE_BYTES_PER_PARAMETER, tokens * per_token * BYTES)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for this process on device, or None when it cannot be told."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024  # the file counts in kB
    except (OSError, ValueError):
        try:
            available = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    try:  # a container's memory limit (cgroup v2) can be far below the machine's
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            room = int(limit) - used
            available = room if available is None else min(available, room)
    except (OSError, ValueError):
        pass
    return available


def check_memory(config: ModelConfig, train: TrainConfig, device: torch.device) -> MemoryEstimate:
    """Raise UserError when training this config would need more memory than device has free."""
    estimate = estimate_training_memory(config, train)
    available = available_memory(device)
    if available is None or estimate.total_bytes <= available:
        return estimate
    model_knob = "model.n_layer or model.n_embd"
    batch_knob = "train.batch_size or model.block_size (train.grad_accum keeps the tokens per step)"
    if estimate.state_bytes > available:  # the model alone does not fit
        knob = f"lower {model_knob}"
    else:
        knob = f"lower {batch_knob}, or {model_knob}"
    raise UserError(
        f"this config needs about {estimate.total_bytes / GIB:,.1f} GiB to train ({estimate.parameters:,} "
        f"parameters with gradients and optimizer state: {estimate.state_bytes / GIB:,.1f} GiB; activations "
        f"for batch {train.batch_size} x context {config.block_size}: {estimate.activation_bytes / GIB:,.1f} GiB), "
        f"but {device.type} has {available / GIB:,.1f} GiB free; {knob}"
    )


def check_generation_memory(config: ModelConfig, rows: int, device: torch.device) -> None:
    """Raise UserError when generating `rows` sequences at once (generate_batch) would need more
    memory than device has free: per row the key/value cache (2 L T C), a full window's attention
    scores when the cache is built (H T T), its activations (about 8 T C) and the logits (V)."""
    T, C = config.block_size, config.n_embd
    per_row = (2 * config.n_layer * T * C + config.n_head * T * T + 8 * T * C + config.vocab_size) * BYTES
    available = available_memory(device)
    if available is not None and rows * per_row > available:
        raise UserError(f"generating {rows:,} sequences at once needs about {rows * per_row / GIB:,.1f} GiB, but "
                        f"{device.type} has {available / GIB:,.1f} GiB free; ask for fewer (--num-samples, or fewer "
                        f"prompts), at most {max(available // per_row, 1):,}")
