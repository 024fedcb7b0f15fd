"""Every activation by name, and changing them: record, ablate, patch, and the logit lens.

All four listen at the model's taps (taps.py lists the names and shapes):
- `record(model)`: keep the activations of every forward pass run inside the block, by name;
- `ablate(model, heads=[(2, 1)], mlps=[0])`: switch heads or MLPs off (zero, or their mean);
- `patch(model, activations)`: put activations recorded on another prompt into this pass;
- `logit_lens(model, idx)`: what each layer's residual stream would predict if the model stopped
  there (the final LayerNorm and the output head applied to it), and `ablation_losses`, how much
  the loss rises when each head is switched off.

Design choices:
- Context managers over the same names, so one vocabulary serves looking and changing; the
  model's code is not edited and is restored when the block ends (attention runs on the explicit
  path inside, whatever the config says).
- Mean ablation replaces a head's output (or an MLP's) by its mean over a *reference* pass (token
  ids given once, e.g. windows of the validation text), taken when the block starts: the head then
  says "the usual thing" instead of nothing, which separates what it adds for this input from its
  constant offset. A mean over the pass being ablated would let position t see later positions
  (no longer causal), and in cached generation (one position a pass) it would be the output itself.
"""

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from .errors import UserError, check_token_ids, whole_number
from .inspection import listening, manual_attention
from .model import GPT

ABLATIONS = ("zero", "mean")


def tap_names(model: GPT) -> list[str]:
    """Every tap's full name in this model (taps.py), in the order a pass reaches them."""
    block = ["resid_pre", "ln_1", "attn.q", "attn.k", "attn.v", "attn.scores", "attn.weights", "attn.heads", "attn.out",
             "resid_mid", *(["ln_2", "mlp.hidden", "mlp.out"] if model.config.mlp else []), "resid_post"]
    position = ["pos"] if model.config.position in ("learned", "sinusoidal") else []
    return ["embed", *position, *[f"blocks.{layer}.{name}" for layer in range(model.config.n_layer) for name in block],
            "ln_f", "logits"]


def listed(values, what: str, example: str) -> list:
    """values (a list, tuple, set or any iterable but a string, a dict or a tensor) as a list; else UserError."""
    if isinstance(values, (str, bytes, dict)) or torch.is_tensor(values):
        raise UserError(f"{what} takes a list, e.g. {example}; got {values!r}")
    try:
        return list(values)
    except TypeError:
        raise UserError(f"{what} takes a list, e.g. {example}; got {values!r}") from None


def check_model(model) -> None:
    """Refuse what is not a GPT: these tools listen at its taps (taps.py)."""
    if not isinstance(model, GPT):
        raise UserError(f"the model must be a minitransformer GPT (load_model(path)[0], or GPT(config)); got "
                        f"{type(model).__name__}")


def check_ids(model: GPT, idx, what: str) -> None:
    """Refuse what is not token ids (B, T) this model reads whole (errors.check_token_ids)."""
    check_token_ids(idx, model.config.vocab_size, what, model.config.block_size)


def check_names(model: GPT, names, what: str) -> list[str]:
    """names, checked to be a list of this model's tap names (or their prefixes, "blocks.1"), as a list."""
    names = listed(names, what, "['blocks.0.attn.q']")
    if not all(isinstance(name, str) for name in names):
        raise UserError(f"{what} takes a list of names, e.g. ['blocks.0.attn.q']; got {names!r}")
    known = tap_names(model)
    for name in names:
        if not any(full == name or full.startswith(name + ".") for full in known):
            raise UserError(f"{what}: {name!r} is not an activation of this model; the names are "
                            f"{', '.join(known[:4])}, ..., {', '.join(known[-3:])} (all in minitransformer/taps.py)")
    return names


def wanted(name: str, names) -> bool:
    """True when names is None, or holds name or a prefix of it ("blocks.1" takes all of block 1)."""
    return names is None or any(name == n or name.startswith(n + ".") for n in names)


