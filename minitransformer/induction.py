"""Induction heads: the test that shows them, and the training rows that grow them.

An induction head continues a pattern seen earlier in the context: at a token A, it looks back
for the token that followed the previous A, and predicts that one. It takes two heads in a row
(Olsson et al., 2022): a previous-token head in an earlier layer writes into every position
"the token before me was A"; the induction head in a later layer matches its query (the current
token, A) against those keys, and copies the token it lands on into the prediction.

The test (`repeated_tokens`): R random tokens, then the same R again. Random tokens cannot be
predicted from the language, so a model without induction heads pays about ln V nats for every
token of both halves; with them, the second half is nearly free. `position_losses` gives the loss
at every position, `half_losses` the mean of each half, `head_scores` (inspection.py) how much
each head attends to the previous token and to the induction target, and `induction_report` puts
it all together, with the second half's loss when the heads found are switched off.

Design choices:
- Training rows of repeated random segments (`repeated_rows`, `data.repeated_share`): Tiny
  Shakespeare repeats itself rarely and briefly inside a window of 128 characters, so copying
  earns little and the heads form late or not at all; rows where copying is the only way to a
  low loss make the circuit worth learning, and it forms within minutes on a laptop.
- One generator seeds everything here, so the same seed gives the same tokens, scores and heads.
- The in-context score logged at every evaluation (`in_context_score`) is the second half's loss
  over the first half's: 1 without in-context learning, near 0 once induction heads copy.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .activations import ablate, check_model
from .errors import UserError, real_number, whole_number
from .inspection import capture_attention, head_scores
from .model import GPT

# The repeated segment of the logged in-context score, at most (a model's context allowing).
SCORE_LENGTH = 32
SCORE_BATCH = 8
SCORE_SEED = 1234


def repeat_twice(first: torch.Tensor) -> torch.Tensor:
    """Each row followed by itself: first (B, R) -> (B, 2R), row b = first[b], then first[b] again."""
    return torch.cat([first, first], dim=1)  # (B, R) twice along the positions -> (B, 2R)


def repeated_tokens(batch: int, length: int, vocab_size: int, generator: torch.Generator,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, 2R) token ids: R random tokens, then the same R again, in every row."""
    first = torch.randint(vocab_size, (batch, length), generator=generator)  # (B, R)
    return repeat_twice(first).to(device)  # (B, 2R)


def repeated_rows(rows: int, width: int, lengths: tuple[int, int], vocab_size: int,
                  generator: torch.Generator) -> torch.Tensor:
    """(rows, width) token ids: each row a random segment of lengths[0] to lengths[1] tokens,
    repeated until the row is full. Training mixes these into its batches (data.repeated_share)."""
    out = torch.empty(rows, width, dtype=torch.long)
    sizes = torch.randint(lengths[0], lengths[1] + 1, (rows,), generator=generator)  # (rows,)
    for row, size in enumerate(sizes.tolist()):
        segment = torch.randint(vocab_size, (size,), generator=generator)  # (L,)
        out[row] = segment.repeat(width // size + 1)[:width]  # (width,)
    return out


@torch.no_grad()
def position_losses(model: GPT, tokens: torch.Tensor) -> torch.Tensor:
    """(2R - 1,): the mean loss over the batch of predicting token t + 1 at every position t."""
    logits, _ = model(tokens[:, :-1])  # (B, 2R - 1, V)
    losses = F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten(), reduction="none")  # (B * (2R - 1),)
    return losses.view(tokens.shape[0], -1).mean(dim=0)  # (B, 2R - 1) -> (2R - 1,)


def half_losses(per_position: torch.Tensor, length: int) -> torch.Tensor:
    """(2,): the mean loss of each half, from per_position (2R - 1,) of a sequence of R tokens
    repeated (R = length). The first half predicts tokens 1 to R - 1 (positions 0 to R - 2), the
    second half tokens R + 1 to 2R - 1 (positions R to 2R - 2). Position R - 1, predicting the
    first repeated token, belongs to neither: nothing before it says what comes."""
    first = per_position[: length - 1].mean()  # positions 0 .. R - 2
    second = per_position[length:].mean()  # positions R .. 2R - 2
    return torch.stack([first, second])  # (2,)


