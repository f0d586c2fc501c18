"""GenerateAlternatives: force another token at a decision point and let the model finish the chain.

Every alternative of every decision point is a branch of the one chain: the branches are generated
greedily as one batch, from the chain's own KV cache cut to each branch's prefix. Where the model's attention
allows it (`branches.branch_attention_applies`), that cache is held once and read once per step by every row
(`branches`); otherwise each row holds a left-padded copy.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from ..decoding import (
    Chain,
    consecutive_batches,
    context_length,
    decoding_block,
    eos_ids,
    full_cache,
    inputs_after_cache,
    kv_cache_bytes_per_token,
    left_padded_states,
    pad_id,
    padded_batch,
    plain_cache,
)
from .answers import extract_answer
from .branches import branch_attention, branch_attention_applies, branch_cache


def chain_end(model: PreTrainedModel, chain: Chain, max_new_tokens: int) -> int:
    """The last position a chain (or a branch of it) may reach: the token budget, within the context."""
    end = chain.prompt_len + max(max_new_tokens, len(chain.token_ids))
    return min(end, context_length(model) or end)


def rollout_batch(model: PreTrainedModel, positions: int, memory_mb: float) -> int:
    """How many branches are rolled out together: as many caches of `positions` positions as fit in `memory_mb`."""
    return max(1, int(memory_mb * 2**20 // (kv_cache_bytes_per_token(model) * positions)))


@torch.no_grad()
def branch_rollouts(
    model: PreTrainedModel,
    sequence: torch.Tensor,
    branches: list[tuple[int, int]],
    end: int,
    reuse_cache: bool = True,
    states: Cache | None = None,
    sampler: torch.Generator | None = None,
) -> list[list[int]]:
    """Greedy continuations of many branches of one sequence, generated as one left-padded batch (`sampler`: sampled
    from the model's distribution with this generator instead; a branch may then be listed several times).

    Branch (k, token) keeps `sequence[:k]` and forces `token` at position k; generation runs until the
    end-of-sequence token or position `end`. Every branch prefix is a prefix of `sequence`, so one forward
    pass over it yields all their keys and values: each row's cache is that cache cut to its prefix (and
    left-padded), so no prefix is computed twice. `states`: that cache when the caller has it (a plain cache of at
    least the longest branch prefix of `sequence`, e.g. the scoring pass's), so that pass is not run again. Each
    result starts with the forced token and ends at (and includes) the end-of-sequence token when one is produced.
    """
    if not branches:
        return []
    groups = _within_context(model, branches, end)
    if len(groups) > 1:
        results: list[list[int]] = [[] for _ in branches]
        for group in groups:
            rolled = branch_rollouts(model, sequence, [branches[i] for i in group], end, reuse_cache, states, sampler)
            for i, rollout in zip(group, rolled, strict=True):
                results[i] = rollout
        return results
    lengths = [k for k, _ in branches]
    longest = max(lengths)
    forced = [torch.cat([sequence[:k], sequence.new_tensor([token])]) for k, token in branches]
    rows, mask = padded_batch(forced, pad_id(model) or 0)
    budgets = [max(end - k - 1, 0) for k in lengths]  # new tokens after the forced one, within `end`
    if not any(budgets):
        return [[token] for _, token in branches]
    if reuse_cache and min(lengths) > 0 and branch_attention_applies(model):
        cache = branch_cache(_prefix_states(model, sequence[:longest], states), lengths, max(budgets))
        with branch_attention(model, cache):
            generated = greedy_rows(model, rows, mask, cache, budgets, eos_ids(model), sampler)
    else:
        cache = None  # without reuse (or where no plain cache can be built) every row is fed whole
        if reuse_cache and min(lengths) > 0:
            cache = _left_padded_cache(model, sequence[:longest], lengths, longest + max(budgets), states)
        generated = greedy_rows(model, rows, mask, cache, budgets, eos_ids(model), sampler)
    return [_until_eos(model, [token, *new]) for (_, token), new in zip(branches, generated, strict=True)]


def _within_context(model: PreTrainedModel, branches: list[tuple[int, int]], end: int) -> list[list[int]]:
    """The branches (indices) in groups whose left-padded batch fits the model's context: a batch is as wide as its
    latest branch point plus its earliest branch's budget (`end` − k − 1), which passes the context (a SAGE model
    refuses it) when the branch points span more than `context − end + 1`. One group when they fit, as they
    usually do."""
    context = context_length(model)
    order = sorted(range(len(branches)), key=lambda i: branches[i][0])
    if context is None:
        return [order]
    return consecutive_batches(order, lambda group: branches[group[-1]][0] - branches[group[0]][0] <= context - end + 1)


@torch.no_grad()
def greedy_rows(
    model: PreTrainedModel,
    rows: torch.Tensor,
    mask: torch.Tensor,
    cache: Cache | None,
    budgets: list[int],
    stop_ids: set[int],
    sampler: torch.Generator | None = None,
) -> list[list[int]]:
    """Greedy continuations of left-padded `rows`, row r up to a token in `stop_ids` (kept) or `budgets[r]` tokens:
    `generate(do_sample=False)` without logits processors (the most likely token, as validation checks it), except
    that rows that have ended leave the batch (`sampler`: each token sampled from the model's distribution at
    temperature 1 with this generator). Rollouts end at very different lengths (docs/measurements.md), and an
    ended row costs as much as a running one. Ended rows are dropped once they are a quarter of the batch, so the cache
    is copied a few times, not at every end."""
    cache = cache if cache is not None else DynamicCache(config=model.config)
    with decoding_block(model):
        return _decode_rows(model, rows.to(model.device), mask.to(model.device), cache, budgets, stop_ids, sampler)


def _next_tokens(logits: torch.Tensor, sampler: torch.Generator | None) -> torch.Tensor:
    """(R,) the most likely token of each row's logits (R, V), or one sampled at temperature 1."""
    if sampler is None:
        return logits.argmax(-1)
    probs = logits.float().softmax(-1).cpu()
    return torch.multinomial(probs, 1, generator=sampler)[:, 0].to(logits.device)


