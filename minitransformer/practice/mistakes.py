"""The catalogue of known mistakes, exercise by exercise: each a function computing exactly what
the wrong code computes, what to say of it, and the line to look at. The checker (checker.py)
names a mistake when a learner's outputs equal its outputs on every case of the exercise.

Where an exercise's mistakes are one written-out version with one thing changed (`attend`,
`norm`, `sampled`, `pre_norm`, ...), each is made by `flagged` with the flags that change it, so
that the checker can also try two at once (the flags of both).

They are the mistakes learners really make: a scale by D or by the model's width, no scale, the
softmax over the wrong axis, the mask after the softmax, a finite or zero mask value, an inverted
or shifted mask, a masked_fill whose result is thrown away, heads split without the transpose,
keys and values swapped, the unbiased variance, eps outside the square root, the exact GELU for
GPT-2's tanh form, positions not offset in the cache, top-p dropping the token that crosses p, ...
"""

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F

from ..attention import causal_mask as our_causal_mask
from ..bpe import merge_pair as our_merge_pair
from ..positional import sinusoidal_table

@dataclass(frozen=True)
class Mistake:
    """A known wrong version: what it computes, what to say, and the line to look at; for one made
    by `flagged`, the written-out version and the flags that make it wrong."""

    compute: Callable
    says: str
    look_at: str
    flags: dict = field(default_factory=dict)
    variant: Callable | None = None


def flagged(variant: Callable, says: str, look_at: str, **flags) -> Mistake:
    return Mistake(partial(variant, **flags), says, look_at, flags, variant)

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
    "ignores_dim": Mistake(lambda x, dim=-1: torch.softmax(x, -1), "always normalises over the last axis, whatever "
                           "`dim` it is given", "use `dim` in the max and the sum"),
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

def attend(q, k, v, mask=None, scale="sqrt_D", fill=float("-inf"), dim=-1, after=False, use_mask=True, swap=False,
           invert=False):
    """Attention written out, with one thing (or two) changed: the catalogue's mistakes below."""
    D = q.shape[-1]
    factor = {"sqrt_D": 1 / math.sqrt(D), "D": 1 / D, "none": 1.0, "C": 1 / math.sqrt(q.shape[1] * D)}[scale]
    scores = q @ k.transpose(-2, -1) * factor
    if mask is not None and invert:
        mask = ~mask
    if mask is not None and use_mask and not after:
        scores = scores.masked_fill(~mask, fill)
    weights = torch.softmax(scores, dim=dim)
    if mask is not None and after:
        weights = weights.masked_fill(~mask, 0.0)
    return weights @ (k if swap else v), weights

