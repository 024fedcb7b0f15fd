"""Generation with CUDA graphs: one token's forward pass recorded once, replayed for every token.

On a GPU, a small model's one-token step is bound by launching kernels, not by computing them:
nanoGPT's shape (6 layers, 384 wide) takes about 130 kernels of 2-3 microseconds each (measured
on an H100), every one launched from Python at several times that cost. A CUDA graph
records the kernels of one call and replays all of them with a single launch. A replay repeats
exactly what was recorded, at the same addresses: so the step reads its input from a fixed tensor
(`tokens`), writes its output to a fixed tensor (`logits`, overwritten by the next replay: use it
before stepping again), and keeps its keys and values in a StaticKVCache (kv_cache.py), whose
count of stored positions lives on the device and advances inside the graph.

Design choices:
- Only the one-token step is recorded. The prompt runs eagerly into the same cache, so a new
  prompt length never records a new graph.
- Graphs are kept per model and batch size, at most GRAPHS_KEPT per model, the least recently
  used dropped first: memory stays bounded however many calls and batch sizes come.
- A graph reads the weights at the addresses they had when it was recorded. Weights changed in
  place (training on, load_state_dict) are read as they are now; a model moved, cast or given new
  parameter tensors records a new graph (the addresses are compared at every call).
- Not used where a replay would skip Python: while anyone listens at a tap (taps.py), while a
  learner's pieces stand in for ours (pieces.py), and for a model in training mode (dropout). Recording that fails falls back to eager steps, with a warning.
"""

import warnings
import weakref
from collections import OrderedDict

import torch

from .. import pieces
from ..kv_cache import StaticKVCache

GRAPHS_KEPT = 4
WARMUPS = 2  # eager calls before recording: they load kernels and set up cuBLAS outside the graph


class DecodeGraph:
    """The one-token step of `model` for batches of B rows, recorded as a CUDA graph.

    record=False runs the same steps eagerly instead (on any device): the tests use it to check
    the bookkeeping on a CPU.
    """

    def __init__(self, model, B: int, record: bool = True):
        m, weight = model.config, model.wte.weight
        self.record = record
        # Only the eager stand-in keeps the model: a recorded graph needs none, and a reference
        # to it from here would keep the model alive in the registry below.
        self.eager_step = None if record else model.next_token_logits
        self.cache = StaticKVCache(m.n_layer, B, m.n_head, m.block_size, m.head_size, weight.dtype, weight.device)
        self.tokens = torch.zeros(B, 1, dtype=torch.long, device=weight.device)  # (B, 1): the step's input
        self.logits: torch.Tensor | None = None  # (B, V): the step's output
        self.graph = None
        # A generator using this graph (and its cache) marks it; another generator of the same
        # model and batch size meanwhile decodes eagerly instead of overwriting the cache.
        self.in_use = False
        if record:
            with torch.no_grad():
                self.capture(model)

    def capture(self, model) -> None:
        # One side stream per device for every recording: cuBLAS keeps a workspace for each
        # stream it meets, so a new stream per recording would hold memory for good.
        if self.tokens.device not in side_streams:
            side_streams[self.tokens.device] = torch.cuda.Stream(self.tokens.device)
        side = side_streams[self.tokens.device]
        side.wait_stream(torch.cuda.current_stream(self.tokens.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUPS):
                self.cache.reset()
                model.next_token_logits(self.tokens, self.cache)
        torch.cuda.current_stream(self.tokens.device).wait_stream(side)
        self.cache.reset()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=side):
            self.logits = model.next_token_logits(self.tokens, self.cache)  # (B, V)
        self.cache.reset()  # recording ran the host's bookkeeping once; the device ran nothing

    def start(self, pads: torch.Tensor | None = None) -> StaticKVCache:
        """The cache, emptied for a new sequence (pads: (B,) left padding of each row, or None)."""
        self.cache.reset(pads)
        return self.cache

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (B, V) for the token after tokens (B, 1), which follow what the cache holds."""
        if self.cache.length >= self.cache.max_len:
            raise ValueError(f"the cache holds {self.cache.length} positions, its whole length; start a new sequence")
        if not self.record:
            return self.eager_step(tokens, self.cache)
        self.tokens.copy_(tokens)
        self.graph.replay()
        self.cache.length += 1  # the replay advanced the device's count; the host's follows
        return self.logits


side_streams: dict[torch.device, torch.cuda.Stream] = {}  # the stream recordings are made on, per device

# Each model's recorded graphs, and the models whose recording failed; forgotten with the model.
recorded: "weakref.WeakKeyDictionary[torch.nn.Module, OrderedDict]" = weakref.WeakKeyDictionary()
unrecordable: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()


def addresses(model) -> tuple:
    """What a graph depends on besides the batch size: where every weight and buffer lives, and how."""
    tensors = [*model.parameters(), *model.buffers()]
    return tuple((t.data_ptr(), t.dtype, t.device) for t in tensors)


def has_hooks(model) -> bool:
    """Forward hooks would run while the graph is recorded and never on its replays."""
    from torch.nn.modules import module as torch_module

    return bool(torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks) or any(
        m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def decode_graph(model, B: int) -> DecodeGraph | None:
    """A recorded one-token step for model at batch B, or None where graphs do not apply (not on
    CUDA, a model in training mode, with a tap listened to, a forward hook installed or a
    learner's piece in place (practice.use), a graph
    of this model and batch size in use by another generator, or recording failed before)."""
    weight = model.wte.weight
    if weight.device.type != "cuda" or model.training or model.taps.listeners or model.taps.observers \
            or model in unrecordable or has_hooks(model) or pieces.chosen():
        return None
    graphs = recorded.setdefault(model, OrderedDict())
    key = (B, addresses(model))
    if key in graphs:
        graphs.move_to_end(key)
        return None if graphs[key].in_use else graphs[key]
    for old in [k for k in graphs if k[1] != key[1]]:
        del graphs[old]  # recorded for weights that no longer live there
    try:
        graph = DecodeGraph(model, B)
    except RuntimeError as error:
        graphs.clear()
        unrecordable.add(model)
        warnings.warn(f"recording the decoding step as a CUDA graph failed ({error}); generating without it")
        return None
    graphs[key] = graph
    while len(graphs) > GRAPHS_KEPT:
        graphs.popitem(last=False)
    return graph
