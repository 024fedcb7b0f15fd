"""The exercises: each a learner-sized function of the GPT, its reference, its test inputs, the
mistakes learners really make, and hints.

Design choices:
- The reference is the package's own code (or torch's, where the model uses torch's: softmax,
  layer norm, GELU, cross-entropy), called through a function with the learner's signature and
  docstring; stubs are made from that signature and docstring (workspace.py), so there is no
  second copy to keep in step.
- Inputs are made fresh from a seeded generator every time (no stored snapshots), small (T = 4,
  D = 2 first) so that a differing entry can be read, then the awkward cases, each named by what
  it tests: large inputs (overflow), small variance (where eps sits), one query, a cache offset.
- A mistake is a function computing exactly what the wrong code computes; the checker names one
  when the learner's outputs equal its outputs on every case (checker.py).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..attention import causal_mask as our_causal_mask, merge_heads as our_merge_heads, \
    scaled_dot_product_attention, split_heads as our_split_heads
from ..bpe import merge_pair as our_merge_pair
from ..config import ModelConfig
from ..generate import next_token_probs as our_next_token_probs
from ..kv_cache import KVCache
from ..model import MLP, Block
from ..positional import apply_rotary as our_apply_rotary, sinusoidal_table


@dataclass(frozen=True)
class Mistake:
    """A known wrong version: what it computes, what to say, and the line to look at."""

    compute: Callable
    says: str
    look_at: str


@dataclass(frozen=True)
class Exercise:
    name: str
    reference: Callable  # the learner-facing function: our code behind the learner's signature
    solution: Callable  # the code that really computes it, printed by `practice solution`
    cases: Callable[[], list[tuple[str, tuple]]]  # (what the case tests, arguments)
    mistakes: dict[str, Mistake] = field(default_factory=dict)
    hints: tuple[str, ...] = ()
    rows_sum_to_one: tuple[int, ...] = ()  # which outputs are probabilities over the last axis
    causal: bool = False  # attention: changing a future key or value must change no earlier output


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
            ("another axis (dim=0)", (rand(4, 3, seed=3), 0))]


SOFTMAX_MISTAKES = {
    "no_max_subtracted": Mistake(lambda x, dim=-1: x.exp() / x.exp().sum(dim, keepdim=True),
                                 "exponentiates without subtracting the maximum first, so large inputs overflow to inf "
                                 "and give NaN", "exp(x): use exp(x - x.max(dim, keepdim=True).values)"),
    "wrong_axis": Mistake(lambda x, dim=-1: torch.softmax(x, dim=0 if dim == -1 else -1),
                          "normalises along the wrong axis", "the sum: sum over `dim`, with keepdim=True"),
    "not_normalised": Mistake(lambda x, dim=-1: (x - x.max(dim, keepdim=True).values).exp(),
                              "exponentiates but never divides by the sum", "the return: divide by the sum over dim"),
    "divides_by_sum_of_inputs": Mistake(lambda x, dim=-1: x / x.sum(dim, keepdim=True),
                                        "divides the inputs by their sum, without exp", "exponentiate first"),
    "log_softmax": Mistake(lambda x, dim=-1: torch.log_softmax(x, dim), "returns the log of the softmax",
                           "the return: exp, not log"),
    "sum_without_keepdim": Mistake(lambda x, dim=-1: x.exp() / x.exp().sum(), "divides by the sum over *every* entry",
                                   "the sum: over `dim` only"),
}


# ---------------------------------------------------------------- the causal mask
def causal_mask(T: int, past: int = 0) -> torch.Tensor:
    """Boolean (T, past + T): True where query i may attend to key j.

    The T queries follow `past` cached positions, so query i sits at position past + i and may see
    every key j <= past + i: a lower triangle shifted right by `past`.
    """
    return our_causal_mask(T, past)


MASK_MISTAKES = {
    "inverted": Mistake(lambda T, past=0: ~our_causal_mask(T, past), "is True where a query may *not* look (inverted)",
                        "the comparison: allowed is key <= query"),
    "excludes_itself": Mistake(lambda T, past=0: torch.ones(T, past + T, dtype=torch.bool).tril(past - 1),
                               "hides each query's own position (the diagonal)", "tril's diagonal: past, not past - 1"),
    "past_ignored": Mistake(lambda T, past=0: torch.ones(T, past + T, dtype=torch.bool).tril(0),
                            "ignores the cached positions: query i may see keys up to i, not past + i",
                            "tril's diagonal: shift it by past"),
    "square": Mistake(lambda T, past=0: torch.ones(T, T, dtype=torch.bool).tril(),
                      "is (T, T): the cached keys are missing", "the shape: (T, past + T)"),
    "upper_triangle": Mistake(lambda T, past=0: torch.ones(T, past + T, dtype=torch.bool).triu(past),
                              "keeps the upper triangle: each query sees itself and the future",
                              "tril, not triu"),
    "float_mask": Mistake(lambda T, past=0: our_causal_mask(T, past).float(), "is 0/1 floats, not booleans",
                          "dtype=torch.bool"),
}


# ---------------------------------------------------------------- attention
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None):
    """softmax(q k^T / sqrt(D), masked) v. Returns (out, weights).

    q: (B, H, T, D); k, v: (B, H, S, D); mask: boolean, broadcastable to (B, H, T, S), True where a
    query may attend, or None. scores = q @ k^T / sqrt(D): (B, H, T, S); masked scores become
    -inf (a finite value lets the future leak in); weights = softmax over the keys (the last
    axis): (B, H, T, S), each row sums to 1; out = weights @ v: (B, H, T, D).
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
                                our_causal_mask(5)))]


