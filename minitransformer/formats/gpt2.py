"""GPT-2 in and out: Hugging Face GPT-2 folders become our models, and our models become theirs.

- `model_config_from_hf(config)`: a Hugging Face `config.json` as a `ModelConfig`, or one line
  saying why this model cannot compute it exactly.
- `state_from_hf` / `state_to_hf`: the same tensors under the other library's names.
- `load_hf_folder(folder)`: `(model, tokenizer)` from `config.json` plus `model.safetensors`
  (or `pytorch_model.bin`, read with `weights_only=True`).
- `hf_config_for`, `check_exportable`: what export writes, and what it refuses. The commands
  themselves (`import-gpt2`, `export-gpt2`) are in commands/convert.py.

Design choices:
- Our GPT already is GPT-2's function with learned positions, biases, the tanh GELU and a tied
  head (an untied one, `tie_word_embeddings = false`, loads as `tie_weights = false`): parameter names match after `transformer.h.N.` becomes `blocks.N.`. One difference in
  storage: GPT-2's projections are `Conv1D` layers that keep their weight as (in, out), where
  `nn.Linear` keeps (out, in), so those four matrices per block are transposed on the way.
- GPT-2's `attn.bias` and `attn.masked_bias` are causal-mask buffers, not parameters: dropped.
- Anything this model cannot compute exactly (another activation, attention scaled by the layer
  index, a vocabulary GPT-2's tokenizer does not fit) is refused, never
  approximated.
"""

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ..config import ModelConfig
from ..errors import UserError, short_cause
from ..model import GPT
from ..tokenizer import CharTokenizer, TiktokenTokenizer, from_description, tiktoken_tokenizer
from .checkpoint import check_tokenizer_digest, load_weights, weights_of

HUB_MODELS = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2")
GPT2_VOCAB = 50257
SIZE_DEFAULTS = {"vocab_size": GPT2_VOCAB, "n_positions": 1024, "n_layer": 12, "n_head": 12, "n_embd": 768}
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")  # both are GELU's tanh approximation
EXACT_GELU = "gelu"  # transformers' name for the exact GELU (model.gelu = "exact")
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
MASK_BUFFERS = ("attn.bias", "attn.masked_bias")


def is_hf_folder(path: Path) -> bool:
    """A Hugging Face model folder: its config.json names a model_type (ours names a "model" table)."""
    try:
        config = json.loads((path / "config.json").read_text())
        return path.is_dir() and isinstance(config, dict) and "model_type" in config
    except (OSError, ValueError, TypeError):
        return False


def model_config_from_hf(hf: dict, vocab_fits: bool, source: Path) -> ModelConfig:
    """Our ModelConfig for a Hugging Face GPT-2 config, or UserError naming what does not map."""
    def refuse(reason: str) -> UserError:
        return UserError(f"{source} cannot be loaded exactly: {reason}")

    if hf.get("model_type") != "gpt2":
        raise refuse(f"it is a {hf.get('model_type')!r} model; only GPT-2 ('gpt2') models are supported")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in (*TANH_GELUS, EXACT_GELU):
        raise refuse(f"activation_function = {activation!r}; this model computes GPT-2's tanh GELU "
                     f"({', '.join(TANH_GELUS)}) or the exact one ({EXACT_GELU!r})")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention"):
        if hf.get(flag):
            raise refuse(f"{flag} = true, which this model does not compute")
    sizes = {key: hf.get(key, default) for key, default in SIZE_DEFAULTS.items()}
    for key, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise refuse(f"{key} = {value!r} in config.json is not a whole number")
    eps = hf.get("layer_norm_epsilon", 1e-5)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool):
        raise refuse(f"layer_norm_epsilon = {eps!r} in config.json is not a number")
    C = sizes["n_embd"]
    if hf.get("n_inner") not in (None, 4 * C):
        raise refuse(f"n_inner = {hf['n_inner']}; this model's MLP is 4 x n_embd = {4 * C} wide")
    if not vocab_fits:
        raise refuse(f"vocab_size = {hf.get('vocab_size')} does not fit GPT-2's tokenizer ({GPT2_VOCAB} tokens)")
    try:
        return ModelConfig(
            vocab_size=sizes["vocab_size"], block_size=sizes["n_positions"], n_layer=sizes["n_layer"],
            n_head=sizes["n_head"], n_embd=C, dropout=0.0, bias=True, position="learned", attention="sdpa",
            scale_attention=bool(hf.get("scale_attn_weights", True)), layer_norm_eps=float(eps),
            tie_weights=bool(hf.get("tie_word_embeddings", True)),
            gelu="exact" if activation == EXACT_GELU else "tanh",
        )
    except UserError as error:
        raise refuse(str(error))


def state_from_hf(hf_state: dict[str, torch.Tensor], tied: bool = True) -> dict[str, torch.Tensor]:
    """Hugging Face GPT-2 tensors under our names; Conv1D weights transposed, mask buffers dropped,
    and the output head dropped when it is tied (the same matrix as wte.weight)."""
    state = {}
    for name, tensor in hf_state.items():
        name = name.removeprefix("transformer.")
        parts = name.split(".")
        if parts[0] == "h" and ".".join(parts[2:]) in MASK_BUFFERS:
            continue
        if parts[0] == "h":
            name = ".".join(["blocks", *parts[1:]])
        if name.endswith(CONV1D_WEIGHTS):
            tensor = tensor.t()  # Conv1D (in, out) -> Linear (out, in)
        state[name] = tensor.contiguous()
    if tied:
        state.pop("lm_head.weight", None)
    return state