ATTENTION_MISTAKES = {
    "scale_by_D": flagged(attend, "scales the scores by 1/D instead of 1/sqrt(D)", "the scale: 1 / math.sqrt(D)", scale="D"),
    "no_scale": flagged(attend, "does not scale the scores at all", "the scores: multiply by 1 / math.sqrt(D)", scale="none"),
    "scale_by_model_width": flagged(attend, "scales by 1/sqrt(C), the model's width (H x D), not the head's D",
                                    "D is q.shape[-1], one head's width", scale="C"),
    "softmax_wrong_axis": flagged(attend, "takes the softmax over the queries (dim=-2), not over the keys",
                                  "torch.softmax(scores, dim=-1)", dim=-2),
    "mask_after_softmax": flagged(attend, "masks the weights after the softmax, so rows no longer sum to 1",
                                  "mask the scores (with -inf) before the softmax", after=True),
    "finite_mask": flagged(attend, "fills masked scores with a finite -1e4: where real scores are lower, the future "
                           "leaks in", "masked_fill(~mask, float('-inf'))", fill=-1e4),
    "finite_mask_1e9": flagged(attend, "fills masked scores with a finite -1e9: where real scores are lower, the "
                               "future leaks in", "masked_fill(~mask, float('-inf'))", fill=-1e9),
    "zero_mask": flagged(attend, "fills masked scores with 0, which still gets weight", "masked_fill(~mask, float('-inf'))",
                         fill=0.0),
    "inverted_mask": flagged(attend, "masks the keys a query *may* see (the mask inverted)",
                             "masked_fill(~mask, ...): fill where mask is False", invert=True),
    "mask_thrown_away": flagged(attend, "never applies the mask: masked_fill returns a new tensor, and its result was "
                                "not kept", "scores = scores.masked_fill(...)", use_mask=False),
    "keys_values_swapped": flagged(attend, "multiplies the weights by the keys instead of the values", "out = weights @ v",
                                   swap=True),
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

def norm(x, weight, bias, eps=1e-5, unbiased=False, eps_outside=False, dim=-1, with_bias=True, squared=False,
         one_pass=False, no_eps=False):
    """Layer norm written out, with one thing (or two) changed."""
    dim = dim if x.dim() > 1 else -1
    mean = x.mean(dim, keepdim=True)
    with warnings.catch_warnings():  # the unbiased variance of one entry (the first axis of a (1, T, C) case)
        warnings.simplefilter("ignore")
        var = (x * x).mean(dim, keepdim=True) - mean * mean if one_pass else x.var(dim, keepdim=True, unbiased=unbiased)
    eps = 0.0 if no_eps else eps
    spread = var + eps if squared else var.sqrt() + eps if eps_outside else (var + eps).sqrt()
    return (x - mean) / spread * weight + (bias if with_bias else 0)

LAYER_NORM_MISTAKES = {
    "unbiased_variance": flagged(norm, "uses the unbiased variance (divides by C - 1); layer norm divides by C",
                                 "x.var(-1, keepdim=True, unbiased=False)", unbiased=True),
    "eps_outside_sqrt": flagged(norm, "adds eps outside the square root", "sqrt(var + eps)", eps_outside=True),
    "no_eps": flagged(norm, "leaves eps out", "sqrt(var + eps)", no_eps=True),
    "wrong_axis": flagged(norm, "normalises over the first axis instead of the last (the features)",
                          "mean and var over dim=-1", dim=0),
    "no_bias": flagged(norm, "never adds the bias", "* weight + bias", with_bias=False),
    "std_squared": flagged(norm, "divides by the variance instead of its square root", "sqrt(var + eps)", squared=True),
    "one_pass_variance": flagged(norm, "computes the variance as E[x^2] - E[x]^2, which loses every digit when the "
                                 "features share a large offset", "var = ((x - mean) ** 2).mean(-1, keepdim=True)",
                                 one_pass=True),
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

def pre_norm(x, ln_1, attn, ln_2, mlp, attn_residual=True, mlp_residual=True, post_norm=False, mlp_norm="ln_2",
             parallel=False):
    """A block written out, with one thing (or two) changed."""
    if post_norm:
        h = ln_1(x + attn(x))
        return ln_2(h + mlp(h))
    h = (x if attn_residual else 0) + attn(ln_1(x))
    source = x if parallel else h
    return (h if mlp_residual else 0) + mlp((ln_1 if mlp_norm == "ln_1" else ln_2)(source))

BLOCK_MISTAKES = {
    "post_norm": flagged(pre_norm, "normalises after adding (post-norm, the original Transformer); GPT-2 normalises "
                         "the branch's input", "x + attn(ln_1(x))", post_norm=True),
    "no_residual": flagged(pre_norm, "drops the residual connections", "x = x + ...", attn_residual=False,
                           mlp_residual=False),
    "no_attention_residual": flagged(pre_norm, "drops the residual around attention", "x = x + attn(ln_1(x))",
                                     attn_residual=False),
    "no_mlp_residual": flagged(pre_norm, "drops the residual around the MLP", "x = x + mlp(ln_2(x))",
                               mlp_residual=False),
    "one_norm_for_both": flagged(pre_norm, "uses ln_1 before the MLP too", "mlp(ln_2(x))", mlp_norm="ln_1"),
    "parallel": flagged(pre_norm, "runs the MLP on the block's input instead of after attention",
                        "the MLP reads the updated x", parallel=True),
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
    "log_of_softmax": Mistake(lambda logits, t: -torch.softmax(logits, -1).log()[torch.arange(len(t)), t].mean(),
                              "takes the log of softmax's probabilities: a probability that underflows to 0 gives "
                              "log 0 = -inf", "log-softmax as logits - logsumexp(logits), never log(softmax)"),
}

def top_p_variant(probs, top_p, keep_crossing=True, strict=False, renormalise=False):
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    cumulative = sorted_probs.cumsum(-1)
    before = cumulative - sorted_probs
    drop = (before > top_p if strict else before >= top_p) if keep_crossing else (cumulative > top_p)
    drop[:, 0] = False
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs.masked_fill(drop, 0.0))
    return kept / kept.sum(-1, keepdim=True) if renormalise else kept

def keep_top_k(logits, top_k, exactly=False, fill=float("-inf")):
    if exactly:  # torch.topk's k entries, ties at the k-th broken by position
        return torch.full_like(logits, fill).scatter(-1, torch.topk(logits, top_k, -1).indices,
                                                     torch.topk(logits, top_k, -1).values)
    kth = torch.topk(logits, min(top_k, logits.shape[-1]), -1).values[:, -1:]
    return logits.masked_fill(logits < kth, fill)

def sampled(logits, temperature=1.0, top_k=None, top_p=None, times=False, k_after=False, p_crossing=True, k_plus=0,
            k_exactly=False, p_strict=False, p_first=False, renormalise=False, temperature_last=False):
    """Sampling's distribution written out, with one thing (or two) changed."""
    if not temperature_last:
        logits = logits * temperature if times else logits / temperature
    if top_k is not None and not k_after and not p_first:
        logits = keep_top_k(logits, min(top_k + k_plus, logits.shape[-1]), k_exactly)
    probs = torch.softmax(logits, -1)
    if top_p is not None and top_p < 1:
        probs = top_p_variant(probs, top_p, p_crossing, p_strict, renormalise)
    if top_k is not None and (k_after or p_first):
        probs = keep_top_k(probs, top_k, k_exactly, 0.0)
        probs = probs / probs.sum(-1, keepdim=True) if p_first else probs
    if temperature_last:  # the filters on temperature 1's probabilities, then the temperature
        probs = torch.softmax(probs.log() / temperature, -1)
    return probs

SAMPLING_MISTAKES = {
    "temperature_multiplies": flagged(sampled, "multiplies the logits by the temperature; divide by it",
                                      "logits / temperature", times=True),
    "top_p_drops_crossing_token": flagged(sampled, "drops the token that crosses top_p; it stays in",
                                          "drop where the sum *before* a token already reaches top_p", p_crossing=False),
    "top_p_strict": flagged(sampled, "keeps a token whose predecessors sum exactly to top_p (> where the rule is >=)",
                            "drop when the sum before a token is >= top_p", p_strict=True),
    "top_p_renormalises": flagged(sampled, "renormalises the kept probabilities after top_p; the contract leaves them "
                                  "as they are", "no division after top_p", renormalise=True),
    "top_k_after_softmax": flagged(sampled, "zeroes all but the top_k probabilities after the softmax without "
                                   "renormalising", "mask the logits with -inf before the softmax", k_after=True),
    "top_k_off_by_one": flagged(sampled, "keeps top_k + 1 tokens", "torch.topk(logits, top_k)", k_plus=1),
    "top_k_exactly_k": flagged(sampled, "keeps exactly top_k tokens when others tie with the k-th largest; the rule "
                               "keeps every tied token", "mask only logits *below* the k-th largest: logits < kth",
                               k_exactly=True),
    "top_p_before_top_k": flagged(sampled, "applies top_p before top_k; the order is temperature, top_k, softmax, "
                                  "top_p", "top_k on the logits first, then the softmax, then top_p", p_first=True),
    "temperature_after_filters": flagged(sampled, "applies the temperature after the filters; it divides the logits "
                                         "first", "logits / temperature before top_k and the softmax",
                                         temperature_last=True),
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

def merge_missing_last(ids, pair, new_id):
    """A walk that never looks at the last two ids together: ours on all but the last id, then it."""
    return our_merge_pair(ids[:-1], pair, new_id) + ids[-1:]

BPE_MISTAKES = {
    "first_only": Mistake(lambda ids, pair, new_id: next(([*ids[:i], new_id, *ids[i + 2:]] for i in range(len(ids) - 1)
                                                          if (ids[i], ids[i + 1]) == pair), list(ids)),
                          "merges only the first occurrence", "walk the whole list"),
    "overlapping": Mistake(merge_overlapping, "merges overlapping occurrences ((2, 2) in 2 2 2 is one merge, then a 2)",
                           "after a merge, skip both tokens: i += 2"),
    "misses_the_last_pair": Mistake(merge_missing_last, "never merges a pair at the very end of the list",
                                    "the loop must look at the last two ids too: while i < len(ids) - 1"),
}


# ---------------------------------------------------------------- induction heads (induction.py)
REPEAT_MISTAKES = {
    "batch_axis": Mistake(lambda first: torch.cat([first, first], dim=0), "stacks the copy below, as more rows, "
                          "instead of after each row", "torch.cat along dim=1, the positions"),
    "interleaved": Mistake(lambda first: first.repeat_interleave(2, dim=1), "repeats every token in place (a a b b) "
                           "instead of the whole row after itself (a b a b)", "torch.cat([first, first], dim=1)"),
}


def halves(per_position, length, first_extra=0, second_back=0, reduce="mean", swapped=False):
    """Both halves' losses, written out: the boundaries moved by first_extra and second_back, the
    reduction and the order as flags."""
    pick = torch.mean if reduce == "mean" else torch.sum
    pair = [pick(per_position[:length - 1 + first_extra]), pick(per_position[length - second_back:])]
    return torch.stack(pair[::-1] if swapped else pair)


HALVES_MISTAKES = {
    "boundary_in_first": flagged(halves, "counts position R - 1 (which predicts the first repeated token, "
                                 "unpredictable) in the first half", "the first half is per_position[:R - 1]",
                                 first_extra=1),
    "boundary_in_second": flagged(halves, "counts position R - 1 (the first repeated token, which nothing predicts) "
                                  "in the second half", "the second half is per_position[R:]", second_back=1),
    "sums": flagged(halves, "sums each half instead of averaging it", ".mean(), not .sum()", reduce="sum"),
    "swapped": flagged(halves, "returns the second half first", "return torch.stack([first, second])", swapped=True),
}


def scores(maps, period, one_further=False, previous_from=1, first_item=False, reduce="mean"):
    """head_scores written out, with what learners change as flags."""
    weights = torch.stack([m[:1] if first_item else m for m in maps]).float().mean(dim=1)  # (L, H, T, T)
    T = weights.shape[-1]
    back = period if one_further else period - 1
    pick = (lambda x: x.mean(-1)) if reduce == "mean" else (lambda x: x.sum(-1))
    t = torch.arange(previous_from, T)
    previous = pick(weights[:, :, t, (t - 1).clamp(min=0)])
    t = torch.arange(back, T)
    induction = pick(weights[:, :, t, t - back])
    return previous, induction


SCORE_MISTAKES = {
    "duplicate_token": flagged(scores, "scores attention on the earlier copy of the same token (t - R: a duplicate-"
                               "token head), not the token after it (t - R + 1)", "the key is t - period + 1",
                               one_further=True),
    "first_position_counted": flagged(scores, "counts position 0 in the previous-token score (it can only look at "
                                      "itself, so it adds a weight of 1 to every head)",
                                      "the previous-token score averages over t = 1 .. T - 1", previous_from=0),
    "first_item_only": flagged(scores, "scores batch item 0 alone instead of averaging over the batch",
                               "average the maps over the batch (dim 0) first", first_item=True),
    "sums": flagged(scores, "sums the weights instead of averaging them over the positions", ".mean(-1), not .sum(-1)",
                    reduce="sum"),
}
