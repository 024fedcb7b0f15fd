"""Text generation: pick a next token from the model's logits, append it, repeat.

Design choices:
- `stream_tokens` yields one token at a time, so a caller can print text as it is written;
  `generate` collects them into one tensor.
- With `use_cache=True` each step feeds only the newest token and reads the earlier positions'
  keys and values from a `KVCache`; the result equals re-running the whole sequence (tested).
- On a CPU, at batch 1 with nobody looking inside, the one-token step runs as a flat list of the
  same operations (machine/cpu_decode.py), without the module calls and taps that cost more
  there than the arithmetic; the logits are the model's (tested).
- On a CUDA GPU the one-token step is replayed from a recorded CUDA graph over a StaticKVCache
  (machine/cuda_graphs.py): the same computation launched as one graph instead of ~130 kernels.
  `cuda_graph=False` runs every step eagerly, as on a CPU; greedy text is the same (tested on a GPU).
- Past `block_size` the context is cropped to its last `block_size` tokens, and the cropped window
  starts again at position 0. Learned positions have no row beyond `block_size - 1`; sinusoidal
  and rotary positions could be computed further, but the model never saw them in training, and
  rotary encodings are relative, so for them cropping only forgets the oldest tokens. Once
  cropping starts, every step shifts the window and every position, so the cache is rebuilt from
  the window each step: exact, and no slower than generating without a cache.
- Sampling: temperature divides the logits (0 means greedy: always the most likely token); top-k
  keeps the k most likely tokens; top-p (nucleus) keeps the smallest set of most likely tokens
  whose probabilities reach p. A `torch.Generator` makes sampling reproducible. The draw itself
  (`draw`) never reads a value back to the host, so a GPU never waits for the host between tokens.
"""

import copy
import math
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch

from .machine.half_weights import FLOAT16_SAFE, float16_bound, store_half_weights
from .machine.device import best_seconds, choose_dtype, cpu_computes_bf16
from .errors import UserError, check_token_ids, real_number, whole_number
from .kv_cache import KVCache
from .machine.cpu_decode import lean_decoder
from .machine.cuda_graphs import decode_graph
from .activations import check_model
from .model import GPT
from .machine.packed import pack_linears, packing_available


def check_sampling(temperature: float, top_k: int | None, top_p: float | None, max_new_tokens: int = 0,
                   generator: torch.Generator | None = None) -> None:
    """Raise UserError for settings that select no token, or that are not numbers of their kind."""
    if not whole_number(max_new_tokens) or max_new_tokens < 0:
        raise UserError(f"max_new_tokens must be a whole number >= 0, got {max_new_tokens!r}")
    if top_k is not None and not whole_number(top_k):
        raise UserError(f"top_k must be a whole number (or None for every token), got {top_k!r}")
    for name, value in (("temperature", temperature), ("top_p", top_p)):
        if value is not None and not real_number(value):
            raise UserError(f"{name} must be a number, got {value!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise UserError(f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)) or None, "
                        f"got {type(generator).__name__}")
    if not math.isfinite(temperature) or temperature < 0:
        raise UserError(f"temperature must be a finite number >= 0 (0 is greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise UserError(f"top_k must be at least 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise UserError(f"top_p must be in (0, 1], got {top_p}")


def next_token_probs(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """The distribution the next token is drawn from: logits (B, V) -> probabilities (B, V).

    Divide by the temperature (> 0), keep the top_k largest logits, softmax, then keep the
    smallest set of most likely tokens whose probabilities reach top_p (the token that crosses
    top_p stays in). Dropped tokens get probability 0; the rest keep their values (the draw
    renormalises).
    """
    # Subtracting each row's maximum first changes no probability, but keeps a tiny temperature
    # (1e-40) from overflowing: the best token scores 0 and every other -inf, which is greedy.
    logits = logits.float()
    logits = (logits - logits.max(dim=-1, keepdim=True).values) / temperature  # (B, V)
    if top_k is not None and top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    probs = torch.softmax(logits, dim=-1)  # (B, V)
    if top_p is not None and top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)  # (B, V) each
        # Drop a token when the more likely tokens before it already reach top_p. The most likely
        # token always stays: a top_p below float32's range (1e-300) rounds to 0 in the comparison.
        before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (B, V)
        drop = before >= top_p  # (B, V)
        drop[:, 0] = False
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)  # back to vocabulary order
    return probs


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose one token per row from logits (B, V); returns (B, 1) token ids."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    return draw(next_token_probs(logits, temperature, top_k, top_p), generator)  # (B, 1)