def attend(q, k, v, mask, scale, fill=float("-inf"), dim=-1, after=False, use_mask=True, swap=False):
    """Attention computed with one thing changed: the catalogue's mistakes below."""
    scores = q @ k.transpose(-2, -1) * scale
    if mask is not None and use_mask and not after:
        scores = scores.masked_fill(~mask, fill)
    weights = torch.softmax(scores, dim=dim)
    if mask is not None and after:
        weights = weights.masked_fill(~mask, 0.0)
    return weights @ (k if swap else v), weights


def head_width(q):
    return q.shape[-1]


ATTENTION_MISTAKES = {
    "scale_by_D": Mistake(lambda q, k, v, mask=None: attend(q, k, v, mask, 1 / head_width(q)),
                          "scales the scores by 1/D instead of 1/sqrt(D)", "the scale: 1 / math.sqrt(D)"),
    "no_scale": Mistake(lambda q, k, v, mask=None: attend(q, k, v, mask, 1.0), "does not scale the scores at all",
                        "the scores: multiply by 1 / math.sqrt(D)"),
    "scale_by_model_width": Mistake(lambda q, k, v, mask=None: attend(q, k, v, mask, 1 / math.sqrt(q.shape[1] * q.shape[-1])),
                                    "scales by 1/sqrt(C), the model's width (H x D), not the head's D",
                                    "D is q.shape[-1], one head's width"),
    "softmax_wrong_axis": Mistake(lambda q, k, v, mask=None: attend(q, k, v, mask, 1 / math.sqrt(head_width(q)), dim=-2),
                                  "takes the softmax over the queries (dim=-2), not over the keys",
                                  "torch.softmax(scores, dim=-1)"),
    "mask_after_softmax": Mistake(lambda q, k, v, mask=None: attend(q, k, v, mask, 1 / math.sqrt(head_width(q)), after=True),
                                  "masks the weights after the softmax, so rows no longer sum to 1",
                                  "mask the scores (with -inf) before the softmax"),
    "finite_mask": Mistake(lambda q, k, v, mask=None: attend(q, k, v, mask, 1 / math.sqrt(head_width(q)), fill=-1e4),
                           "fills masked scores with a finite -1e4: with large scores the future leaks in",
                           "masked_fill(~mask, float('-inf'))"),
    "zero_mask": Mistake(lambda q, k, v, mask=None: attend(q, k, v, mask, 1 / math.sqrt(head_width(q)), fill=0.0),
                         "fills masked scores with 0, which still gets weight", "masked_fill(~mask, float('-inf'))"),
    "inverted_mask": Mistake(lambda q, k, v, mask=None: attend(q, k, v, None if mask is None else ~mask, 1 / math.sqrt(head_width(q))),
                             "masks the keys a query *may* see (the mask inverted)", "masked_fill(~mask, ...): fill where mask is False"),
    "mask_thrown_away": Mistake(lambda q, k, v, mask=None: attend(q, k, v, mask, 1 / math.sqrt(head_width(q)), use_mask=False),
                                "never applies the mask: masked_fill returns a new tensor, and its result was not kept",
                                "scores = scores.masked_fill(...)"),
    "keys_values_swapped": Mistake(lambda q, k, v, mask=None: attend(q, k, v, mask, 1 / math.sqrt(head_width(q)), swap=True),
                                   "multiplies the weights by the keys instead of the values", "out = weights @ v"),
}


