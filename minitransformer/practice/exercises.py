"""The exercises: each a learner-sized function of the GPT, its reference, its test inputs, the
known mistakes it is checked against (mistakes.py), and hints.

Design choices:
- The reference is the package's own code (or torch's, where the model uses torch's: softmax,
  layer norm, GELU, cross-entropy), called through a function with the learner's signature and
  docstring; stubs are made from that signature and docstring (workspace.py), so there is no
  second copy to keep in step.
- Inputs are made fresh from a seeded generator every time (no stored snapshots), small (T = 4,
  D = 2 first) so that a differing entry can be read, then the awkward cases, each named by what
  it tests: large inputs (overflow), small variance (where eps sits), one query, a cache offset.
- Every option of a contract has a case that separates it: a dim other than the last, top-k with
  top-p and a temperature with top-p (either order of the filters fails), a tie at the k-th
  logit, a probability sum exactly at top_p, a large offset shared by layer norm's features,
  multi-digit ids with pairs away from the end. Where the contract leaves an order free (which of
  tied tokens top-p keeps), the case compares each row sorted.
- The known mistakes are in mistakes.py; the checker names one (or two at once) when the
  learner's outputs equal its outputs on every case (checker.py).
- Hints name the property or case they help with; `practice hint` shows first the one for what
  fails.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..attention import causal_mask as our_causal_mask, merge_heads as our_merge_heads, \
    scaled_dot_product_attention, split_heads as our_split_heads
from ..bpe import merge_pair as our_merge_pair
from ..config import ModelConfig
from ..generate import next_token_probs as our_next_token_probs
from ..induction import half_losses as our_half_losses, repeat_twice as our_repeat_twice
from ..inspection import head_scores as our_head_scores
from ..kv_cache import KVCache
from ..model import MLP, Block, cross_entropy, gelu, layer_norm
from ..positional import apply_rotary as our_apply_rotary, sinusoidal_table
from .mistakes import (ATTENTION_MISTAKES, BLOCK_MISTAKES, BPE_MISTAKES, CROSS_ENTROPY_MISTAKES, GELU_MISTAKES,
    HALVES_MISTAKES, HEAD_MISTAKES, KV_MISTAKES, LAYER_NORM_MISTAKES, MASK_MISTAKES, MERGE_MISTAKES, MLP_MISTAKES,
    Mistake, POSITIONS_MISTAKES, REPEAT_MISTAKES, ROTARY_MISTAKES, SAMPLING_MISTAKES, SCORE_MISTAKES,
    SINUSOIDAL_MISTAKES, SOFTMAX_MISTAKES)


@dataclass(frozen=True)
class Case:
    """One test input: what it tests, the arguments, and (where the contract leaves an order free)
    what to apply to each output before comparing."""

    label: str
    args: tuple
    key: Callable | None = None


def sorted_rows(x: torch.Tensor) -> torch.Tensor:
    return x.sort(dim=-1).values


@dataclass(frozen=True)
class Hint:
    """A hint, and the properties or case labels it helps with (the first shown when one fails)."""

    text: str
    helps: tuple[str, ...] = ()


@dataclass(frozen=True)
class Exercise:
    name: str
    reference: Callable  # the learner-facing function: our code behind the learner's signature
    solution: Callable  # the code that really computes it, printed by `practice solution`
    make_cases: Callable[[], list[tuple]]  # (what the case tests, arguments[, key]), made fresh each time
    mistakes: dict[str, Mistake] = field(default_factory=dict)
    hints: tuple[Hint, ...] = ()
    rows_sum_to_one: tuple[int, ...] = ()  # which outputs are probabilities over the last axis
    causal: bool = False  # attention: changing a future key or value must change no earlier output

    def cases(self) -> list[Case]:
        return [Case(*case) for case in self.make_cases()]

    def suspects(self) -> list[tuple[str, ...]]:
        """Catalogued mistakes to compare with a learner's outputs: each alone, then two at once
        where both change one written-out version in different places (and are not a third)."""
        singles = [(name,) for name in self.mistakes]
        alone = {frozenset(m.flags.items()) for m in self.mistakes.values() if m.variant is not None}
        pairs = []
        for i, a in enumerate(self.mistakes):
            for b in list(self.mistakes)[i + 1:]:
                first, second = self.mistakes[a], self.mistakes[b]
                if first.variant is None or first.variant is not second.variant or set(first.flags) & set(second.flags):
                    continue
                if frozenset({**first.flags, **second.flags}.items()) not in alone:
                    pairs.append((a, b))
        return singles + pairs

    def wrong(self, names: tuple[str, ...], args: tuple):
        """What the catalogued mistake(s) compute on args."""
        if len(names) == 1:
            return self.mistakes[names[0]].compute(*args)
        flags = {key: value for name in names for key, value in self.mistakes[name].flags.items()}
        return self.mistakes[names[0]].variant(*args, **flags)


def rand(*shape: int, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


# ---------------------------------------------------------------- softmax
def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """exp(x) normalised along dim: softmax(x)_i = exp(x_i) / sum_j exp(x_j).

    x: any shape. Returns the same shape; every slice along dim is positive and sums to 1.
    Subtract the maximum of each slice first: the result is the same, and exp never overflows.
    """
    return torch.softmax(x, dim=dim)


def softmax_cases():
    return [("T = 4 rows of 4", (rand(4, 4),)), ("a batch of rows, (2, 3, 5)", (rand(2, 3, 5, seed=1),)),
            ("large inputs (overflow)", (rand(3, 4, scale=400.0, seed=2),)),
            ("another axis (dim=0)", (rand(4, 3, seed=3), 0)),
            ("the middle axis (dim=1 of (2, 3, 4))", (rand(2, 3, 4, scale=3.0, seed=4), 1))]


# ---------------------------------------------------------------- the causal mask
def causal_mask(T: int, past: int = 0) -> torch.Tensor:
    """Boolean (T, past + T): True where query i may attend to key j.

    The T queries follow `past` cached positions, so query i sits at position past + i and may see
    every key j <= past + i: a lower triangle shifted right by `past`.
    """
    return our_causal_mask(T, past)


# ---------------------------------------------------------------- attention
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None):
    """softmax(q k^T / sqrt(D), masked) v. Returns (out, weights).

    q: (B, H, T, D); k, v: (B, H, S, D); mask: boolean, broadcastable to (B, H, T, S), True where a
    query may attend, or None. scores = q @ k^T / sqrt(D): (B, H, T, S); masked scores become
    -inf, so they get exactly 0 weight (a finite fill such as -1e4 or -1e9 leaks the future into
    any row whose real scores fall below it); weights = softmax over the keys (the last axis):
    (B, H, T, S), each row sums to 1; out = weights @ v: (B, H, T, D).
    """
    return scaled_dot_product_attention(q, k, v, mask)


def attention_cases():
    B, H = 1, 2
    small = (rand(B, H, 4, 2), rand(B, H, 4, 2, seed=1), rand(B, H, 4, 2, seed=2), our_causal_mask(4))
    return [("T = 4, D = 2, causal", small),
            ("no mask", (rand(2, 2, 3, 4, seed=3), rand(2, 2, 3, 4, seed=4), rand(2, 2, 3, 4, seed=5), None)),
            ("one query over a cache of 5 keys", (rand(B, H, 1, 4, seed=6), rand(B, H, 5, 4, seed=7),
                                                  rand(B, H, 5, 4, seed=8), our_causal_mask(1, 4))),
            ("large scores (q, k of size 150: scores past 1e4)", (rand(B, H, 4, 8, scale=150.0, seed=9), rand(B, H, 4, 8, scale=150.0, seed=10),
                                                rand(B, H, 4, 8, seed=11), our_causal_mask(4))),
            ("D = 16, causal", (rand(1, 4, 5, 16, seed=12), rand(1, 4, 5, 16, seed=13), rand(1, 4, 5, 16, seed=14),
                                our_causal_mask(5))),
            ("scores below -1e9 (a finite fill leaks)", very_negative_scores())]


def very_negative_scores() -> tuple:
    """The first query's only visible key scores about -7e9: any finite fill above that takes
    its weight, -inf does not."""
    q, k = rand(1, 1, 3, 2, seed=15), rand(1, 1, 3, 2, seed=16)
    q[0, 0, 0], k[0, 0, 0] = torch.tensor([1e5, 0.0]), torch.tensor([-1e5, 0.0])
    return q, k, rand(1, 1, 3, 2, seed=17), our_causal_mask(3)


# ---------------------------------------------------------------- heads
def split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, C) -> (B, H, T, D), H = n_head, D = C // H: view as (B, T, H, D), then swap T and H."""
    return our_split_heads(x, n_head)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, D) -> (B, T, C), C = H * D: swap H and T back, then put the heads side by side."""
    return our_merge_heads(x)


# ---------------------------------------------------------------- positions
def sinusoidal_positions(n_positions: int, C: int) -> torch.Tensor:
    """(n_positions, C): row p holds sin(p w_i) in column 2i and cos(p w_i) in column 2i + 1,
    w_i = 10000^(-2i / C)."""
    return sinusoidal_table(n_positions, C)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x[..., 2i], x[..., 2i+1]) by its position's angle: (u, w) ->
    (u cos a - w sin a, u sin a + w cos a). x: (B, H, T, D); cos, sin: (T, D/2). Returns (B, H, T, D)."""
    return our_apply_rotary(x, cos, sin)