@contextmanager
def record(model: GPT, names=None):
    """Yield a list that gets one dict {name: tensor} per forward pass run inside the block.

    with record(model) as passes:
        model(idx)
    passes[0]["blocks.1.attn.weights"]  # (B, H, T, T)

    Around `generate` every step is a pass: the first holds the prompt's positions, each later
    one the new token's (T = 1) with keys and values over the whole cache (S positions).
    names: only these names, or names under these prefixes (all by default). Tensors are
    detached copies: they stay as recorded whatever runs after.
    """
    check_model(model)
    if names is not None:
        names = check_names(model, names, "record")  # a list: a generator would be used up by the check
    passes: list[dict[str, torch.Tensor]] = []

    def keep(name: str, tensor: torch.Tensor) -> None:
        if name == "embed":  # the first tap of every pass
            passes.append({})
        if wanted(name, names):
            passes[-1][name] = tensor.detach().clone()

    with listening(model, keep, observe=True):
        yield passes


def whole(value: object, what: str) -> int:
    """value, which must be a whole number (an int, not a float that int() would cut, nor a bool)."""
    if not whole_number(value):
        raise UserError(f"{what} must be a whole number, got {value!r}")
    return value


def check_heads_and_mlps(model: GPT, heads, mlps) -> tuple[set[tuple[int, int]], set[int]]:
    L, H = model.config.n_layer, model.config.n_head
    heads, mlps = listed(heads, "heads", "heads=[(1, 2)]"), listed(mlps, "mlps", "mlps=[0]")
    for pair in heads:
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise UserError(f"heads are (layer, head) pairs, e.g. heads=[(1, 2)]; got {pair!r}")
    heads = {(whole(layer, "a head's layer"), whole(head, "a head's number")) for layer, head in heads}
    mlps = {whole(layer, "an MLP's layer") for layer in mlps}
    if mlps and not model.config.mlp:
        raise UserError("this model has no MLPs (model.mlp = false: attention only); ablate heads instead")
    for layer, head in heads:
        if not (0 <= layer < L and 0 <= head < H):
            raise UserError(f"head {layer}.{head} does not exist: this model has layers 0 to {L - 1} and heads 0 to {H - 1}")
    for layer in mlps:
        if not 0 <= layer < L:
            raise UserError(f"MLP {layer} does not exist: this model has layers 0 to {L - 1}")
    return heads, mlps


def replacement(tensor: torch.Tensor, mean: torch.Tensor | None) -> torch.Tensor:
    """What an ablated output (B, T, ...) becomes: zeros, or the reference pass's mean (...)."""
    if mean is None:
        return torch.zeros_like(tensor)
    return mean.to(tensor.dtype).expand_as(tensor)


@torch.no_grad()
def reference_means(model: GPT, reference: torch.Tensor, heads, mlps) -> dict[str, torch.Tensor]:
    """Each ablated output's mean over the reference pass's batch and positions: a head's (D,), an
    MLP's (C,), by the name of its tap and the head."""
    names = sorted({f"blocks.{layer}.attn.heads" for layer, _ in heads} | {f"blocks.{layer}.mlp.out" for layer in mlps})
    with record(model, names) as passes:
        model(reference)
    means = {f"blocks.{layer}.attn.heads.{head}": passes[0][f"blocks.{layer}.attn.heads"][:, head].mean(dim=(0, 1))
             for layer, head in heads}  # (B, T, D) -> (D,)
    means.update({f"blocks.{layer}.mlp.out": passes[0][f"blocks.{layer}.mlp.out"].mean(dim=(0, 1)) for layer in mlps})
    return means