def state_to_hf(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under Hugging Face GPT-2's names. A model without biases gets zero biases,
    which computes the same function in GPT-2's layers, which always have them."""
    state = {}
    for name, tensor in weights_of(model).items():
        if name.endswith(CONV1D_WEIGHTS):
            tensor = tensor.t().contiguous()  # Linear (out, in) -> Conv1D (in, out)
        if name.startswith("blocks."):
            name = "h." + name.removeprefix("blocks.")
        state[name if name.startswith("lm_head.") else "transformer." + name] = tensor
    if not model.config.bias:
        for name, module in model.named_modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.LayerNorm)) and name != "lm_head":
                hf_name = "transformer." + name.replace("blocks.", "h.", 1) + ".bias"
                state[hf_name] = torch.zeros(module.weight.shape[0] if isinstance(module, torch.nn.Linear)
                                             else module.normalized_shape[0])
    return state


def read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """model.safetensors (one file or shards listed in model.safetensors.index.json), else pytorch_model.bin."""
    try:
        if (folder / "model.safetensors").is_file():
            return load_file(folder / "model.safetensors")
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return {name: t for shard in shards for name, t in load_file(folder / shard).items()}
        if (folder / "pytorch_model.bin").is_file():
            return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file
        raise UserError(f"the weights in {folder} cannot be read ({short_cause(error)}); download them again")
    raise UserError(f"{folder} has a config.json but no weights: it needs model.safetensors or pytorch_model.bin")


def hf_folder_tokenizer(folder: Path) -> CharTokenizer | TiktokenTokenizer | None:
    """The tokenizer an exported folder of ours carries in tokenizer.json (one with a "kind"), else
    None; it must be the one recorded with the weights (checkpoint.check_tokenizer_digest)."""
    try:
        description = json.loads((folder / "tokenizer.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(description, dict) or "kind" not in description:
        return None  # Hugging Face's own tokenizer.json
    metadata = None
    if (folder / "model.safetensors").is_file():
        with safe_open(folder / "model.safetensors", framework="pt") as file:
            metadata = file.metadata()
    check_tokenizer_digest(metadata, description, folder)  # before the tokenizer is built (no network)
    try:
        tokenizer = from_description(description)
    except ValueError as error:
        raise UserError(f"{folder / 'tokenizer.json'} is damaged ({short_cause(error)}); export the model again")
    return tokenizer


def load_hf_folder(folder: Path, device: torch.device | str = "cpu") -> tuple[GPT, CharTokenizer | TiktokenTokenizer]:
    """A Hugging Face GPT-2 folder as our GPT (eval mode) and its tokenizer."""
    try:
        hf_config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"{folder}/config.json cannot be read ({short_cause(error)}); download the model folder again")
    if not isinstance(hf_config, dict):
        raise UserError(f"{folder}/config.json is not a model config (a JSON object); download the model folder again")
    tokenizer = hf_folder_tokenizer(folder)
    vocab = hf_config.get("vocab_size", GPT2_VOCAB)
    vocab_fits = vocab == (tokenizer.vocab_size if tokenizer is not None else GPT2_VOCAB)
    config = model_config_from_hf(hf_config, vocab_fits, folder)
    model = load_weights(GPT(config), state_from_hf(read_hf_weights(folder), config.tie_weights), folder).to(device)
    return model.eval(), tokenizer if tokenizer is not None else tiktoken_tokenizer("gpt2")


def hf_config_for(config: ModelConfig, gpt2_tokens: bool) -> dict:
    """config.json for transformers' GPT2LMHeadModel computing the same function as config."""
    special = GPT2_VOCAB - 1 if gpt2_tokens else None
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_positions": config.block_size, "n_ctx": config.block_size,
        "n_embd": config.n_embd, "n_layer": config.n_layer, "n_head": config.n_head, "n_inner": None,
        "activation_function": EXACT_GELU if config.gelu == "exact" else "gelu_new", "layer_norm_epsilon": config.layer_norm_eps,
        "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
        "initializer_range": 0.02, "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "tie_word_embeddings": config.tie_weights, "use_cache": True,
        "bos_token_id": special, "eos_token_id": special,
    }


def check_exportable(config: ModelConfig) -> None:
    """Refuse a model that transformers' GPT-2 would compute differently."""
    reasons = []
    if config.position != "learned":
        reasons.append(f"model.position = {config.position!r} (GPT-2 adds learned positions)")
    if not config.causal:
        reasons.append("model.causal = false (GPT-2 always masks the future)")
    if not config.scale_attention:
        reasons.append("model.scale_attention = false (exported GPT-2 scales by 1/sqrt(D))")
    if not config.mlp:
        reasons.append("model.mlp = false (every GPT-2 block has an MLP)")
    if reasons:
        raise UserError(f"this model is not GPT-2's function, so transformers would compute something else: "
                        f"{'; '.join(reasons)}. Only models with learned positions, the causal mask and scaled "
                        "attention can be exported")