def score_length(model: GPT) -> int:
    """R for the in-context score: SCORE_LENGTH, or half the context if that is shorter."""
    return max(2, min(SCORE_LENGTH, model.config.block_size // 2))


def in_context_score(model: GPT) -> float:
    """The second half's loss over the first half's on repeated random tokens (a fixed seed, so
    every evaluation asks the same): 1 without in-context learning, near 0 with induction heads."""
    device = model.wte.weight.device
    length = score_length(model)
    tokens = repeated_tokens(SCORE_BATCH, length, model.config.vocab_size, torch.Generator().manual_seed(SCORE_SEED),
                             device)
    was_training = model.training
    model.eval()
    try:
        first, second = half_losses(position_losses(model, tokens), length).tolist()
    finally:
        model.train(was_training)
    return second / first


@dataclass
class InductionReport:
    """What `induction_report` measured on repeated random tokens (R = length)."""

    length: int
    per_position: torch.Tensor  # (2R - 1,) mean loss at every position
    first: float  # the first half's mean loss
    second: float  # the second half's
    previous: torch.Tensor  # (L, H) previous-token scores
    induction: torch.Tensor  # (L, H) induction scores
    previous_heads: list[tuple[int, int]]  # (layer, head) with a previous-token score >= threshold
    induction_heads: list[tuple[int, int]]  # ... with an induction score >= threshold, in a layer after layer 0
    without_induction: float | None  # the second half's loss with the induction heads switched off
    without_both: float | None  # ... and the previous-token heads too
    tokens: torch.Tensor  # (B, 2R) the sequences measured
    patterns: dict[tuple[int, int], torch.Tensor]  # (2R - 1, 2R - 1) attention of each head named, sequence 0

    def gap_closed(self) -> float | None:
        """The share of the gap between the halves that switching off the induction heads closes."""
        if self.without_induction is None or self.first <= self.second:
            return None
        return (self.without_induction - self.second) / (self.first - self.second)


def heads_above(scores: torch.Tensor, threshold: float, first_layer: int = 0) -> list[tuple[int, int]]:
    """(layer, head) pairs of scores (L, H) at or above threshold, from first_layer on, best first."""
    found = [(scores[layer, head].item(), layer, head) for layer in range(first_layer, scores.shape[0])
             for head in range(scores.shape[1]) if scores[layer, head] >= threshold]
    return [(layer, head) for _, layer, head in sorted(found, reverse=True)]


@torch.no_grad()
def induction_report(model: GPT, length: int = 40, batch: int = 16, threshold: float = 0.4, seed: int = 0) -> InductionReport:
    """Find the model's previous-token and induction heads on `batch` sequences of `length`
    random tokens repeated twice, and switch them off to see the second half's loss climb back.

    Induction heads are looked for from layer 1 on: in layer 0 no head can know the token before
    another position's (that takes a previous-token head before it).
    """
    check_model(model)
    for name, value, low in (("length", length, 2), ("batch", batch, 1)):
        if not whole_number(value) or value < low:
            raise UserError(f"{name} must be a whole number of at least {low}, got {value!r}")
    if not real_number(threshold) or not 0 < threshold <= 1:
        raise UserError(f"threshold must be in (0, 1], got {threshold!r}")
    if 2 * length > model.config.block_size + 1:
        raise UserError(f"length {length} repeated twice is longer than this model's context "
                        f"({model.config.block_size}); use at most {(model.config.block_size + 1) // 2}")
    was_training = model.training
    model.eval()
    try:
        device = model.wte.weight.device
        tokens = repeated_tokens(batch, length, model.config.vocab_size, torch.Generator().manual_seed(seed), device)
        per_position = position_losses(model, tokens)
        first, second = half_losses(per_position, length).tolist()
        with capture_attention(model) as maps:
            model(tokens[:, :-1])
        previous, induction = head_scores(maps, length)  # (L, H) each
        previous_heads = heads_above(previous, threshold)
        induction_heads = heads_above(induction, threshold, first_layer=1)
        patterns = {head: maps[head[0]][0, head[1]].float().cpu() for head in (*previous_heads, *induction_heads)}
        without_induction = without_both = None
        if induction_heads:
            with ablate(model, heads=induction_heads):
                without_induction = half_losses(position_losses(model, tokens), length)[1].item()
            with ablate(model, heads=sorted(set(induction_heads) | set(previous_heads))):
                without_both = half_losses(position_losses(model, tokens), length)[1].item()
    finally:
        model.train(was_training)
    return InductionReport(length, per_position.cpu(), first, second, previous.cpu(), induction.cpu(), previous_heads,
                           induction_heads, without_induction, without_both, tokens.cpu(), patterns)