@contextmanager
def ablate(model: GPT, heads=(), mlps=(), how: str = "zero", reference: torch.Tensor | None = None):
    """Inside the block, the given heads (pairs (layer, head)) and MLPs (layers) are switched off.

    A head's output (its slice of blocks.L.attn.heads, (B, T, D)) or an MLP's output
    (blocks.L.mlp.out, (B, T, C)) becomes zeros (how="zero") or, with how="mean", its mean over a
    reference pass on `reference` (token ids (B, T), run once when the block starts).
    """
    check_model(model)
    if not isinstance(how, str) or how not in ABLATIONS:
        raise UserError(f"ablation {how!r} is not known; choose one of {list(ABLATIONS)}")
    if (how == "mean") != (reference is not None):
        raise UserError("how='mean' takes the means from reference=token ids (B, T), e.g. windows of the validation "
                        "text, and how='zero' takes no reference" if how == "mean" else
                        "reference= is for how='mean' (zero ablation needs no reference)")
    heads, mlps = check_heads_and_mlps(model, heads, mlps)
    if how == "mean":
        check_ids(model, reference, "reference")
    means = reference_means(model, reference, heads, mlps) if how == "mean" else {}
    with ablating(model, heads, mlps, means):
        yield


@contextmanager
def ablating(model: GPT, heads: set[tuple[int, int]], mlps: set[int], means: dict[str, torch.Tensor]):
    """ablate's work, on checked heads and MLPs: zeros, or the given means (reference_means's names)."""
    def switch_off(name: str, tensor: torch.Tensor) -> torch.Tensor | None:
        parts = name.split(".")  # blocks, L, attn|mlp, heads|out
        if len(parts) != 4:
            return None
        layer = int(parts[1])
        if parts[2:] == ["attn", "heads"] and any(l == layer for l, _ in heads):
            out = tensor.clone()  # (B, H, T, D)
            for head in sorted(h for l, h in heads if l == layer):
                out[:, head] = replacement(tensor[:, head], means.get(f"{name}.{head}"))  # (B, T, D)
            return out
        if parts[2:] == ["mlp", "out"] and layer in mlps:
            return replacement(tensor, means.get(name))  # (B, T, C)
        return None

    with listening(model, switch_off):
        yield


@contextmanager
def patch(model: GPT, activations: dict[str, torch.Tensor]):
    """Inside the block, each named activation is replaced by the given tensor (activation
    patching): record them on prompt B, patch them into a pass on prompt A of the same length,
    and see how much of B's behaviour they carry."""
    check_model(model)
    if not isinstance(activations, dict):
        raise UserError(f"patch takes a dict {{name: tensor}}, e.g. the passes[0] of record(); got {type(activations).__name__}")
    for name, value in activations.items():
        if not torch.is_tensor(value):
            raise UserError(f"patch: {name!r} is given {type(value).__name__}; give the tensor recorded for it")
    unknown = [name for name in activations if name not in tap_names(model)]
    if unknown:
        check_names(model, unknown, "patch")  # names nothing: one line naming the valid ones
        raise UserError(f"patch: {unknown[0]!r} names several activations; give one full name, e.g. "
                        f"{tap_names(model)[2]!r}")

    def put(name: str, tensor: torch.Tensor) -> torch.Tensor | None:
        if name not in activations:
            return None
        patched = activations[name]
        if patched.shape != tensor.shape:
            raise UserError(f"cannot patch {name}: the given tensor is {tuple(patched.shape)}, this pass's "
                            f"{tuple(tensor.shape)}; record it from a prompt of the same length")
        return patched.to(tensor.device, tensor.dtype)

    with listening(model, put):
        yield


