"""Shared helpers for decoding with any Hugging Face causal LM: the chain as ids, the model's limits and special
ids, KV-cache plumbing, padded batches and batch grouping. The tracer (`generation`), lookup decoding, rollouts,
validation and evaluation all build on these; this module imports no other part of the package at run time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

if TYPE_CHECKING:
    from .inverse.report import Report


# --- the chain ------------------------------------------------------------------------------------------------


@dataclass
class Chain:
    """A prompt and its generated continuation as ids."""

    prompt_ids: torch.Tensor  # (P,)
    token_ids: torch.Tensor  # (T,)

    @classmethod
    def from_report(cls, report: Report) -> Chain:
        """The chain a report explains: its prompt ids and generated token ids."""
        return cls(torch.tensor(report.prompt_ids), torch.tensor([t.id for t in report.tokens]))

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)

    @property
    def inputs(self) -> torch.Tensor:
        """(N,) the ids fed to the model, N = P + T - 1."""
        return torch.cat([self.prompt_ids, self.token_ids])[:-1]

    def predicting(self, tokens: range | list[int]) -> list[int]:
        """Input positions whose next-token prediction is each of the given generated tokens."""
        return [self.prompt_len - 1 + t for t in tokens]


# --- the model's limits and special ids ---------------------------------------------------------------------


def is_sage(model: PreTrainedModel) -> bool:
    """Whether the model is a SAGE model (it has the meta-cognitive head)."""
    return getattr(model, "meta_head", None) is not None


def context_length(model: PreTrainedModel) -> int | None:
    """The most positions the model reads (its configured context), or None when its config names none."""
    config = model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def room_after(model: PreTrainedModel, used: int, budget: int) -> int:
    """How many new tokens may follow `used` positions: `budget`, within the model's context."""
    context = context_length(model)
    return budget if context is None else min(budget, context - used)


def eos_ids(model: PreTrainedModel) -> set[int]:
    """The model's end-of-sequence token ids (generation config)."""
    eos = model.generation_config.eos_token_id
    return set(eos if isinstance(eos, list) else [eos] if eos is not None else [])


def pad_id(model: PreTrainedModel) -> int | None:
    """The padding id generation uses: the pad token, else the (first) end-of-sequence token."""
    config = model.generation_config
    if config.pad_token_id is not None:
        return config.pad_token_id
    eos = config.eos_token_id
    return eos[0] if isinstance(eos, list) else eos


# --- next-token distributions -------------------------------------------------------------------------------


def entropy(logprobs: torch.Tensor, overwrite: bool = False) -> torch.Tensor:
    """-Σ p·log p over the last dimension (nats). A masked token (log-prob -inf) adds 0, not NaN: its log-prob is
    clamped to the lowest float first, in place when `overwrite` (no copy of a large tensor). An einsum, because
    `torch.special.entr` was several times slower on a chain's logits (docs/measurements.md)."""
    lowest = torch.finfo(logprobs.dtype).min
    finite = logprobs.clamp_(min=lowest) if overwrite else logprobs.clamp(min=lowest)
    return -torch.einsum("...v,...v->...", finite.exp(), finite)


# --- token text ---------------------------------------------------------------------------------------------


def decode_each(tokenizer: PreTrainedTokenizerBase, ids: torch.Tensor) -> list:
    """Every id decoded on its own, in one call; the result has the shape of `ids` as nested lists."""
    flat = batch_decode(tokenizer, [[i] for i in ids.flatten().tolist()])
    if ids.dim() == 1:
        return flat
    width = ids.shape[-1]
    return [flat[i : i + width] for i in range(0, len(flat), width)]