# ---------------------------------------------------------------- heads
def split_heads(x: torch.Tensor, n_head: int) -> torch.Tensor:
    """(B, T, C) -> (B, H, T, D), H = n_head, D = C // H: view as (B, T, H, D), then swap T and H."""
    return our_split_heads(x, n_head)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, D) -> (B, T, C), C = H * D: swap H and T back, then put the heads side by side."""
    return our_merge_heads(x)


HEAD_MISTAKES = {
    "no_transpose": Mistake(lambda x, n_head: x.reshape(x.shape[0], n_head, x.shape[1], x.shape[2] // n_head),
                            "reshapes straight to (B, H, T, D) without the transpose, so heads mix positions",
                            "view(B, T, H, D).transpose(1, 2)"),
}
MERGE_MISTAKES = {
    "no_transpose": Mistake(lambda x: x.reshape(x.shape[0], x.shape[2], x.shape[1] * x.shape[3]),
                            "reshapes straight to (B, T, C) without the transpose, so positions mix",
                            "x.transpose(1, 2).reshape(B, T, C)"),
}


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


def rotate_halves(x, cos, sin):
    half = x.shape[-1] // 2
    u, w = x[..., :half], x[..., half:]
    return torch.cat((u * cos - w * sin, u * sin + w * cos), dim=-1)


def rotate_pairs(x, cos, sin, sign=1.0):
    u, w = x[..., 0::2], x[..., 1::2]
    return torch.stack((u * cos - sign * w * sin, sign * u * sin + w * cos), dim=-1).flatten(-2)


ROTARY_MISTAKES = {
    "halves_not_pairs": Mistake(rotate_halves, "rotates the first half against the second (GPT-NeoX's layout), not "
                                "neighbouring pairs (ours)", "pairs are x[..., 0::2] and x[..., 1::2]"),
    "wrong_direction": Mistake(lambda x, cos, sin: rotate_pairs(x, cos, sin, -1.0), "rotates the other way (the sign of sin)",
                               "u cos a - w sin a, u sin a + w cos a"),
    "pairs_not_interleaved": Mistake(lambda x, cos, sin: torch.cat((x[..., 0::2] * cos - x[..., 1::2] * sin,
                                                                    x[..., 0::2] * sin + x[..., 1::2] * cos), dim=-1),
                                     "puts the rotated pairs back as two halves instead of interleaved",
                                     "torch.stack((even, odd), dim=-1).flatten(-2)"),
}

SINUSOIDAL_MISTAKES = {
    "sin_cos_swapped": Mistake(lambda n, C: sinusoidal_table(n, C).view(n, C // 2, 2).flip(-1).reshape(n, C),
                               "puts cos in the even columns and sin in the odd", "even columns: sin"),
    "frequency_i_not_2i": Mistake(lambda n, C: torch.stack((torch.outer(torch.arange(float(n)), 10000.0 ** (-torch.arange(C // 2) / C)).sin(),
                                                            torch.outer(torch.arange(float(n)), 10000.0 ** (-torch.arange(C // 2) / C)).cos()),
                                                           dim=-1).reshape(n, C),
                                  "uses 10000^(-i/C) for pair i; the exponent is 2i/C", "w_i = 10000 ** (-2 * i / C)"),
}


# ---------------------------------------------------------------- layer norm, GELU, MLP, block
def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis; var is the *biased*
    variance (divide by C). x: (..., C); weight, bias: (C,). Returns x's shape."""
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)


