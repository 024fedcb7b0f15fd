"""The GPT: embeddings, a stack of transformer blocks, and an output head.

Read top to bottom: `MLP`, then `Block` (attention and MLP with pre-norm residuals), then `GPT`.
Attention itself lives in attention.py and positional encodings in positional.py.

Design choices:
- GPT-2's architecture and parameter names (`wte`, `wpe`, `ln_1`, `c_attn`, `c_fc`, `c_proj`, ...):
  with learned positions and biases the model computes GPT-2's function, so its weights can be
  loaded into it.
- GPT-2's initialisation, in one place (`GPT.init_weights`).
- `forward` always returns `(logits, loss)`: logits (B, T, V), loss None without targets.
- Every interesting tensor passes a named tap (`self.tap("resid_mid", x)`, taps.py), where the
  inspection tools record it or replace it; nobody listens by default.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import CausalSelfAttention
from .config import ModelConfig
from .dropout import Dropout
from .errors import UserError
from .kv_cache import KVCache, StaticKVCache
from .pieces import piece
from .positional import RotaryEmbedding, SinusoidalPositions
from .taps import Tap, Taps, untapped

def gelu(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's GELU, in its tanh form: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), elementwise."""
    return F.gelu(x, approximate="tanh")


def exact_gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU itself: x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2))), elementwise; model.gelu = "exact".
    It differs from the tanh form by at most about 5e-4, and on an AVX2 CPU costs 2.7x less,
    forward and backward (0.76 against 2.04 ms for a (4, 256, 512) tensor on a 2-core AMD EPYC)."""
    return F.gelu(x)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis; var is the *biased*
    variance (divide by C). x: (..., C); weight, bias: (C,). Returns x's shape."""
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The mean over N rows of -log softmax(logits)[target]. logits: (N, V); targets: (N,) ids.
    Returns a 0-d tensor. Use log-sum-exp with the maximum subtracted, so large logits do not
    overflow. (The model marks a position to leave out with the target -1; ours skips those.)"""
    return F.cross_entropy(logits, targets, ignore_index=-1)


class LayerNorm(nn.LayerNorm):
    """torch's LayerNorm module (its weight and bias), computing `layer_norm` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = piece("layer_norm", layer_norm)  # ours, or a learner's under practice.use (pieces.py)
        bias = self.bias if self.bias is not None or norm is layer_norm else torch.zeros_like(self.weight)
        return norm(x, self.weight, bias, self.eps)  # (..., C)


class MLP(nn.Module):
    """Position-wise feed-forward network: C -> 4C -> GELU -> C (model.gelu: GPT-2's tanh form or the exact one)."""

    def __init__(self, config: ModelConfig, tap=untapped):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.dropout)
        self.exact_gelu = config.gelu == "exact"
        self.tap = tap  # taps.py: where inspection may look at, or replace, a tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        h = self.c_fc(x)  # (B, T, 4C)
        if self.exact_gelu:
            h = exact_gelu(h)  # model.gelu = "exact"
        else:
            h = piece("gelu", gelu)(h)  # GPT-2's tanh GELU (above), or a learner's under practice.use (pieces.py)
        h = self.tap("hidden", h)
        return self.tap("out", self.dropout(self.c_proj(h)))  # (B, T, C)


