"""The catalogue of known mistakes, exercise by exercise: each a function computing exactly what
the wrong code computes, what to say of it, and the line to look at. The checker (checker.py)
names a mistake when a learner's outputs equal its outputs on every case of the exercise.

They are the mistakes learners really make: a scale by D or by the model's width, no scale, the
softmax over the wrong axis, the mask after the softmax, a finite or zero mask value, an inverted
or shifted mask, a masked_fill whose result is thrown away, heads split without the transpose,
keys and values swapped, the unbiased variance, eps outside the square root, the exact GELU for
GPT-2's tanh form, positions not offset in the cache, top-p dropping the token that crosses p, ...
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..attention import causal_mask as our_causal_mask
from ..positional import sinusoidal_table

@dataclass(frozen=True)
class Mistake:
    """A known wrong version: what it computes, what to say, and the line to look at."""

    compute: Callable
    says: str
    look_at: str

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

MLP_MISTAKES = {
    "exact_gelu": Mistake(lambda x, fc, proj: proj(F.gelu(fc(x))), "uses the exact GELU; GPT-2's is the tanh form",
                          "F.gelu(h, approximate='tanh')"),
    "relu": Mistake(lambda x, fc, proj: proj(F.relu(fc(x))), "uses ReLU", "GELU, tanh form"),
    "no_activation": Mistake(lambda x, fc, proj: proj(fc(x)), "has no activation between the two layers",
                             "gelu between c_fc and c_proj"),
}

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

KV_MISTAKES = {
    "new_first": Mistake(lambda pk, pv, k, v: (torch.cat((k, pk), 2), torch.cat((v, pv), 2)),
                         "puts the new positions before the cached ones", "torch.cat((past, new), dim=2)"),
    "keys_values_swapped": Mistake(lambda pk, pv, k, v: (torch.cat((pv, v), 2), torch.cat((pk, k), 2)),
                                   "returns the values as keys and the keys as values", "(keys, values)"),
    "only_new": Mistake(lambda pk, pv, k, v: (k, v), "returns only the new positions: the cache is forgotten",
                        "concatenate the past and the new"),
}

POSITIONS_MISTAKES = {
    "not_offset": Mistake(lambda past, T: torch.arange(T), "does not offset the positions by the cached length",
                          "torch.arange(past, past + T)"),
    "off_by_one": Mistake(lambda past, T: torch.arange(past + 1, past + T + 1), "starts one position late",
                          "the first new token is at position `past`"),
}

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