def layer_norm_cases():
    C = 4
    return [("T = 4, C = 4", (rand(1, 4, C), rand(C, seed=1) + 1, rand(C, seed=2))),
            ("small variance (where eps sits)", (rand(2, 3, 8, scale=1e-3, seed=3), torch.ones(8), torch.zeros(8))),
            ("large inputs", (rand(2, 3, 8, scale=1e3, seed=4), rand(8, seed=5), rand(8, seed=6))),
            ("another eps", (rand(2, 8, seed=7), torch.ones(8), torch.zeros(8), 0.1))]


def norm(x, weight, bias, eps=1e-5, unbiased=False, eps_outside=False, dim=-1, with_bias=True):
    mean = x.mean(dim, keepdim=True)
    var = x.var(dim, keepdim=True, unbiased=unbiased)
    scaled = (x - mean) / (var.sqrt() + eps if eps_outside else (var + eps).sqrt())
    return scaled * weight + (bias if with_bias else 0)


LAYER_NORM_MISTAKES = {
    "unbiased_variance": Mistake(lambda x, w, b, eps=1e-5: norm(x, w, b, eps, unbiased=True),
                                 "uses the unbiased variance (divides by C - 1); layer norm divides by C",
                                 "x.var(-1, keepdim=True, unbiased=False)"),
    "eps_outside_sqrt": Mistake(lambda x, w, b, eps=1e-5: norm(x, w, b, eps, eps_outside=True),
                                "adds eps outside the square root", "sqrt(var + eps)"),
    "no_eps": Mistake(lambda x, w, b, eps=1e-5: norm(x, w, b, 0.0), "leaves eps out", "sqrt(var + eps)"),
    "wrong_axis": Mistake(lambda x, w, b, eps=1e-5: norm(x, w, b, eps, dim=0) if x.dim() > 1 else norm(x, w, b, eps),
                          "normalises over the first axis instead of the last (the features)",
                          "mean and var over dim=-1"),
    "no_bias": Mistake(lambda x, w, b, eps=1e-5: norm(x, w, b, eps, with_bias=False), "never adds the bias",
                       "* weight + bias"),
    "std_squared": Mistake(lambda x, w, b, eps=1e-5: (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True, unbiased=False) + eps) * w + b,
                           "divides by the variance instead of its square root", "sqrt(var + eps)"),
}


def gelu(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's GELU, in its tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return F.gelu(x, approximate="tanh")


GELU_MISTAKES = {
    "exact_erf": Mistake(lambda x: F.gelu(x), "computes the exact GELU (with erf); GPT-2 uses the tanh form",
                         "0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))"),
    "relu": Mistake(F.relu, "computes ReLU", "the tanh form of GELU"),
    "missing_half": Mistake(lambda x: x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
                            "leaves out the factor 0.5", "0.5 * x * (...)"),
    "cube_coefficient": Mistake(lambda x: 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.44715 * x**3))),
                                "uses 0.44715 for the cube's coefficient; it is 0.044715", "0.044715 * x**3"),
    "sigmoid_form": Mistake(lambda x: x * torch.sigmoid(1.702 * x), "uses the sigmoid approximation x * sigmoid(1.702 x)",
                            "the tanh form"),
}


def gelu_cases():
    return [("8 values", (torch.linspace(-4, 4, 8),)), ("a (2, 3, 5) tensor", (rand(2, 3, 5, scale=2.0),))]


def small_model_config(**changes) -> ModelConfig:
    return ModelConfig(**{"vocab_size": 11, "block_size": 8, "n_layer": 1, "n_head": 2, "n_embd": 4, **changes})