def rotary_cases():
    angle = torch.outer(torch.arange(4.0), 10000.0 ** (-torch.arange(0, 4, 2) / 4))  # (T, D/2)
    wide = torch.outer(torch.arange(5.0), 10000.0 ** (-torch.arange(0, 8, 2) / 8))
    return [("T = 4, D = 4", (rand(1, 2, 4, 4), angle.cos(), angle.sin())),
            ("T = 5, D = 8", (rand(2, 2, 5, 8, seed=1), wide.cos(), wide.sin()))]


# ---------------------------------------------------------------- layer norm, GELU, MLP, block
def layer_norm_cases():
    C = 4
    return [("T = 4, C = 4", (rand(1, 4, C), rand(C, seed=1) + 1, rand(C, seed=2))),
            ("small variance (where eps sits)", (rand(2, 3, 8, scale=1e-3, seed=3), torch.ones(8), torch.zeros(8))),
            ("large inputs", (rand(2, 3, 8, scale=1e3, seed=4), rand(8, seed=5), rand(8, seed=6))),
            ("another eps", (rand(2, 8, seed=7), torch.ones(8), torch.zeros(8), 0.1)),
            ("a large offset shared by the features (100 + noise)", (rand(2, 3, 16, seed=8) + 100.0, rand(16, seed=9),
                                                                   rand(16, seed=10)))]