def _decode_rows(
    model,
    ids: torch.Tensor,
    mask: torch.Tensor,
    cache: Cache,
    budgets: list[int],
    stop_ids: set[int],
    sampler: torch.Generator | None = None,
) -> list[list[int]]:
    owner = list(range(len(ids)))  # batch row -> its row in the input
    generated: list[list[int]] = [[] for _ in owner]
    ended = [budget < 1 for budget in budgets]
    while not all(ended):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: positions count real tokens, as generate's do
        inputs = inputs_after_cache(model, ids, cache, mask, position_ids=positions)
        chosen = _next_tokens(model(**inputs, logits_to_keep=1).logits[:, -1], sampler)
        for row, token in enumerate(chosen.tolist()):
            if not ended[row]:
                mine = generated[owner[row]]
                mine.append(token)
                ended[row] = token in stop_ids or len(mine) >= budgets[owner[row]]
        if all(ended):
            break
        ids, mask = torch.cat([ids, chosen[:, None]], 1), torch.cat([mask, mask.new_ones(len(mask), 1)], 1)
        if 4 * sum(ended) >= len(ended):
            keep = [row for row, done in enumerate(ended) if not done]
            index = torch.tensor(keep, device=ids.device)
            ids, mask, owner, ended = ids[index], mask[index], [owner[r] for r in keep], [False] * len(keep)
            cache.batch_select_indices(index)
    return generated


def _prefix_states(model: PreTrainedModel, prefix: torch.Tensor, states: Cache | None) -> Cache | None:
    """The keys and values of every position of `prefix` in plain layers: `states`, when that holds plain layers of at
    least its length, else a pass into a `full_cache` (not the model's own, whose sliding-window layers keep only the
    last positions, which no shorter branch prefix can be cut from); None when the model has no plain cache."""
    if states is not None and plain_cache(states) and states.get_seq_length() >= len(prefix):
        return states
    cache = full_cache(model)
    if cache is None:
        return None
    model(input_ids=prefix[None].to(model.device), cache=cache, use_cache=True, logits_to_keep=1)
    return cache


def _left_padded_cache(
    model: PreTrainedModel, prefix: torch.Tensor, lengths: list[int], capacity: int, states: Cache | None = None
) -> Cache | None:
    """For models without shared-prefix attention: the KV cache of `prefix` cut to each row's length and left-padded
    to the longest (a copy per row), in buffers with room for `capacity` positions (the whole generation); None when
    the model has no plain cache to cut (`_prefix_states`)."""
    longest = len(prefix)
    full = _prefix_states(model, prefix, states)
    if full is None:
        return None
    layers = []
    for layer in full.layers:
        keys, values = (left_padded_states(kv[..., :longest, :], lengths, longest) for kv in (layer.keys, layer.values))
        layers.append(_PreallocatedLayer(keys, values, capacity))
    return Cache(layers=layers)