def draw(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token per row of probs (B, V), token i with probability probs[:, i] / probs.sum(-1).

    The exponential race: every token waits an Exp(1) time, token i's shortened to waits / p_i
    (an exponential of rate p_i); the first to arrive, the largest p_i / wait, wins with
    probability p_i / sum(p). torch.multinomial draws one sample by this very race (the same
    generator gives the same token, tested), but first checks probs on the host, which makes a
    GPU wait for every token; this never reads anything back.
    """
    # An Exp(1) draw of exactly 0 would make a zero-probability token's 0 / 0 a NaN, which argmax
    # picks; the smallest positive float instead leaves it at 0, and changes no other outcome.
    waits = torch.empty_like(probs).exponential_(1.0, generator=generator).clamp_min_(torch.finfo(probs.dtype).tiny)
    return (probs / waits).argmax(dim=-1, keepdim=True)  # (B, V) -> (B, 1)


@torch.no_grad()
def stream_tokens(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    cuda_graph: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield max_new_tokens tokens (B, 1), one per step, continuing idx (B, T).

    Call it on a model in eval mode (no dropout), as `generate` does. cuda_graph: on a CUDA
    device, replay each cached step from a recorded graph (False: run it eagerly).
    """
    check_model(model)
    check_sampling(temperature, top_k, top_p, max_new_tokens, generator)
    check_token_ids(idx, model.config.vocab_size, "the prompt idx")  # past block_size it is cropped
    block_size = model.config.block_size
    graph = decode_graph(model, idx.shape[0]) if use_cache and cuda_graph else None  # None off CUDA
    lean = lean_decoder(model, idx.shape[0]) if use_cache and graph is None else None  # None off CPUs
    cache = None
    finite = torch.ones((), dtype=torch.bool, device=idx.device)  # every step's logits so far (read at the end)
    with using(graph):
        for _ in range(max_new_tokens):
            if not use_cache:
                logits = model.next_token_logits(idx[:, -block_size:])  # (B, V)
            elif cache is not None and cache.length < block_size:
                newest = idx[:, -1:]  # (B, 1): only the newest token goes in
                if graph is not None:
                    logits = graph.step(newest)  # (B, V)
                elif lean is not None:
                    logits = lean.step(newest, cache)  # the same step, without the bookkeeping (CPU)
                else:
                    logits = model.next_token_logits(newest, cache)  # (B, V)
            else:
                # First step, or the window is full and slides: (re)build the cache from the window.
                cache = graph.start() if graph is not None else KVCache(model.config.n_layer, block_size)
                logits = model.next_token_logits(idx[:, -block_size:], cache)  # (B, V)
            finite &= usable(logits)
            next_token = sample_next(logits, temperature, top_k, top_p, generator)  # (B, 1)
            idx = torch.cat((idx, next_token), dim=1)  # (B, T + 1)
            yield next_token
    check_finite(finite)


@contextmanager
def using(graph):
    """Mark a decoding graph in use while a generator steps through it: its cache is this
    generator's until it ends (or is closed), and decode_graph hands it to no other."""
    if graph is None:
        yield
        return
    graph.in_use = True
    try:
        yield
    finally:
        graph.in_use = False


def usable(logits: torch.Tensor) -> torch.Tensor:
    """Whether tokens can be drawn from logits (B, V): no NaN, no +inf, and a finite score in every
    row. A score of -inf is a banned token (a hook or a listener may set it), not a broken model.
    A 0-dim bool tensor, left on the device."""
    # Each row's largest score says it all: NaN if the row holds a NaN (amax propagates it),
    # +inf if it holds +inf, -inf if nothing in it is finite; a finite maximum is a usable row.
    return torch.isfinite(logits.amax(dim=-1)).all()  # (B, V) -> (B,) -> ()


def check_finite(finite: torch.Tensor) -> None:
    """Refuse tokens drawn from NaN or +inf scores, or from a row with no finite score (a broken
    model: argmax and the draw would pick a token all the same). Read once, after the last token,
    so no step waits for the GPU."""
    if not finite.item():
        raise UserError("the model's next-token scores were not finite numbers (NaN or +infinity, or -infinity for "
                        "every token), so the tokens drawn from them mean nothing; its weights are broken: train it "
                        "again (or load another)")


def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    use_cache: bool = True,
    generator: torch.Generator | None = None,
    cuda_graph: bool = True,
) -> torch.Tensor:
    """Continue idx (B, T) by max_new_tokens tokens; returns (B, T + max_new_tokens).

    Puts the model in eval mode for the duration (no dropout) and restores its mode afterwards.
    cuda_graph: on a CUDA device, replay each cached step from a recorded graph (False: eagerly).
    """
    check_model(model)
    was_training = model.training
    model.eval()
    try:
        new = list(stream_tokens(model, idx, max_new_tokens, temperature, top_k, top_p, use_cache, generator,
                                 cuda_graph))
    finally:
        model.train(was_training)
    return torch.cat([idx, *new], dim=1)