def gelu_cases():
    return [("8 values", (torch.linspace(-4, 4, 8),)), ("a (2, 3, 5) tensor", (rand(2, 3, 5, scale=2.0),)),
            ("negative inputs (-3 to -0.5: every constant counts)", (torch.linspace(-3, -0.5, 12),))]


def small_model_config(**changes) -> ModelConfig:
    return ModelConfig(**{"vocab_size": 11, "block_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 4, **changes})


def mlp(x: torch.Tensor, c_fc: torch.nn.Linear, c_proj: torch.nn.Linear) -> torch.Tensor:
    """The block's feed-forward network: c_proj(gelu(c_fc(x))). x: (B, T, C); c_fc: C -> 4C;
    c_proj: 4C -> C. Returns (B, T, C)."""
    module = MLP(small_model_config(n_embd=x.shape[-1]))
    module.c_fc, module.c_proj = c_fc, c_proj
    return module(x)


def linear(n_in, n_out, seed):
    with torch.random.fork_rng(devices=[]):  # the layer's own initialisation draws from the global generator
        layer = torch.nn.Linear(n_in, n_out)
    with torch.no_grad():
        layer.weight.copy_(rand(n_out, n_in, scale=0.5, seed=seed))
        layer.bias.copy_(rand(n_out, seed=seed + 1))
    return layer


def mlp_cases():
    return [("T = 4, C = 4", (rand(1, 4, 4), linear(4, 16, 1), linear(16, 4, 3))),
            ("B = 2, T = 3, C = 8", (rand(2, 3, 8, seed=5), linear(8, 32, 6), linear(32, 8, 8)))]


def block(x: torch.Tensor, ln_1, attn, ln_2, mlp) -> torch.Tensor:
    """One pre-norm transformer block: x = x + attn(ln_1(x)), then x = x + mlp(ln_2(x)).
    x: (B, T, C); ln_1, attn, ln_2, mlp: callables (B, T, C) -> (B, T, C). Returns (B, T, C)."""
    module = Block(small_model_config(n_embd=x.shape[-1]), 0)
    module.ln_1, module.attn, module.ln_2, module.mlp = ln_1, attn, ln_2, mlp
    return module(x)


def block_cases():
    with torch.random.fork_rng(devices=[]):  # the learner's random state stays hers
        torch.manual_seed(0)  # the same block every time
        module = Block(small_model_config(), 0)
    for seed, parameter in enumerate(module.parameters()):  # distinct values: ln_1 and ln_2 must differ
        with torch.no_grad():
            parameter.add_(rand(*parameter.shape, scale=0.3, seed=seed))
    return [("T = 4, C = 4", (rand(1, 4, 4), module.ln_1, module.attn, module.ln_2, module.mlp)),
            ("B = 2, T = 6", (rand(2, 6, 4, seed=1), module.ln_1, module.attn, module.ln_2, module.mlp))]


# ---------------------------------------------------------------- the loss, sampling
def cross_entropy_cases():
    return [("N = 4, V = 3", (rand(4, 3), torch.tensor([0, 2, 1, 2]))),
            ("logits near 100 (exp overflows; no probability underflows)", (rand(3, 4, seed=2) + 100.0,
                                                                           torch.tensor([1, 3, 0]))),
            ("large logits (overflow)", (rand(5, 6, scale=300.0, seed=1), torch.tensor([5, 0, 3, 3, 1])))]


def next_token_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None) -> torch.Tensor:
    """The next token's distribution: logits (B, V) -> probabilities (B, V).

    In this order: divide the logits by temperature (> 0); keep the top_k largest logits, and
    every logit tied with the k-th largest, setting the others to -inf; softmax; then keep the
    smallest set of most likely tokens whose probabilities reach top_p (drop a token when the
    probabilities before it in descending order already sum to top_p or more; the most likely
    token always stays) and set the others to 0, without renormalising after top_p.
    """
    return our_next_token_probs(logits, temperature, top_k, top_p)


def sampling_cases():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, 0.0], [0.0, 3.0, 1.0, 1.5, -2.0]])
    uniform = torch.zeros(2, 4)  # every probability exactly 0.25: sums land exactly on 0.5
    return [("temperature 1", (logits,)), ("temperature 0.5", (logits, 0.5)), ("top_k = 2", (logits, 1.0, 2)),
            ("top_p = 0.7", (logits, 1.0, None, 0.7)), ("temperature 2 with top_k = 3", (logits, 2.0, 3)),
            ("top_k = 3 with top_p = 0.8", (logits, 1.0, 3, 0.8)),
            ("temperature 0.5 with top_p = 0.9", (logits, 0.5, None, 0.9)),
            ("temperature 3 with top_k = 4 and top_p = 0.6", (logits, 3.0, 4, 0.6)),
            ("a tie at the k-th largest logit (tied tokens all stay)", (torch.tensor([[2.0, 1.0, 1.0, 0.0, -1.0]]), 1.0, 2),
             sorted_rows),
            ("probabilities summing exactly to top_p = 0.5 (which tied tokens stay is yours to choose)",
             (uniform, 1.0, None, 0.5), sorted_rows)]