def prefix_decodings(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[str]:
    """The decoding of every prefix of `ids` (the first 1, 2, ... tokens)."""
    return batch_decode(tokenizer, [ids[: i + 1] for i in range(len(ids))])


def token_char_ends(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> list[int]:
    """Where each token ends in the decoded text: the length of every prefix's decoding."""
    return [len(text) for text in prefix_decodings(tokenizer, ids)]


def batch_decode(tokenizer: PreTrainedTokenizerBase, sequences: list[list[int]]) -> list[str]:
    """`tokenizer.batch_decode(sequences)`, in one call to the Rust tokenizer where that is all it would do
    (a fast tokenizer that does not override decoding or clean up spaces), not through transformers' per-sequence
    Python, which took about twice as long (docs/measurements.md)."""
    from transformers import TokenizersBackend

    kind = type(tokenizer)
    plain = (
        isinstance(tokenizer, TokenizersBackend)
        and kind._decode is TokenizersBackend._decode
        and kind.decode is PreTrainedTokenizerBase.decode
        and kind.batch_decode is PreTrainedTokenizerBase.batch_decode
        and not tokenizer.clean_up_tokenization_spaces
    )
    if plain:
        return tokenizer.backend_tokenizer.decode_batch(sequences, skip_special_tokens=False)
    return tokenizer.batch_decode(sequences)


# --- KV caches ----------------------------------------------------------------------------------------------


def cache_of(output: Any) -> Cache | None:
    """The KV cache a forward pass returned (transformers 5 names it `cache`, older code `past_key_values`)."""
    return getattr(output, "cache", None) or getattr(output, "past_key_values", None)


def plain_cache(cache: Cache) -> bool:
    """Whether every layer is a plain DynamicLayer, which holds every position and can be cut or copied row by row
    (a sliding-window layer keeps only the last few)."""
    return all(type(layer) is DynamicLayer for layer in cache.layers)


def full_cache(model: PreTrainedModel) -> DynamicCache | None:
    """An empty cache that keeps every position of every layer (`plain_cache`), so that it can be cut to a prefix and
    copied row by row; None when a layer of the model's cache is of another kind (linear attention, shared keys).

    The model's own cache keeps only the last `sliding_window` positions of a sliding-window layer, which no shorter
    prefix can be cut from; such layers are made plain here. That changes no output: transformers builds the
    sliding-window mask from query and key indices, so over a cache of every position the mask applies the window, as
    it does in a pass without a cache."""
    cache = DynamicCache(config=model.config)
    cache.layers = [DynamicLayer() if type(layer) is DynamicSlidingWindowLayer else layer for layer in cache.layers]
    return cache if plain_cache(cache) else None


def inputs_after_cache(model: PreTrainedModel, ids: torch.Tensor, cache: Cache, attention_mask=None, **kwargs) -> dict:
    """Inputs for the positions of `ids` (B, L) that `cache` does not hold yet, built as `generate` builds them
    (SAGE's step ids from the whole rows; positions from the cache, or from `position_ids` when given). They hold no
    `logits_to_keep`: each caller passes its own."""
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask
    inputs = model.prepare_inputs_for_generation(
        ids, next_sequence_length=ids.shape[1] - cache.get_seq_length(), cache=cache, attention_mask=mask, **kwargs
    )
    # Some models' own preparation passes its default `logits_to_keep` on (Phi-3's sends 0: every position), which
    # the caller's would then collide with ("got multiple values for keyword argument").
    inputs.pop("logits_to_keep", None)
    return {**inputs, "use_cache": True}


def decoding_block(model: PreTrainedModel) -> contextlib.AbstractContextManager:
    """A block of decoding steps with fixed weights: what the model can compute once for all of them, it does
    (SAGE's concept keys and values); a no-op for other models."""
    return getattr(model, "concepts_computed_once", contextlib.nullcontext)()


def kv_cache_bytes_per_token(model: PreTrainedModel) -> int:
    """Keys and values one token adds to a batch row's cache: 2 × layers × key-value heads × head size × bytes."""
    config = model.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * model.dtype.itemsize


# --- batches ------------------------------------------------------------------------------------------------


def padded_batch(
    rows: Sequence[torch.Tensor | list[int]],
    pad: int = 0,
    side: Literal["left", "right"] = "left",
    offsets: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, W) ids and attention mask of rows padded on the left (each ends at the last column, as decoder-only
    batches are generated) or on the right; or, given `offsets`, with row r written from column `offsets[r]`
    (e.g. rows aligned at a branch point), padding elsewhere."""
    lengths = [len(row) for row in rows]
    if offsets is None:
        width = max(lengths)
        offsets = [width - n if side == "left" else 0 for n in lengths]
    width = max(o + n for o, n in zip(offsets, lengths, strict=True))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, (row, o, n) in enumerate(zip(rows, offsets, lengths, strict=True)):
        ids[r, o : o + n] = torch.as_tensor(row, dtype=torch.long)
        mask[r, o : o + n] = 1
    return ids, mask


def left_padded_states(states: torch.Tensor, lengths: list[int], longest: int) -> torch.Tensor:
    """(R, heads, longest, head size): row r holds the first lengths[r] positions of `states` (batch 1) at its end:
    a KV-cache layer for a left-padded batch of prefixes of one sequence."""
    rows = states.new_zeros((len(lengths), *states.shape[1:]))
    for r, k in enumerate(lengths):
        rows[r, :, longest - k :] = states[0, :, :k]
    return rows


def consecutive_batches(order: list[int], fits: Callable[[list[int]], bool]) -> list[list[int]]:
    """`order` cut into consecutive batches, each grown while `fits(batch)` holds (one item alone always goes)."""
    batches: list[list[int]] = []
    for item in order:
        if batches and fits([*batches[-1], item]):
            batches[-1].append(item)
        else:
            batches.append([item])
    return batches