@torch.no_grad()
def logit_lens(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """(L + 1, B, T, V) logits: row 0 from the embeddings (the stream entering block 0), row l + 1
    from block l's output, each through the final LayerNorm and the output head, as if the model
    stopped there. The last row is the model's own logits."""
    check_model(model)
    check_ids(model, idx, "logit_lens's idx")
    L = model.config.n_layer
    names = ["blocks.0.resid_pre", *(f"blocks.{layer}.resid_post" for layer in range(L))]
    with record(model, names) as passes:
        model(idx)
    streams = torch.stack([passes[0][name] for name in names])  # (L + 1, B, T, C)
    return model.lm_head(model.ln_f(streams))  # (L + 1, B, T, C) @ (C, V) -> (L + 1, B, T, V)


def lens_rows(lens: torch.Tensor, ids: list[int], label, k: int = 1) -> list[dict]:
    """The logit lens of batch item 0 as data: for each layer and position, the top k tokens with
    their probabilities and the probability of the token that actually comes next (None at the
    last position, whose next token the prompt does not hold)."""
    probs = torch.softmax(lens[:, 0].float(), dim=-1)  # (L + 1, T, V)
    rows = []
    for layer in range(probs.shape[0]):
        for t in range(probs.shape[1]):
            values, top = probs[layer, t].topk(k)
            rows.append({
                "layer": layer, "position": t, "token": label(ids[t]),
                "top": [(label(i), p) for i, p in zip(top.tolist(), values.tolist())],
                "p_next": probs[layer, t, ids[t + 1]].item() if t + 1 < len(ids) else None,
            })
    return rows


def lens_table(rows: list[dict], width: int = 6) -> str:
    """The logit lens as text: one line per layer ("emb" for the embeddings), one column per
    position, each cell the top token and, below, the probability of the actual next token."""
    layers = 1 + max(row["layer"] for row in rows)
    T = 1 + max(row["position"] for row in rows)
    cell = {(row["layer"], row["position"]): row for row in rows}
    name = lambda layer: "emb" if layer == 0 else f"L{layer - 1}"  # noqa: E731
    lines = ["top token (rows: the stream after each layer; columns: positions)",
             "       " + "".join(f"{cell[0, t]['token'][:width]:>{width + 1}}" for t in range(T))]
    for layer in range(layers):
        lines.append(f"{name(layer):>6} " + "".join(f"{cell[layer, t]['top'][0][0][:width]:>{width + 1}}" for t in range(T)))
    lines.append("probability of the actual next token")
    for layer in range(layers):
        values = [cell[layer, t]["p_next"] for t in range(T)]
        lines.append(f"{name(layer):>6} " + "".join(f"{'' if p is None else f'{p:.2f}':>{width + 1}}" for p in values))
    return "\n".join(lines)


@torch.no_grad()
def ablation_losses(model: GPT, x: torch.Tensor, y: torch.Tensor, how: str = "zero",
                    reference: torch.Tensor | None = None,
                    means: dict[str, torch.Tensor] | None = None) -> tuple[float, torch.Tensor]:
    """The loss on (x, y) (B, T each) and the loss with each head ablated in turn: (base, (L, H)).
    how="mean" takes each head's mean from one pass on reference (ablate), or from `means`, the
    `head_means` of a reference already taken (several calls on one reference compute them once)."""
    check_model(model)
    check_ids(model, x, "x")
    check_ids(model, y, "y")
    if y.shape != x.shape:
        raise UserError(f"y must have x's shape {tuple(x.shape)} (the next token at every position); got {tuple(y.shape)}")
    if not isinstance(how, str) or how not in ABLATIONS:
        raise UserError(f"ablation {how!r} is not known; choose one of {list(ABLATIONS)}")
    if how == "mean" and means is None and reference is None:
        raise UserError("how='mean' takes the means from reference=token ids (B, T), e.g. windows of the "
                        "validation text")
    if how == "zero" and (reference is not None or means is not None):
        raise UserError("reference= and means= are for how='mean' (zero ablation needs no reference)")
    if means is not None and not isinstance(means, dict):
        raise UserError(f"means= takes the dict that head_means(model, reference) returns; got {type(means).__name__}")

    def loss() -> float:
        logits, _ = model(x)
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten()).item()

    losses = torch.zeros(model.config.n_layer, model.config.n_head)
    with manual_attention(model):  # the same attention path with and without the ablation
        if how == "mean" and means is None:
            means = head_means(model, reference)
        means = means or {}
        base = loss()
        for layer in range(model.config.n_layer):
            for head in range(model.config.n_head):
                with ablating(model, {(layer, head)}, set(), means):
                    losses[layer, head] = loss()
    return base, losses


def head_means(model: GPT, reference: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every head's mean output over one pass on reference (B, T): the means mean ablation puts in."""
    check_ids(model, reference, "reference")
    heads = {(layer, head) for layer in range(model.config.n_layer) for head in range(model.config.n_head)}
    return reference_means(model, reference, heads, set())