class Block(nn.Module):
    """One transformer block with pre-norm residuals: x + attn(ln(x)), then x + mlp(ln(x)).

    With model.mlp = false the block is attention only (x + attn(ln(x))): the residual stream is
    then a sum of what heads wrote, which makes circuits such as induction heads easy to read.
    """

    def __init__(self, config: ModelConfig, layer: int, taps: Taps | None = None):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer, taps)
        self.ln_2: LayerNorm | None = None
        self.mlp: MLP | None = None
        if config.mlp:
            self.ln_2 = LayerNorm(config.n_embd, eps=config.layer_norm_eps, bias=config.bias)
            self.mlp = MLP(config, Tap(taps, f"blocks.{layer}.mlp") if taps is not None else untapped)
        self.tap = Tap(taps, f"blocks.{layer}") if taps is not None else untapped  # taps.py

    def forward(
        self,
        x: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        cache: KVCache | StaticKVCache | None = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        x = self.tap("resid_pre", x)
        x = x + self.attn(self.tap("ln_1", self.ln_1(x)), rope, cache)  # (B, T, C): tokens exchange information
        x = self.tap("resid_mid", x)
        if self.mlp is not None:
            x = x + self.mlp(self.tap("ln_2", self.ln_2(x)))  # (B, T, C): each token is processed on its own
        return self.tap("resid_post", x)


class GPT(nn.Module):
    """Token ids (B, T) -> next-token logits (B, T, V)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if not isinstance(config, ModelConfig):  # a dict would fail later, far from the mistake
            raise UserError(f"GPT takes a ModelConfig, e.g. GPT(ModelConfig(vocab_size=65)); got {type(config).__name__}")
        self.config = config
        C = config.n_embd
        self.wte = nn.Embedding(config.vocab_size, C)
        # Learned and sinusoidal positions are added to the token embeddings; rotary positions
        # rotate queries and keys inside attention; "none" (an experiment) gives no positions at all.
        self.wpe: nn.Module | None = None
        self.rope: RotaryEmbedding | None = None
        if config.position == "learned":
            self.wpe = nn.Embedding(config.block_size, C)
        elif config.position == "sinusoidal":
            self.wpe = SinusoidalPositions(config.block_size, C)
        elif config.position == "rope":
            self.rope = RotaryEmbedding(config.block_size, config.head_size)
        self.drop = Dropout(config.dropout)
        # Named places where inspection may look at or replace a tensor (taps.py); nobody listens by default.
        self.taps = Taps()
        self.tap = Tap(self.taps, "")
        self.blocks = nn.ModuleList(Block(config, layer, self.taps) for layer in range(config.n_layer))
        self.ln_f = LayerNorm(C, eps=config.layer_norm_eps, bias=config.bias)
        self.lm_head = nn.Linear(C, config.vocab_size, bias=False)
        if config.tie_weights:
            # Weight tying (Press & Wolf 2017): reading a token in and writing it out use one matrix.
            self.lm_head.weight = self.wte.weight
        self.init_weights()

    def init_weights(self) -> None:
        """GPT-2's initialisation.

        Linear and embedding weights ~ N(0, 0.02), biases 0, LayerNorm scale 1 and shift 0. The two
        projections per block that write into the residual stream get std 0.02 / sqrt(2 * n_layer):
        the stream is a sum of 2 * n_layer such outputs, and this keeps its variance from growing
        with depth.
        """
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.LayerNorm):
                module.reset_parameters()
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for block in self.blocks:
            nn.init.normal_(block.attn.c_proj.weight, mean=0.0, std=residual_std)
            if block.mlp is not None:
                nn.init.normal_(block.mlp.c_proj.weight, mean=0.0, std=residual_std)

    def num_parameters(self) -> int:
        """Trainable numbers in the model; a tied matrix counts once."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | StaticKVCache | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx: (B, T) token ids; targets: (B, T) next-token ids, -1 to ignore a position.

        With a cache, idx holds only the positions after those already cached.
        """
        x = self.hidden_states(idx, cache)  # (B, T, C)
        logits = self.tap("logits", self.lm_head(x))  # (B, T, C) @ (C, V) -> (B, T, V)
        loss = None
        if targets is not None:
            if targets.shape != idx.shape:
                raise UserError(f"targets must have idx's shape {tuple(idx.shape)} (the next token at every position); "
                                f"got {tuple(targets.shape)}")
            # Cross-entropy of every position's prediction against its next token, averaged.
            # (cross_entropy above, or a learner's under practice.use: pieces.py)
            loss = piece("cross_entropy", cross_entropy)(logits.flatten(0, 1).float(), targets.flatten())
        return logits, loss

    def next_token_logits(self, idx: torch.Tensor, cache: KVCache | StaticKVCache | None = None) -> torch.Tensor:
        """Logits (B, V) for the token after idx (B, T): the output head on the last position only,
        which is all that generation needs."""
        x = self.hidden_states(idx, cache)  # (B, T, C)
        return self.tap("logits", self.lm_head(x[:, -1:]))[:, 0]  # (B, 1, C) @ (C, V) -> (B, 1, V) -> (B, V)

    def hidden_states(self, idx: torch.Tensor, cache: KVCache | StaticKVCache | None = None) -> torch.Tensor:
        """Embeddings, then every block, then the final LayerNorm: (B, T) ids -> (B, T, C).

        With a cache, the cache says where the new tokens stand (kv_cache.py): after the
        positions it holds, and for left-padded rows (generate_batch) counted from each row's
        first real token.
        """
        B, T = idx.shape
        past = 0 if cache is None else cache.length
        if past + T > self.config.block_size:
            raise UserError(
                f"a sequence of {past + T} tokens is longer than model.block_size = "
                f"{self.config.block_size}; pass at most the last {self.config.block_size} tokens"
            )
        if cache is None:
            positions = torch.arange(T, device=idx.device)  # (T,)
        else:
            positions = cache.positions(T, idx.device)  # (T,) or (B, T)
        x = self.tap("embed", self.wte(idx))  # (B, T, C)
        if self.wpe is not None:
            pos = self.wpe(positions).expand(B, T, -1)  # (T, C) or (B, T, C) -> (B, T, C)
            x = x + self.tap("pos", pos)  # (B, T, C)
        rope = self.rope(positions) if self.rope is not None else None
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, rope, cache)  # (B, T, C)
        if cache is not None:
            cache.advance(T)
        return self.tap("ln_f", self.ln_f(x))  # (B, T, C)
