"""Where the model runs and in which precision: `choose_device`, `choose_dtype`, `autocast`.

Used by training, sampling and inspection alike, so it lives apart from all three.

Design choices:
- "auto" takes a CUDA GPU, then Apple's MPS, then the CPU; a device asked for by name must exist,
  or the user gets one line saying what this machine has.
- "auto" precision is bfloat16 only where the hardware computes it natively: CUDA cards with
  native bf16 (Ampere and later; older ones would emulate it, slowly), and CPUs with AVX512-BF16
  or AMX where a measurement of the actual model says bf16 is faster. The measurement takes a
  second or two and is remembered per machine, torch version and model shape. Everything else
  stays float32.
"""

import json
import math
import os
import platform
import time
from pathlib import Path

import torch

from ..errors import UserError
from .files import write_atomically


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


def cpu_computes_bf16() -> bool:
    """True on CPUs with bfloat16 instructions (AVX512-BF16 or AMX), read from Linux's cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


# Where bfloat16 is native on a CPU, whether it is faster depends on the model: measured on a
# 2-core AMD EPYC, bf16 made a 6-layer, 384-wide model's training step 1.6x faster and decoding
# 1.7x faster, but a 4-layer, 128-wide one slower (casts cost more than the small products
# save). So "auto" measures the actual model in both precisions once and remembers the answer;
# bf16 must win by this factor, so that noise never trades float32's precision for nothing.
BF16_MIN_SPEEDUP = 1.15


def speed_cache_path() -> Path:
    """Where measured choices are remembered: $XDG_CACHE_HOME (or ~/.cache)/minitransformer/speed.json."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "minitransformer" / "speed.json"


def machine_key(device: torch.device) -> str:
    """What a measurement depends on besides the model: the processor and the torch version."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        name += f", {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    return f"{name}; torch {torch.__version__}"


def remembered(key: str) -> object | None:
    try:
        return json.loads(speed_cache_path().read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def remember(key: str, value: object) -> None:
    """Store a measurement; a cache that cannot be written only means measuring again next time."""
    path = speed_cache_path()
    try:
        known = json.loads(path.read_text()) if path.is_file() else {}
        known[key] = value
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda temp: temp.write_text(json.dumps(known, indent=1)))
    except (OSError, ValueError):
        pass


def choose_dtype(name: str, device: torch.device, what: str = "", measure=None) -> torch.dtype:
    """The dtype to compute in: 'float32', 'bfloat16', or 'auto', which picks bfloat16 only where
    it is native (CUDA from Ampere on; CPUs with AVX512-BF16 or AMX) and, on a CPU, measured faster.

    what: names the model and the work, for the remembered measurement; measure(dtype) returns
    the seconds that work takes in dtype. Without measure, a CPU stays in float32.
    """
    if name == "float32":
        return torch.float32
    if name == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return torch.bfloat16 if native else torch.float32
    if device.type != "cpu" or measure is None or not cpu_computes_bf16():
        return torch.float32
    key = f"{machine_key(device)}; {what}"
    speedup = remembered(key)
    if not isinstance(speedup, (int, float)):
        speedup = measure(torch.float32) / measure(torch.bfloat16)
        remember(key, speedup)
    return torch.bfloat16 if speedup >= BF16_MIN_SPEEDUP else torch.float32


def matmul_peak(dtype: torch.dtype, device: torch.device) -> float:
    """Measured FLOP/s of a large matrix product in dtype on device (remembered per machine)."""
    key = f"{machine_key(device)}; matmul peak {str(dtype).removeprefix('torch.')}"
    peak = remembered(key)
    if isinstance(peak, (int, float)):
        return float(peak)
    n = 2048 if device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    peak = 2 * n**3 / best_seconds(lambda: a @ b, device, repeats=3)
    remember(key, peak)
    return peak


def best_seconds(work, device: torch.device, repeats: int = 2, warmups: int = 1) -> float:
    """The shortest of `repeats` timed calls of work(), after `warmups` untimed ones (first calls
    allocate memory and pick kernels). The shortest is the least disturbed by other load."""
    for _ in range(warmups):
        work()
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        work()
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock around it measures the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: torch.dtype):
    """Run matrix products in dtype (bfloat16), or change nothing for float32."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