class _PreallocatedLayer(DynamicLayer):
    """A DynamicLayer whose keys and values live in buffers allocated once, with room for the whole generation:
    each step writes its new positions in place and the layer's keys and values are views of the filled part.
    DynamicLayer concatenates instead, copying the cache every step, which was most of the rollouts' time on small
    models (docs/measurements.md). Past the room it falls back to concatenating."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        super().__init__()
        self.lazy_initialization(keys, values)
        self._allocate(keys, values, capacity)

    def _allocate(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        self.key_buffer = keys.new_empty((*keys.shape[:-2], max(capacity, keys.shape[-2]), keys.shape[-1]))
        self.value_buffer = values.new_empty((*values.shape[:-2], self.key_buffer.shape[-2], values.shape[-1]))
        self._write(keys, values, 0)

    def _in_place(self) -> bool:
        return (
            self.key_buffer is not None and self.is_initialized and self.keys.data_ptr() == self.key_buffer.data_ptr()
        )

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keeps the given batch rows: their filled positions move to new buffers with the same room."""
        if not self._in_place():
            return super().batch_select_indices(indices)
        self._allocate(self.keys[indices], self.values[indices], self.key_buffer.shape[-2])

    def _write(self, keys: torch.Tensor, values: torch.Tensor, start: int) -> None:
        stop = start + keys.shape[-2]
        self.key_buffer[..., start:stop, :].copy_(keys)
        self.value_buffer[..., start:stop, :].copy_(values)
        self.keys, self.values = self.key_buffer[..., :stop, :], self.value_buffer[..., :stop, :]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        filled = self.get_seq_length()
        if not self._in_place():
            return super().update(key_states, value_states, *args, **kwargs)  # reset, or concatenating already
        if filled + key_states.shape[-2] > self.key_buffer.shape[-2]:
            self.key_buffer = self.value_buffer = None  # from now on concatenating: the buffers are not needed
            return super().update(key_states, value_states, *args, **kwargs)
        self._write(key_states, value_states, filled)
        return self.keys, self.values


def _until_eos(model: PreTrainedModel, ids: list[int]) -> list[int]:
    eos = eos_ids(model)
    for i, token in enumerate(ids[1:], start=1):
        if token in eos:
            return ids[: i + 1]
    return ids


def decode_chain(tokenizer: PreTrainedTokenizerBase, ids: list[int], eos_ids: set[int]) -> str:
    """The chain's text, a final end-of-sequence token left out (as the trace's text leaves it out)."""
    if ids and ids[-1] in eos_ids:
        ids = ids[:-1]
    return tokenizer.decode(ids)


def sampled_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    chain: Chain,
    branches: list[tuple[int, int]],
    samples: int,
    seed: int,
    max_new_tokens: int,
    memory_mb: float,
    states: Cache | None = None,
) -> dict[tuple[int, int], list[str | None]]:
    """For each branch (generated position, token): the answers of `samples` continuations sampled from the model
    (temperature 1) after forcing that token there, in batches within `memory_mb`, one generator seeded with `seed`
    for all rows in the given order. `states`: the chain's keys and values when at hand."""
    rows = [(chain.prompt_len + position, token) for position, token in branches for _ in range(samples)]
    sequence = torch.cat([chain.prompt_ids, chain.token_ids])
    end = chain_end(model, chain, max_new_tokens)
    size = rollout_batch(model, end, memory_mb)
    sampler = torch.Generator().manual_seed(seed)
    eos = eos_ids(model)
    answers: dict[tuple[int, int], list[str | None]] = {branch: [] for branch in branches}
    for at in range(0, len(rows), size):
        batch = rows[at : at + size]
        for (k, token), continuation in zip(
            batch, branch_rollouts(model, sequence, batch, end, states=states, sampler=sampler), strict=True
        ):
            text = decode_chain(tokenizer, sequence[chain.prompt_len : k].tolist() + continuation, eos)
            answers[(k - chain.prompt_len, token)].append(extract_answer(text))
    return answers