@torch.no_grad()
def generate_batch(
    model: GPT,
    prompts: list[list[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    cuda_graph: bool = True,
) -> list[list[int]]:
    """Continue several prompts of different lengths at once; returns each prompt followed by its
    max_new_tokens new tokens.

    The rows are left-padded to one length; the cache records each row's padding (`pads`), from
    which the model gives every row its own positions and hides the padding from attention. So
    each row computes what `generate` computes for its prompt alone (with temperature 0, the same
    tokens), for every positional encoding and both attention paths. Past block_size, each row's
    window is its own last block_size tokens, rebuilt every step, as in `generate`. The new tokens
    stay on the device until the end (or a rebuild), so no step waits for the host.
    cuda_graph: on a CUDA device, replay each cached step from a recorded graph (False: eagerly).
    """
    check_model(model)
    check_sampling(temperature, top_k, top_p, max_new_tokens, generator)
    check_prompts(prompts, model.config.vocab_size)
    block_size, device = model.config.block_size, model.wte.weight.device
    was_training = model.training
    model.eval()
    rows = [list(prompt) for prompt in prompts]
    new: list[torch.Tensor] = []  # (B, 1) tokens each, still on the device, not yet in rows
    stack = ExitStack()
    try:
        graph = decode_graph(model, len(rows)) if cuda_graph else None  # None off CUDA
        cache = None
        finite = torch.ones((), dtype=torch.bool, device=device)
        stack.enter_context(using(graph))
        for _ in range(max_new_tokens):
            if cache is not None and cache.length < block_size:
                newest = new[-1]  # (B, 1): each row's newest token
                logits = graph.step(newest) if graph is not None else model.next_token_logits(newest, cache)  # (B, V)
            else:
                # First step, or the longest row's window is full: rebuild from every row's window.
                append_new(rows, new)
                windows = [row[-block_size:] for row in rows]
                width = max(len(window) for window in windows)
                pads = torch.tensor([width - len(window) for window in windows], device=device)  # (B,)
                # The padding token's id does not matter: attention never looks at it.
                idx = torch.tensor([[0] * (width - len(w)) + w for w in windows], device=device)  # (B, width)
                cache = graph.start(pads) if graph is not None else KVCache(model.config.n_layer, block_size, pads)
                logits = model.next_token_logits(idx, cache)  # (B, V)
            finite &= usable(logits)
            new.append(sample_next(logits, temperature, top_k, top_p, generator))  # (B, 1)
        check_finite(finite)
    finally:
        stack.close()
        model.train(was_training)
    append_new(rows, new)
    return rows


def check_prompts(prompts, vocab_size: int) -> None:
    """Refuse what is not a list of prompts, each a non-empty list of token ids in [0, vocab_size)."""
    example = "[[1, 2, 3], [4, 5]]"
    if not isinstance(prompts, (list, tuple)) or not prompts or \
            not all(isinstance(prompt, (list, tuple)) and prompt for prompt in prompts):
        raise UserError(f"generate_batch needs a list of prompts, every prompt a non-empty list of token ids, e.g. {example}; "
                        f"got {str(prompts)[:80]}")
    for prompt in prompts:
        for token in prompt:
            if not whole_number(token) or not 0 <= token < vocab_size:
                raise UserError(f"generate_batch: {token!r} is not a token id of this model (whole numbers from 0 "
                                f"to {vocab_size - 1})")


def append_new(rows: list[list[int]], new: list[torch.Tensor]) -> None:
    """Move the new tokens, (B, 1) tensors, onto the end of their rows (reading them waits for the device)."""
    if new:
        for row, tokens in zip(rows, torch.cat(new, dim=1).tolist()):
            row.extend(tokens)
        new.clear()


def decoding_timer(model: GPT, tokens: int = 16):
    """measure(dtype): seconds per token of cached batch-1 generation with a copy of model in dtype
    (best of two). Each dtype's copy is made and prepared once, for all of choose_dtype's rounds:
    copying and converting the weights (and float16's bound) cost more than the timing itself."""
    trials: dict[torch.dtype, GPT] = {}
    idx = torch.zeros(1, 1, dtype=torch.long, device=model.wte.weight.device)  # (1, 1)

    @torch.no_grad()
    def measure(dtype: torch.dtype) -> float:
        if dtype not in trials:
            trials[dtype] = prepare_for_decoding(copy.deepcopy(model), dtype)
        trial = trials[dtype]
        return best_seconds(lambda: list(stream_tokens(trial, idx, tokens, temperature=0.0)), idx.device) / tokens

    return measure


# From this many bytes of float32 weights in the linear layers, reading them is most of a token's
# time on a CPU (they outgrow its caches), so 16-bit weights can pay even where 16-bit arithmetic is emulated.
# Below it, the per-operation cost dominates and float32 stays, unmeasured: a small model's text
# then never depends on a timing (nanoGPT's shakespeare_char model has 42 MB).
MEMORY_BOUND_BYTES = 16 * 2 ** 20


def decoding_dtype(model: GPT, name: str, device: torch.device, say=None, remeasure: bool = False,
                   rows: int = 1) -> torch.dtype:
    """The dtype to generate rows at once in: name, or for "auto" a 16-bit one where it is measured
    faster for this model on this machine (device.choose_dtype, which tells say why), as
    prepare_for_decoding makes it. On a CPU with bf16 instructions that is bfloat16. On a CPU
    without, it is measured for one row of a model of MEMORY_BOUND_BYTES or more: a token's time
    is then mostly reading the weights, which 16-bit weights halve (machine/half_weights.py), in
    float16 where float16_bound proves they cannot overflow (finer rounding, and faster products
    there), else in bf16. Several rows make the products matrix-matrix ones, which such a CPU
    computes faster in float32."""
    m = model.config
    weight_bytes = 4 * sum(module.weight.numel() for module in model.modules() if isinstance(module, torch.nn.Linear))
    memory_bound = rows == 1 and weight_bytes >= MEMORY_BOUND_BYTES
    low = torch.bfloat16
    if name == "auto" and memory_bound and device.type == "cpu" and not cpu_computes_bf16() \
            and float16_bound(model) < FLOAT16_SAFE:
        low = torch.float16
    what = (f"decoding {m.n_layer} layers x {m.n_embd} wide, {m.n_head} heads, vocab {m.vocab_size}, {m.attention}"
            f"{', packed' if packing_available() else ''}{', float16 weights' if low == torch.float16 else ''}")
    return choose_dtype(name, device, what, decoding_timer(model), say, remeasure, memory_bound=memory_bound, low=low)


def prepare_for_decoding(model: GPT, dtype: torch.dtype) -> GPT:
    """model (changed in place) in dtype and eval mode, ready to generate. In 16 bits the weights'
    memory traffic, each token's main cost on a CPU, halves. On a CPU with oneDNN the linear
    layers' weights are packed once (packed.py) for its faster products, in bf16 and float32. On a
    CPU that emulates the 16-bit format asked for (float16 on any CPU; bf16 where it has no bf16
    instructions), only the linear layers' weights are stored in it and the rest of the model
    stays float32 (half_weights.py), since emulated 16-bit arithmetic is slow; float16 weights
    only where float16_bound proves that nothing overflows."""
    model = model.eval()
    on_cpu = model.wte.weight.device.type == "cpu"
    if on_cpu and (dtype == torch.float16 or dtype == torch.bfloat16 and not cpu_computes_bf16()):
        model = model.float()
        if dtype == torch.float16:
            bound = float16_bound(model)
            if not bound < FLOAT16_SAFE:
                raise UserError(f"this model's numbers may outgrow float16 (its weights allow {bound:,.0f} in a linear "
                                f"layer; float16 stops at 65,504, and we need a factor 2 of room); sample it in "
                                f"bfloat16 or float32 instead (--dtype bfloat16)")
        return store_half_weights(model, dtype)
    model = model.to(dtype)
    if dtype in (torch.bfloat16, torch.float32) and on_cpu and packing_available(dtype):
        pack_linears(model)
    return model
