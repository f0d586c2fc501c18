"""Attention for many branches of one sequence that reads their shared prefix's keys and values once.

Rollouts continue up to 30 branches of a chain, each from its own prefix of it. Left-padded in one batch, every row
holds a copy of its prefix, and every decoding step reads all of them: on the shipped model that attention was a
quarter of the rollouts' time, memory-bound on 30 copies of a ~250-position cache. Here the chain's keys and values
are held once and each row keeps only the positions it generated. Attention is split in two and joined in one softmax:
the queries of all rows against the one prefix (one matmul per key-value head, the rows stacked; each row sees its own
prefix length), and each row against its own positions. This is the shared-prefix decomposition of Hydragen
(Juravsky et al., 2024).

Used through `branch_attention(model, cache)`, which switches the model to this attention for the block. Models
whose attention goes through transformers' attention interface can use it (`branch_attention_applies`): SAGE, Llama,
Qwen2, GPT-2 and most others; models with sliding windows cannot.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ..decoding import plain_cache

NAME = "sagenano_branches"
_ACTIVE: contextvars.ContextVar[Cache | None] = contextvars.ContextVar("sagenano_branch_cache", default=None)


class BranchLayer(DynamicLayer):
    """One layer's keys and values: the shared prefix (1, H, P, D) once, each row's prefix length, and each row's own
    positions in buffers allocated once for the whole generation (R, H, room, D).

    It reports the left-padded width (longest prefix + own positions), so the masks, positions and SAGE's step ids
    that the model builds are those of the left-padded rows it is fed; the attention reads the prefix from here."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, lengths: list[int], room: int) -> None:
        super().__init__()
        self.prefix_keys, self.prefix_values = keys, values
        self.padded = max(lengths)
        self._set_lengths(torch.tensor(lengths, device=keys.device))
        self.key_buffer = keys.new_empty((len(lengths), keys.shape[1], room, keys.shape[-1]))
        self.value_buffer = values.new_empty((len(lengths), values.shape[1], room, values.shape[-1]))
        self.filled = 0
        self.device, self.is_initialized = keys.device, True
        self.keys, self.values = self.key_buffer[..., :0, :], self.value_buffer[..., :0, :]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        stop = self.filled + key_states.shape[-2]
        if stop > self.key_buffer.shape[-2]:
            raise RuntimeError(f"the branches' cache has room for {self.key_buffer.shape[-2]} positions, not {stop}")
        self.key_buffer[..., self.filled : stop, :].copy_(key_states)
        self.value_buffer[..., self.filled : stop, :].copy_(value_states)
        self.filled = stop
        self.keys, self.values = self.key_buffer[..., :stop, :], self.value_buffer[..., :stop, :]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.padded + self.filled

    def _set_lengths(self, lengths: torch.Tensor) -> None:
        self.lengths = lengths
        width = self.prefix_keys.shape[-2]
        self.beyond = (torch.arange(width, device=lengths.device) >= lengths[:, None])[:, None, None, :]  # (R,1,1,P)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keeps the given rows (their own positions move to new buffers with the same room)."""
        self._set_lengths(self.lengths[indices])
        self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
        self.keys, self.values = self.key_buffer[..., : self.filled, :], self.value_buffer[..., : self.filled, :]


def branch_cache(prefix_cache: Cache, lengths: list[int], room: int) -> Cache:
    """A cache for rows that continue the first `lengths[r]` positions of `prefix_cache` (one row, plain layers, at
    least max(lengths) positions), with room for `room` positions of their own."""
    longest = max(lengths)
    return Cache(
        layers=[
            BranchLayer(layer.keys[..., :longest, :], layer.values[..., :longest, :], lengths, room)
            for layer in prefix_cache.layers
        ]
    )


def branch_attention_applies(model: PreTrainedModel) -> bool:
    """Whether the model's attention can be switched to this one: it goes through transformers' attention interface
    and its cache is plain (no sliding windows)."""
    return bool(getattr(model, "_supports_attention_backend", False)) and plain_cache(DynamicCache(config=model.config))


@contextlib.contextmanager
def branch_attention(model: PreTrainedModel, cache: Cache) -> Iterator[None]:
    """Runs the block's forward passes with shared-prefix attention over `cache` (a `branch_cache`)."""
    previous = model.config._attn_implementation
    token = _ACTIVE.set(cache)
    try:
        # Registered here, at use: transformers' registry is global, and another copy of this module (another
        # version of the package in the same process) would have registered its own function under the name.
        AttentionInterface.register(NAME, _attend)
        AttentionMaskInterface.register(NAME, sdpa_mask)
        model.set_attn_implementation(NAME)
        yield
    finally:
        model.set_attn_implementation(previous)
        _ACTIVE.reset(token)


def _attend(
    module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask,
    scaling=None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """query (R, Hq, q, D); key and value: each row's own positions (R, H, t, D), the newest q of them just fed.
    Returns (R, q, Hq, D), as transformers' attention functions do."""
    layer: BranchLayer = _ACTIVE.get().layers[module.layer_idx]
    rows, query_heads, q, size = query.shape
    heads, own = key.shape[1], key.shape[-2]
    group = query_heads // heads
    scaling = size**-0.5 if scaling is None else scaling
    prefix_keys, prefix_values = layer.prefix_keys[0], layer.prefix_values[0]  # (H, P, D)
    width = prefix_keys.shape[-2]
    # (H, rows · group · q, D): every row's queries of one key-value head, stacked against that head's prefix once.
    stacked = query.view(rows, heads, group, q, size).transpose(0, 1).reshape(heads, -1, size)
    prefix_scores = (stacked @ prefix_keys.transpose(-1, -2)).view(heads, rows, group, q, width).transpose(0, 1)
    prefix_scores = prefix_scores.reshape(rows, query_heads, q, width)
    prefix_scores = prefix_scores.masked_fill(layer.beyond, float("-inf"))  # each row sees its own prefix only
    own_keys, own_values = (x.repeat_interleave(group, 1) if group > 1 else x for x in (key, value))
    own_scores = query @ own_keys.transpose(-1, -2)  # (R, Hq, q, t)
    if attention_mask is not None:  # a boolean keep-mask over the left-padded width: its last t columns are own
        own_scores = own_scores.masked_fill(~attention_mask[..., -own:], float("-inf"))
    weights = (torch.cat([prefix_scores, own_scores], -1) * scaling).softmax(-1, dtype=torch.float32).to(query.dtype)
    prefix_weights = weights[..., :width].reshape(rows, heads, group, q, width).transpose(0, 1)
    prefix_out = (prefix_weights.reshape(heads, -1, width) @ prefix_values).view(heads, rows, group, q, size)
    out = prefix_out.transpose(0, 1).reshape(rows, query_heads, q, size) + weights[..., width:] @ own_values
    return out.transpose(1, 2).contiguous(), None