# ---------------------------------------------------------------- the KV cache, BPE
def kv_cache_update(past_k: torch.Tensor, past_v: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """Append this step's keys and values to the cache's. past_k, past_v: (B, H, P, D); k, v:
    (B, H, T, D). Returns (keys, values), each (B, H, P + T, D), the past first."""
    B, H, P, D = past_k.shape
    cache = KVCache(1, P + k.shape[2])
    cache.update(0, past_k, past_v)
    cache.advance(P)
    return cache.update(0, k, v)


def kv_cases():
    return [("2 cached positions, 1 new", (rand(1, 2, 2, 2), rand(1, 2, 2, 2, seed=1), rand(1, 2, 1, 2, seed=2),
                                           rand(1, 2, 1, 2, seed=3))),
            ("3 cached, 2 new", (rand(2, 1, 3, 4, seed=4), rand(2, 1, 3, 4, seed=5), rand(2, 1, 2, 4, seed=6),
                                 rand(2, 1, 2, 4, seed=7)))]


def cache_positions(past: int, T: int) -> torch.Tensor:
    """The positions of T new tokens after `past` cached ones: (T,) = past, past + 1, ..., past + T - 1.
    Rotary and learned positions must be offset so, or a cached step sees every token at position 0."""
    cache = KVCache(1, past + T)
    cache.length = past
    return cache.positions(T, torch.device("cpu"))


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """One BPE merge: every occurrence of `pair` in ids, left to right and not overlapping, becomes
    new_id. merge_pair([1, 2, 2, 2, 3], (2, 2), 9) == [1, 9, 2, 3]."""
    return our_merge_pair(ids, pair, new_id)


def bpe_cases():
    return [("a pair twice", ([1, 2, 3, 1, 2], (1, 2), 7)), ("overlapping", ([1, 2, 2, 2, 3], (2, 2), 9)),
            ("at the end", ([5, 4, 5, 4], (5, 4), 8)), ("absent", ([1, 2, 3], (3, 1), 6)),
            ("multi-digit ids, a pair three times, one at the end", ([112, 3, 12, 3, 45, 12, 3, 7, 1, 23, 12, 3],
                                                                     (12, 3), 256)),
            ("a pair repeated away from the end", ([300, 301, 300, 301, 300, 301, 9, 10], (300, 301), 512))]


# ---------------------------------------------------------------- induction heads
def repeat_twice(first: torch.Tensor) -> torch.Tensor:
    """Each row followed by itself: first (B, R) -> (B, 2R), row b = first[b], then first[b] again.
    The test for induction heads: random tokens, then the same tokens again."""
    return our_repeat_twice(first)


def repeat_cases():
    ids = lambda *shape, seed: torch.randint(0, 50, shape, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    return [("B = 1, R = 4", (ids(1, 4, seed=0),)), ("B = 3, R = 5", (ids(3, 5, seed=1),))]


def half_losses(per_position: torch.Tensor, length: int) -> torch.Tensor:
    """(2,): the mean loss of each half, from per_position (2R - 1,), the loss of predicting token
    t + 1 at every position t of R tokens repeated (R = length). The first half predicts tokens 1
    to R - 1 (positions 0 to R - 2), the second half tokens R + 1 to 2R - 1 (positions R to 2R - 2);
    position R - 1, predicting the first repeated token, belongs to neither."""
    return our_half_losses(per_position, length)


def halves_cases():
    return [("R = 4", (rand(7).abs() + 1.0, 4)), ("R = 6", (rand(11, seed=1).abs() + 1.0, 6))]


def head_scores(maps: list[torch.Tensor], period: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two scores per layer and head, each (L, H), from attention maps (one (B, H, T, T) per layer)
    of sequences that repeat themselves after `period` tokens, averaged over the batch:
    previous-token: the mean weight position t gives t - 1, over t = 1 .. T - 1; induction: the mean
    weight t gives t - period + 1 (the token after the earlier occurrence), over t = period .. T - 1."""
    return our_head_scores(maps, period)


def attention_maps(layers: int, B: int, H: int, T: int, seed: int) -> list[torch.Tensor]:
    """Causal attention weights (B, H, T, T) per layer: random rows that sum to 1 over the past."""
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    return [torch.softmax(rand(B, H, T, T, scale=2.0, seed=seed + layer).masked_fill(~mask, float("-inf")), dim=-1)
            for layer in range(layers)]


def scores_cases():
    return [("1 layer, B = 1, 2 heads, T = 6, period 3", (attention_maps(1, 1, 2, 6, seed=0), 3)),
            ("2 layers, B = 2, 2 heads, T = 8, period 4", (attention_maps(2, 2, 2, 8, seed=10), 4))]


def sinusoidal_cases():
    return [("4 positions, C = 4", (4, 4)), ("6 positions, C = 8", (6, 8))]


def split_cases():
    return [("B = 1, T = 4, C = 4, 2 heads", (rand(1, 4, 4), 2)), ("B = 2, T = 3, C = 6, 3 heads", (rand(2, 3, 6, seed=1), 3))]


def merge_cases():
    return [("B = 1, H = 2, T = 4, D = 2", (rand(1, 2, 4, 2),)), ("B = 2, H = 3, T = 3, D = 2", (rand(2, 3, 3, 2, seed=1),))]


def mask_cases():
    return [("T = 4", (4,)), ("T = 3 after 2 cached (a cache offset)", (3, 2)), ("one query after 4 cached", (1, 4))]


EXERCISES: dict[str, Exercise] = {exercise.name: exercise for exercise in (
    Exercise("softmax", softmax, softmax, softmax_cases, SOFTMAX_MISTAKES, (
        Hint("exp(x) / exp(x).sum(dim, keepdim=True) is the whole idea; keepdim keeps the shapes aligned.",
             ("shape", "rows sum to 1", "values: T = 4")),
        Hint("exp(400) is inf in float32. Subtract each slice's maximum first: softmax(x - m) = softmax(x).",
             ("values: large inputs",)),
        Hint("Use the dim you are given, in the max, the exp's sum and keepdim: dim=0 and dim=1 are checked too.",
             ("values: another axis", "values: the middle axis")),
        Hint("m = x.max(dim, keepdim=True).values; e = (x - m).exp(); return e / e.sum(dim, keepdim=True)"),
    ), rows_sum_to_one=(0,)),
    Exercise("causal_mask", causal_mask, our_causal_mask, mask_cases, MASK_MISTAKES, (
        Hint("Query i may see key j when j <= i, without a cache: a lower triangle.", ("values: T = 4", "dtype")),
        Hint("With `past` cached keys, query i sits at position past + i: the triangle moves right by past.",
             ("shape", "values: T = 3 after", "values: one query")),
        Hint("torch.ones(T, past + T, dtype=torch.bool).tril(diagonal=past)"),
    )),
    Exercise("attention", attention, scaled_dot_product_attention, attention_cases, ATTENTION_MISTAKES, (
        Hint("scores = q @ k.transpose(-2, -1) gives (B, H, T, S): one score per query and key.", ("shape", "type")),
        Hint("Divide by sqrt(D), D = q.shape[-1], so the scores' spread does not grow with the head's width.",
             ("values: T = 4", "values: D = 16", "values: no mask")),
        Hint("Mask with scores.masked_fill(~mask, float('-inf')) and keep the result; then softmax over dim=-1. "
             "A finite fill leaks when real scores are lower still.", ("causality", "values: scores below", "values: large",
                                                                        "rows sum to 1", "values: one query")),
        Hint("out = weights @ v; return out, weights"),
    ), rows_sum_to_one=(1,), causal=True),
    Exercise("split_heads", split_heads, our_split_heads, split_cases, HEAD_MISTAKES, (
        Hint("Each position's C numbers are H heads of D numbers side by side: view(B, T, H, D).", ("shape",)),
        Hint("Attention works per head over positions, so H must come before T: transpose(1, 2).", ("values",)),
    )),
    Exercise("merge_heads", merge_heads, our_merge_heads, merge_cases, MERGE_MISTAKES, (
        Hint("Undo split_heads: transpose(1, 2) to (B, T, H, D), then reshape to (B, T, H * D).", ("shape", "values")),
    )),
    Exercise("sinusoidal_positions", sinusoidal_positions, sinusoidal_table, sinusoidal_cases, SINUSOIDAL_MISTAKES, (
        Hint("Angles: torch.outer(positions, w) with w_i = 10000 ** (-2i / C) for i < C / 2.", ("values",)),
        Hint("Interleave: column 2i is sin, column 2i + 1 is cos; torch.stack((sin, cos), -1).reshape(n, C).",
             ("shape",)),
    )),
    Exercise("apply_rotary", apply_rotary, our_apply_rotary, rotary_cases, ROTARY_MISTAKES, (
        Hint("Pairs are neighbours: u = x[..., 0::2], w = x[..., 1::2].", ("values",)),
        Hint("Rotate: (u cos - w sin, u sin + w cos), then interleave back with stack(..., dim=-1).flatten(-2).",
             ("shape",)),
    )),
    Exercise("layer_norm", layer_norm, layer_norm, layer_norm_cases, LAYER_NORM_MISTAKES, (
        Hint("mean and variance over the last axis, keepdim=True.", ("shape", "values: T = 4")),
        Hint("The variance divides by C: x.var(-1, keepdim=True, unbiased=False), or ((x - mean) ** 2).mean(-1, "
             "keepdim=True). E[x^2] - E[x]^2 loses every digit when the features share a large offset.",
             ("values: large inputs", "values: a large offset")),
        Hint("eps goes inside the square root: (x - mean) / torch.sqrt(var + eps) * weight + bias",
             ("values: small variance", "values: another eps")),
    )),
    Exercise("gelu", gelu, gelu, gelu_cases, GELU_MISTAKES, (
        Hint("0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))", ("values",)),
    )),
    Exercise("mlp", mlp, MLP.forward, mlp_cases, MLP_MISTAKES, (
        Hint("Expand, activate, project back: c_proj(gelu(c_fc(x))), with GPT-2's tanh GELU.", ("values", "shape")),
    )),
    Exercise("block", block, Block.forward, block_cases, BLOCK_MISTAKES, (
        Hint("Pre-norm: each branch reads a normalised copy of x and adds its result to x itself.", ("values",)),
        Hint("x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)); return x"),
    )),
    Exercise("cross_entropy", cross_entropy, cross_entropy, cross_entropy_cases, CROSS_ENTROPY_MISTAKES, (
        Hint("log_softmax(logits) = logits - logsumexp(logits); pick each row's target with [arange(N), targets].",
             ("values: N = 4",)),
        Hint("logsumexp: m + log(sum(exp(logits - m))) with m the row's maximum.", ("values: large logits",)),
        Hint("Return the mean over the rows: a 0-d tensor.", ("shape",)),
    )),
    Exercise("next_token_probs", next_token_probs, our_next_token_probs, sampling_cases, SAMPLING_MISTAKES, (
        Hint("Temperature divides the logits: lower than 1 sharpens, higher flattens.", ("values: temperature",)),
        Hint("top_k: mask logits below the k-th largest with -inf before the softmax; a logit equal to the k-th "
             "stays.", ("values: top_k", "values: a tie")),
        Hint("top_p: sort the probabilities, and drop a token when the sum of those *before* it already reaches "
             "top_p (>=). Filters in order: temperature, top_k, softmax, top_p.",
             ("values: top_p", "values: probabilities summing", "values: top_k = 3 with")),
    )),
    Exercise("kv_cache_update", kv_cache_update, KVCache.update, kv_cases, KV_MISTAKES, (
        Hint("The positions are axis 2 of (B, H, P, D): torch.cat((past_k, k), dim=2).", ("shape", "values")),
    )),
    Exercise("cache_positions", cache_positions, KVCache.positions, lambda: [("2 cached, 3 new", (2, 3)), ("none cached", (0, 4)),
                                                                            ("7 cached, 1 new", (7, 1))],
             POSITIONS_MISTAKES, (Hint("torch.arange(past, past + T)", ("values", "dtype")),)),
    Exercise("merge_pair", merge_pair, our_merge_pair, bpe_cases, BPE_MISTAKES, (
        Hint("Walk left to right; at a match, emit new_id and skip two tokens, else emit the token and skip one.",
             ("values",)),
        Hint("Compare ids as numbers, never as text: 112, 3 is not 1, 12, 3.", ("values: multi-digit",)),
    )),
    Exercise("repeat_twice", repeat_twice, our_repeat_twice, repeat_cases, REPEAT_MISTAKES, (
        Hint("The positions are axis 1 of (B, R): torch.cat([first, first], dim=1).", ("shape", "values")),
    )),
    Exercise("head_scores", head_scores, our_head_scores, scores_cases, SCORE_MISTAKES, (
        Hint("Stack the maps and average over the batch: torch.stack(maps).mean(dim=1) is (L, H, T, T). Then pick "
             "the entries [t, t - 1] for t = 1 .. T - 1 with index tensors (w[:, :, t, t - 1]) and average them.",
             ("values", "shape")),
        Hint("The induction target of position t is the token *after* its earlier copy: t - period + 1.",
             ("values",)),
    )),
    Exercise("half_losses", half_losses, our_half_losses, halves_cases, HALVES_MISTAKES, (
        Hint("per_position[:length - 1].mean() and per_position[length:].mean(), stacked into one (2,) tensor.",
             ("values", "shape", "type")),
    )),
)}