def mlp(x: torch.Tensor, c_fc: torch.nn.Linear, c_proj: torch.nn.Linear) -> torch.Tensor:
    """The block's feed-forward network: c_proj(gelu(c_fc(x))). x: (B, T, C); c_fc: C -> 4C;
    c_proj: 4C -> C. Returns (B, T, C)."""
    module = MLP(small_model_config(n_embd=x.shape[-1]))
    module.c_fc, module.c_proj = c_fc, c_proj
    return module(x)


def linear(n_in, n_out, seed):
    layer = torch.nn.Linear(n_in, n_out)
    with torch.no_grad():
        layer.weight.copy_(rand(n_out, n_in, scale=0.5, seed=seed))
        layer.bias.copy_(rand(n_out, seed=seed + 1))
    return layer


def mlp_cases():
    return [("T = 4, C = 4", (rand(1, 4, 4), linear(4, 16, 1), linear(16, 4, 3))),
            ("B = 2, T = 3, C = 8", (rand(2, 3, 8, seed=5), linear(8, 32, 6), linear(32, 8, 8)))]


MLP_MISTAKES = {
    "exact_gelu": Mistake(lambda x, fc, proj: proj(F.gelu(fc(x))), "uses the exact GELU; GPT-2's is the tanh form",
                          "F.gelu(h, approximate='tanh')"),
    "relu": Mistake(lambda x, fc, proj: proj(F.relu(fc(x))), "uses ReLU", "GELU, tanh form"),
    "no_activation": Mistake(lambda x, fc, proj: proj(fc(x)), "has no activation between the two layers",
                             "gelu between c_fc and c_proj"),
}


def block(x: torch.Tensor, ln_1, attn, ln_2, mlp) -> torch.Tensor:
    """One pre-norm transformer block: x = x + attn(ln_1(x)), then x = x + mlp(ln_2(x)).
    x: (B, T, C); ln_1, attn, ln_2, mlp: callables (B, T, C) -> (B, T, C). Returns (B, T, C)."""
    module = Block(small_model_config(n_embd=x.shape[-1]), 0)
    module.ln_1, module.attn, module.ln_2, module.mlp = ln_1, attn, ln_2, mlp
    return module(x)


def block_cases():
    torch.manual_seed(0)
    module = Block(small_model_config(), 0)
    for seed, parameter in enumerate(module.parameters()):  # distinct values: ln_1 and ln_2 must differ
        with torch.no_grad():
            parameter.add_(rand(*parameter.shape, scale=0.3, seed=seed))
    return [("T = 4, C = 4", (rand(1, 4, 4), module.ln_1, module.attn, module.ln_2, module.mlp)),
            ("B = 2, T = 6", (rand(2, 6, 4, seed=1), module.ln_1, module.attn, module.ln_2, module.mlp))]


BLOCK_MISTAKES = {
    "post_norm": Mistake(lambda x, ln_1, attn, ln_2, mlp: (lambda h: ln_2(h + mlp(h)))(ln_1(x + attn(x))),
                         "normalises after adding (post-norm, the original Transformer); GPT-2 normalises the "
                         "branch's input", "x + attn(ln_1(x))"),
    "no_residual": Mistake(lambda x, ln_1, attn, ln_2, mlp: (lambda h: mlp(ln_2(h)))(attn(ln_1(x))),
                           "drops the residual connections", "x = x + ..."),
    "one_norm_for_both": Mistake(lambda x, ln_1, attn, ln_2, mlp: (lambda h: h + mlp(ln_1(h)))(x + attn(ln_1(x))),
                                 "uses ln_1 before the MLP too", "mlp(ln_2(x))"),
    "parallel": Mistake(lambda x, ln_1, attn, ln_2, mlp: x + attn(ln_1(x)) + mlp(ln_2(x)),
                        "runs the MLP on the block's input instead of after attention", "the MLP reads the updated x"),
}


