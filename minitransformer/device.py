"""Where the model runs and in which precision: `choose_device`, `choose_dtype`, `autocast`.

Used by training, sampling and inspection alike, so it lives apart from all three.

Design choices:
- "auto" takes a CUDA GPU, then Apple's MPS, then the CPU; a device asked for by name must exist,
  or the user gets one line saying what this machine has.
- "auto" precision is bfloat16 only where the hardware computes it natively: CUDA cards with
  native bf16 (Ampere and later; older ones would emulate it, slowly), and CPUs with AMX tiles for
  models wide enough for the saving to outweigh the casts. Everything else stays float32.
"""

from pathlib import Path

import torch

from .errors import UserError


def choose_device(name: str) -> torch.device:
    """'auto' picks cuda, then mps, then cpu; a named device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {name!r} asked for, but this machine has no MPS; use --device cpu or auto")
    return device


def cpu_has_amx() -> bool:
    """True on CPUs with AMX tiles for bfloat16 (Intel Sapphire Rapids and later), read from Linux."""
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


# Measured on a 2-core Sapphire Rapids CPU: bf16 autocast made 6-layer, 384-wide training about
# 3x faster and 4-layer, 128-wide training slower, because casting costs more than the small
# matrix products save. 256 wide is where bf16 started to win.
BF16_MIN_WIDTH_ON_CPU = 256


def choose_dtype(name: str, device: torch.device, n_embd: int) -> torch.dtype:
    """The autocast dtype: 'auto' picks bfloat16 where it is faster, float32 otherwise."""
    if name == "float32":
        return torch.float32
    if name == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.bfloat16 if native else torch.float32
    if device.type == "cpu" and cpu_has_amx() and n_embd >= BF16_MIN_WIDTH_ON_CPU:
        return torch.bfloat16
    return torch.float32


def autocast(device: torch.device, dtype: torch.dtype):
    """Run matrix products in dtype (bfloat16), or change nothing for float32."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
