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
    if device.type == "cpu" and device.index not in (None, 0):
        raise UserError(f"device {name!r}: the CPU has no numbered devices (all cores work together); use --device cpu")
    if device.type == "cuda" and device.index is not None and torch.cuda.is_available() \
            and device.index >= torch.cuda.device_count():
        raise UserError(f"device {name!r} does not exist: PyTorch sees {torch.cuda.device_count()} CUDA GPU(s), "
                        f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but PyTorch sees no CUDA GPU; use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {name!r} asked for, but this machine has no MPS; use --device cpu or auto")
    return device


def cpu_computes_bf16() -> bool:
    """True where this CPU computes bfloat16 natively *and* PyTorch runs its AVX-512 kernels.

    The flags (AVX512-BF16 or AMX) come from Linux's cpuinfo. PyTorch may still run AVX2
    kernels (ATEN_CPU_CAPABILITY=avx2, or an older build), which emulate bfloat16 slowly: on a
    2-core AMD EPYC so restricted, a 2048x128 @ 128x512 product took 120 ms in bfloat16 against
    1.4 ms in float32. Every precision choice on a CPU (training, Muon's Newton-Schulz, decoding)
    starts from this one answer.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    kernels = torch.backends.cpu.get_cpu_capability()
    return ("avx512_bf16" in flags or "amx_bf16" in flags) and kernels.startswith(("AVX512", "AMX"))


# Where bfloat16 is native on a CPU, whether it is faster depends on the model: measured on a
# 2-core AMD EPYC, bf16 made a 6-layer, 384-wide model's training step 1.6x faster and decoding
# 1.7x faster, but a 4-layer, 128-wide one slower (casts cost more than the small products
# save). So "auto" measures the actual model in both precisions and remembers the answer; bf16
# must win by this factor, so that noise never trades float32's precision for nothing.
BF16_MIN_SPEEDUP = 1.15
# A measurement alternates the two precisions this many times and keeps each one's fastest time:
# a burst of load then slows both sides alike instead of one.
PROBE_ROUNDS = 3
# The first runs of a model each measure again and keep the fastest times of all, so that one
# measurement on a busy machine cannot decide for good; after that the verdict is remembered,
# until it is this old (a new driver, a changed machine).
MEASUREMENTS = 3
MAX_AGE_S = 30 * 24 * 3600


def speed_cache_path() -> Path | None:
    """Where measured choices are remembered: $XDG_CACHE_HOME (or ~/.cache)/minitransformer/speed.json.

    As the XDG specification says, an empty or relative XDG_CACHE_HOME is ignored (it would put the
    cache in whatever folder the command runs in); with no home folder either, nothing is
    remembered (None): choices are measured again each time.
    """
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no HOME and no password entry: nowhere to remember
            return None
    return Path(base) / "minitransformer" / "speed.json"


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


def read_cache() -> dict:
    """Everything remembered; an unreadable or damaged cache counts as empty (it is rewritten)."""
    path = speed_cache_path()
    try:
        known = json.loads(path.read_text()) if path is not None else {}
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def remember(key: str, value: object) -> None:
    """Store a measurement; a cache that cannot be written only means measuring again next time.
    The file is replaced atomically under a name unique to this process, so two processes writing
    at once can lose one entry, never damage the file."""
    path = speed_cache_path()
    if path is None:
        return
    try:
        known = read_cache()
        known[key] = value
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda temp: temp.write_text(json.dumps(known, indent=1)))
    except OSError:
        pass


def positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def measure_precisions(measure, rounds: int = PROBE_ROUNDS, low: torch.dtype = torch.bfloat16) -> tuple[float, float]:
    """(float32 seconds, seconds in low): the fastest of `rounds` alternating measurements each."""
    fp32 = half = math.inf
    for _ in range(rounds):
        fp32 = min(fp32, measure(torch.float32))
        half = min(half, measure(low))
    return fp32, half


def measured_speedup(key: str, measure, remeasure: bool, low: torch.dtype = torch.bfloat16) -> tuple[float, str]:
    """The speedup of low (a 16-bit dtype) over float32 for the work `key` names, and where the
    figure comes from.

    Measures unless the cache holds MEASUREMENTS measurements younger than MAX_AGE_S; a new
    measurement is combined with those before it (the fastest time of each precision is kept).
    """
    entry = read_cache().get(key)
    now = time.time()
    low_s = f"{str(low).removeprefix('torch.')}_s"  # "bfloat16_s" or "float16_s"
    fresh = isinstance(entry, dict) and positive(entry.get("float32_s")) and positive(entry.get(low_s)) \
        and positive(entry.get("measured_at")) and now - entry["measured_at"] < MAX_AGE_S \
        and isinstance(entry.get("measurements"), int) and entry["measurements"] >= 1
    if fresh and not remeasure and entry["measurements"] >= MEASUREMENTS:
        day = time.strftime("%Y-%m-%d", time.localtime(entry["measured_at"]))
        return entry["float32_s"] / entry[low_s], f"measured on {day}, remembered"
    fp32, half = measure_precisions(measure, low=low)
    count = 1
    if fresh and not remeasure:
        fp32, half = min(fp32, entry["float32_s"]), min(half, entry[low_s])
        count = entry["measurements"] + 1
    remember(key, {"float32_s": fp32, low_s: half, "measurements": count,
                   "measured_at": entry["measured_at"] if count > 1 else now})
    return fp32 / half, f"measured now, {count} of {MEASUREMENTS} measurements"


def choose_dtype(name: str, device: torch.device, what: str = "", measure=None, say=None,
                 remeasure: bool = False, float16_fallback: bool = False, memory_bound: bool = False,
                 low: torch.dtype = torch.bfloat16) -> torch.dtype:
    """The dtype to compute in: 'float32', 'bfloat16', 'float16', or 'auto', which picks bfloat16
    only where it is native (CUDA from Ampere on; CPUs with AVX512-BF16 or AMX) and, on a CPU,
    measured faster. float16_fallback: on a CUDA GPU without native bfloat16 (T4, V100), 'auto'
    picks float16 (training, with a gradient scaler) instead of float32. memory_bound: the work
    is bound by reading the weights (decoding), which 16-bit weights halve even where the CPU
    emulates their arithmetic, so it is measured on every CPU, against float32 in `low` (bfloat16,
    or float16 weights where the caller has proved they cannot overflow) where bf16 is not native.

    what: names the model and the work, for the remembered measurement; measure(dtype) returns
    the seconds that work takes in dtype. Without measure, a CPU stays in float32. say (if given)
    gets one line with the choice and its reason. remeasure: forget what was remembered.
    """
    if name in ("float32", "bfloat16", "float16"):
        return getattr(torch, name)
    dtype, reason = torch.float32, ("this CPU has no bfloat16 instructions that PyTorch runs (AVX512-BF16 or AMX), so "
                                    "bfloat16 would be emulated, many times slower")
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        dtype = torch.bfloat16 if native else torch.float16 if float16_fallback else torch.float32
        reason = "the GPU computes bfloat16 natively" if native else "the GPU has no native bfloat16" + (
            " (float16 with a gradient scaler instead, as nanoGPT does)" if float16_fallback else "")
    elif device.type != "cpu" or measure is None:
        reason = f"no measurement for {device.type}"
    elif cpu_computes_bf16() or memory_bound:
        low = torch.bfloat16 if cpu_computes_bf16() else low
        low_name = str(low).removeprefix("torch.")
        speedup, source = measured_speedup(f"{machine_key(device)}; {what}", measure, remeasure, low)
        dtype = low if speedup >= BF16_MIN_SPEEDUP else torch.float32
        how = "" if cpu_computes_bf16() else (f" (this CPU emulates {low_name} arithmetic, but a token's time is "
                                              f"mostly reading the weights, which {low_name} weights halve)")
        reason = (f"{low_name} ran {speedup:.2f}x as fast as float32 for this model here{how}, and needs "
                  f"{BF16_MIN_SPEEDUP}x ({source})")
    if say is not None:
        say(f"precision: {str(dtype).removeprefix('torch.')}, chosen by \"auto\": {reason}. Set the dtype to "
            "float32 or bfloat16 to choose, or pass --remeasure to measure again")
    return dtype


# The peak is measured on square products from 256 wide, doubling while one takes under this
# many seconds, up to the size below: a precision the CPU only emulates (bfloat16 without
# AVX512-BF16, float16) stops small, instead of spending a minute on 2048 x 2048 products.
PEAK_PROBE_S = 0.05
PEAK_SIZE = {"cpu": 2048, "cuda": 8192}
MIN_PEAK = 1e6  # FLOP/s: below any real machine's; a remembered peak below it is measured again


def matmul_peak(dtype: torch.dtype, device: torch.device, remeasure: bool = False) -> float:
    """Measured FLOP/s of a large matrix product in dtype on device (remembered per machine;
    remeasure: measure it again, as `bench --remeasure` asks)."""
    key = f"{machine_key(device)}; matmul peak {str(dtype).removeprefix('torch.')}"
    peak = read_cache().get(key)
    if positive(peak) and peak >= MIN_PEAK and not remeasure:  # a damaged entry (1e-320) would make MFU infinite
        return float(peak)
    # A generator of its own: drawing from torch's global one would change a training's dropout
    # masks depending on whether this was measured in the same process or read from the cache.
    generator = torch.Generator(device=device).manual_seed(0)
    n, largest = 256, PEAK_SIZE.get(device.type, 2048)
    while True:
        a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
        b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
        seconds = best_seconds(lambda: a @ b, device, repeats=3)
        if seconds >= PEAK_PROBE_S or n >= largest:
            break
        n *= 2
    peak = 2 * n**3 / seconds
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


# Bytes copied to measure the memory bandwidth: far larger than any CPU cache.
BANDWIDTH_BYTES = 256 * 2**20


def copy_bandwidth(device: torch.device) -> float:
    """Bytes per second that one large copy moves on device (each byte read once and written once,
    both counted): the rate at which generation can stream a model's weights at best."""
    source = torch.empty(BANDWIDTH_BYTES // 4, dtype=torch.float32, device=device).fill_(1.0)
    target = torch.empty_like(source)
    seconds = best_seconds(lambda: target.copy_(source), device, repeats=3)
    return 2 * BANDWIDTH_BYTES / seconds


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a clock around it measures the work itself."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device, dtype: torch.dtype):
    """Run matrix products in dtype (bfloat16 or float16), or change nothing for float32."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