# ---------------------------------------------------------------- the loss, sampling
def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mean over N rows of -log softmax(logits)[target]. logits: (N, V); targets: (N,) ids.
    Returns a 0-d tensor. Use log-sum-exp with the maximum subtracted, so large logits do not overflow."""
    return F.cross_entropy(logits, targets)


def cross_entropy_cases():
    return [("N = 4, V = 3", (rand(4, 3), torch.tensor([0, 2, 1, 2]))),
            ("large logits (overflow)", (rand(5, 6, scale=300.0, seed=1), torch.tensor([5, 0, 3, 3, 1])))]


CROSS_ENTROPY_MISTAKES = {
    "sum_not_mean": Mistake(lambda logits, t: F.cross_entropy(logits, t, reduction="sum"), "sums over the rows instead of "
                            "averaging", ".mean()"),
    "no_log_softmax": Mistake(lambda logits, t: -logits[torch.arange(len(t)), t].mean(), "takes -logits[target] without the "
                              "log-softmax", "log_softmax(logits, -1) first"),
    "softmax_not_log": Mistake(lambda logits, t: -torch.softmax(logits, -1)[torch.arange(len(t)), t].mean(),
                               "takes -softmax[target]: the log is missing", "-log(softmax)[target]"),
    "no_max_subtracted": Mistake(lambda logits, t: -(logits.exp() / logits.exp().sum(-1, keepdim=True)).log()[torch.arange(len(t)), t].mean(),
                                 "exponentiates without subtracting the maximum, so large logits overflow",
                                 "logsumexp: subtract the row's maximum first"),
}


def next_token_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None) -> torch.Tensor:
    """The next token's distribution: logits (B, V) -> probabilities (B, V).

    Divide the logits by temperature (> 0); keep the top_k largest (others -inf); softmax; then
    keep the smallest set of most likely tokens whose probabilities reach top_p, the token that
    crosses top_p included, and set the others to 0 (no renormalising after top_p).
    """
    return our_next_token_probs(logits, temperature, top_k, top_p)


def sampling_cases():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, 0.0], [0.0, 3.0, 1.0, 1.0, -2.0]])
    return [("temperature 1", (logits,)), ("temperature 0.5", (logits, 0.5)), ("top_k = 2", (logits, 1.0, 2)),
            ("top_p = 0.7", (logits, 1.0, None, 0.7)), ("temperature 2 with top_k = 3", (logits, 2.0, 3))]


def top_p_variant(probs, top_p, keep_crossing=True):
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    cumulative = sorted_probs.cumsum(-1)
    drop = (cumulative - sorted_probs >= top_p) if keep_crossing else (cumulative > top_p)
    drop[:, 0] = False
    return torch.zeros_like(probs).scatter(-1, order, sorted_probs.masked_fill(drop, 0.0))


def sampled(logits, temperature=1.0, top_k=None, top_p=None, times=False, k_after=False, p_crossing=True, k_plus=0):
    logits = logits * temperature if times else logits / temperature
    if top_k is not None and not k_after:
        kth = torch.topk(logits, min(top_k + k_plus, logits.shape[-1]), -1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, -1)
    if top_k is not None and k_after:
        kth = torch.topk(probs, top_k, -1).values[:, -1:]
        probs = probs.masked_fill(probs < kth, 0.0)
    return top_p_variant(probs, top_p, p_crossing) if top_p is not None and top_p < 1 else probs


SAMPLING_MISTAKES = {
    "temperature_multiplies": Mistake(lambda l, t=1.0, k=None, p=None: sampled(l, t, k, p, times=True),
                                      "multiplies the logits by the temperature; divide by it", "logits / temperature"),
    "top_p_drops_crossing_token": Mistake(lambda l, t=1.0, k=None, p=None: sampled(l, t, k, p, p_crossing=False),
                                          "drops the token that crosses top_p; it stays in", "drop where the sum *before* "
                                          "a token already reaches top_p"),
    "top_k_after_softmax": Mistake(lambda l, t=1.0, k=None, p=None: sampled(l, t, k, p, k_after=True),
                                   "zeroes all but the top_k probabilities after the softmax without renormalising",
                                   "mask the logits with -inf before the softmax"),
    "top_k_off_by_one": Mistake(lambda l, t=1.0, k=None, p=None: sampled(l, t, k, p, k_plus=1),
                                "keeps top_k + 1 tokens", "torch.topk(logits, top_k)"),
    "temperature_after_softmax": Mistake(lambda l, t=1.0, k=None, p=None: sampled(l, 1.0, k, p) ** (1 / t) if p is None
                                         else sampled(l, 1.0, k, p),
                                         "applies the temperature to the probabilities without renormalising",
                                         "divide the logits before the softmax"),
}


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


KV_MISTAKES = {
    "new_first": Mistake(lambda pk, pv, k, v: (torch.cat((k, pk), 2), torch.cat((v, pv), 2)),
                         "puts the new positions before the cached ones", "torch.cat((past, new), dim=2)"),
    "keys_values_swapped": Mistake(lambda pk, pv, k, v: (torch.cat((pv, v), 2), torch.cat((pk, k), 2)),
                                   "returns the values as keys and the keys as values", "(keys, values)"),
    "only_new": Mistake(lambda pk, pv, k, v: (k, v), "returns only the new positions: the cache is forgotten",
                        "concatenate the past and the new"),
}


def cache_positions(past: int, T: int) -> torch.Tensor:
    """The positions of T new tokens after `past` cached ones: (T,) = past, past + 1, ..., past + T - 1.
    Rotary and learned positions must be offset so, or a cached step sees every token at position 0."""
    cache = KVCache(1, past + T)
    cache.length = past
    return cache.positions(T, torch.device("cpu"))


POSITIONS_MISTAKES = {
    "not_offset": Mistake(lambda past, T: torch.arange(T), "does not offset the positions by the cached length",
                          "torch.arange(past, past + T)"),
    "off_by_one": Mistake(lambda past, T: torch.arange(past + 1, past + T + 1), "starts one position late",
                          "the first new token is at position `past`"),
}


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """One BPE merge: every occurrence of `pair` in ids, left to right and not overlapping, becomes
    new_id. merge_pair([1, 2, 2, 2, 3], (2, 2), 9) == [1, 9, 2, 3]."""
    return our_merge_pair(ids, pair, new_id)


def merge_overlapping(ids, pair, new_id):
    out = list(ids)
    for i in range(len(ids) - 1):
        if (ids[i], ids[i + 1]) == pair:
            out[i] = new_id
    return [token for i, token in enumerate(out) if not (i > 0 and (ids[i - 1], ids[i]) == pair)]


BPE_MISTAKES = {
    "first_only": Mistake(lambda ids, pair, new_id: next(([*ids[:i], new_id, *ids[i + 2:]] for i in range(len(ids) - 1)
                                                          if (ids[i], ids[i + 1]) == pair), list(ids)),
                          "merges only the first occurrence", "walk the whole list"),
    "overlapping": Mistake(merge_overlapping, "merges overlapping occurrences ((2, 2) in 2 2 2 is one merge, then a 2)",
                           "after a merge, skip both tokens: i += 2"),
}


def bpe_cases():
    return [("a pair twice", ([1, 2, 3, 1, 2], (1, 2), 7)), ("overlapping", ([1, 2, 2, 2, 3], (2, 2), 9)),
            ("at the end", ([5, 4, 5, 4], (5, 4), 8)), ("absent", ([1, 2, 3], (3, 1), 6))]


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
        "exp(x) / exp(x).sum(dim, keepdim=True) is the whole idea; keepdim keeps the shapes aligned.",
        "exp(400) is inf in float32. Subtract each slice's maximum first: softmax(x - m) = softmax(x).",
        "m = x.max(dim, keepdim=True).values; e = (x - m).exp(); return e / e.sum(dim, keepdim=True)"), rows_sum_to_one=(0,)),
    Exercise("causal_mask", causal_mask, our_causal_mask, mask_cases, MASK_MISTAKES, (
        "Query i may see key j when j <= i, without a cache: a lower triangle.",
        "With `past` cached keys, query i sits at position past + i: the triangle moves right by past.",
        "torch.ones(T, past + T, dtype=torch.bool).tril(diagonal=past)")),
    Exercise("attention", attention, scaled_dot_product_attention, attention_cases, ATTENTION_MISTAKES, (
        "scores = q @ k.transpose(-2, -1) gives (B, H, T, S): one score per query and key.",
        "Divide by sqrt(D), D = q.shape[-1], so the scores' spread does not grow with the head's width.",
        "Mask with scores.masked_fill(~mask, float('-inf')) and keep the result; then softmax over dim=-1.",
        "out = weights @ v; return out, weights"), rows_sum_to_one=(1,), causal=True),
    Exercise("split_heads", split_heads, our_split_heads, split_cases, HEAD_MISTAKES, (
        "Each position's C numbers are H heads of D numbers side by side: view(B, T, H, D).",
        "Attention works per head over positions, so H must come before T: transpose(1, 2).")),
    Exercise("merge_heads", merge_heads, our_merge_heads, merge_cases, MERGE_MISTAKES, (
        "Undo split_heads: transpose(1, 2) to (B, T, H, D), then reshape to (B, T, H * D).",)),
    Exercise("sinusoidal_positions", sinusoidal_positions, sinusoidal_table, sinusoidal_cases, SINUSOIDAL_MISTAKES, (
        "Angles: torch.outer(positions, w) with w_i = 10000 ** (-2i / C) for i < C / 2.",
        "Interleave: column 2i is sin, column 2i + 1 is cos; torch.stack((sin, cos), -1).reshape(n, C).")),
    Exercise("apply_rotary", apply_rotary, our_apply_rotary, rotary_cases, ROTARY_MISTAKES, (
        "Pairs are neighbours: u = x[..., 0::2], w = x[..., 1::2].",
        "Rotate: (u cos - w sin, u sin + w cos), then interleave back with stack(..., dim=-1).flatten(-2).")),
    Exercise("layer_norm", layer_norm, layer_norm, layer_norm_cases, LAYER_NORM_MISTAKES, (
        "mean and variance over the last axis, keepdim=True.",
        "The variance divides by C: x.var(-1, keepdim=True, unbiased=False).",
        "eps goes inside the square root: (x - mean) / torch.sqrt(var + eps) * weight + bias")),
    Exercise("gelu", gelu, gelu, gelu_cases, GELU_MISTAKES, (
        "0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))",)),
    Exercise("mlp", mlp, MLP.forward, mlp_cases, MLP_MISTAKES, (
        "Expand, activate, project back: c_proj(gelu(c_fc(x))), with GPT-2's tanh GELU.",)),
    Exercise("block", block, Block.forward, block_cases, BLOCK_MISTAKES, (
        "Pre-norm: each branch reads a normalised copy of x and adds its result to x itself.",
        "x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)); return x")),
    Exercise("cross_entropy", cross_entropy, cross_entropy, cross_entropy_cases, CROSS_ENTROPY_MISTAKES, (
        "log_softmax(logits) = logits - logsumexp(logits); pick each row's target with [arange(N), targets].",
        "logsumexp: m + log(sum(exp(logits - m))) with m the row's maximum.",
        "Return the mean over the rows.")),
    Exercise("next_token_probs", next_token_probs, our_next_token_probs, sampling_cases, SAMPLING_MISTAKES, (
        "Temperature divides the logits: lower than 1 sharpens, higher flattens.",
        "top_k: mask logits below the k-th largest with -inf before the softmax.",
        "top_p: sort the probabilities, and drop a token when the sum of those *before* it already reaches top_p."),
        rows_sum_to_one=()),
    Exercise("kv_cache_update", kv_cache_update, KVCache.update, kv_cases, KV_MISTAKES, (
        "The positions are axis 2 of (B, H, P, D): torch.cat((past_k, k), dim=2).",)),
    Exercise("cache_positions", cache_positions, KVCache.positions, lambda: [("2 cached, 3 new", (2, 3)), ("none cached", (0, 4)),
                                                                            ("7 cached, 1 new", (7, 1))],
             POSITIONS_MISTAKES, ("torch.arange(past, past + T)",)),
    Exercise("merge_pair", merge_pair, our_merge_pair, bpe_cases, BPE_MISTAKES, (
        "Walk left to right; at a match, emit new_id and skip two tokens, else emit the token and skip one.",)),
)}
