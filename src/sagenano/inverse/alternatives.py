"""GenerateAlternatives: force another token at a decision point and let the model finish the chain.

Every alternative of every decision point is a branch of the one chain: the branches are generated
greedily as one batch, from the chain's own KV cache cut to each branch's prefix.
"""

from __future__ import annotations

import re

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from ..data.format import ANSWER, parse_answer
from ..generation import eos_ids

_ANSWER_IS = re.compile(r"(?i)(?:answer is|answer:|####)\s*\$?\s*([^\s.,;]+(?:[.,]\d+)?)")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def extract_answer(chain: str) -> str | None:
    """The answer a chain states: SAGE's `<|answer|>`, else "answer is X" / `\\boxed{X}` / "#### X", else
    the last number; None when there is none."""
    if ANSWER in chain:
        return parse_answer(chain) or None
    for pattern in (_BOXED, _ANSWER_IS):
        found = pattern.findall(chain)
        if found:
            return found[-1].strip()
    numbers = _NUMBER.findall(chain)
    return numbers[-1] if numbers else None


def outcome(answer: str | None, original: str | None) -> str:
    if answer is None:
        return "no_answer"
    return "same_answer" if original is not None and answer.strip() == original.strip() else "different_answer"


def _cache_of(output):
    return getattr(output, "cache", None) or getattr(output, "past_key_values", None)


@torch.no_grad()
def rollouts(
    model: PreTrainedModel, prefix: torch.Tensor, alternatives: list[int], max_new_tokens: int, reuse_cache: bool = True
) -> list[list[int]]:
    """Greedy continuations after `prefix` + each alternative token (one shared prefix)."""
    return branch_rollouts(model, prefix, [(len(prefix), a) for a in alternatives], len(prefix) + max_new_tokens,
                           reuse_cache)  # fmt: skip


@torch.no_grad()
def branch_rollouts(
    model: PreTrainedModel, sequence: torch.Tensor, branches: list[tuple[int, int]], end: int, reuse_cache: bool = True
) -> list[list[int]]:
    """Greedy continuations of many branches of one sequence, generated as one left-padded batch.

    Branch (k, token) keeps `sequence[:k]` and forces `token` at position k; generation runs until the
    end-of-sequence token or position `end`. Every branch prefix is a prefix of `sequence`, so one forward
    pass over it yields all their keys and values: each row's cache is that cache cut to its prefix (and
    left-padded), so no prefix is computed twice. Each result starts with the forced token and ends at
    (and includes) the end-of-sequence token when one is produced.
    """
    if not branches:
        return []
    lengths = [k for k, _ in branches]
    longest = max(lengths)
    pad = pad_id(model) or 0
    rows = torch.full((len(branches), longest + 1), pad, dtype=torch.long)
    mask = torch.zeros_like(rows)
    for r, (k, token) in enumerate(branches):
        rows[r, longest - k : longest] = sequence[:k]
        rows[r, longest] = token
        mask[r, longest - k :] = 1
    budget = end - min(lengths) - 1
    if budget < 1:
        return [[token] for _, token in branches]
    kwargs = {}
    if reuse_cache and min(lengths) > 0:
        kwargs["cache"] = _branch_cache(model, sequence[:longest], lengths)
    out = model.generate(
        input_ids=rows.to(model.device), attention_mask=mask.to(model.device), max_new_tokens=budget,
        do_sample=False, pad_token_id=pad, **kwargs,
    )  # fmt: skip
    results = []
    for r, (k, token) in enumerate(branches):
        continuation = [token, *out[r, longest + 1 :].tolist()][: max(end - k, 1)]
        results.append(_until_eos(model, continuation))
    return results


def _branch_cache(model: PreTrainedModel, prefix: torch.Tensor, lengths: list[int]) -> DynamicCache:
    """The KV cache of `prefix`, cut to each row's length and left-padded to the longest."""
    full = _cache_of(model(input_ids=prefix[None].to(model.device), use_cache=True))
    longest = len(prefix)
    layers = []
    for layer in full.layers:
        keys = layer.keys.new_zeros((len(lengths), *layer.keys.shape[1:]))
        values = layer.values.new_zeros((len(lengths), *layer.values.shape[1:]))
        for r, k in enumerate(lengths):
            keys[r, :, longest - k :] = layer.keys[0, :, :k]
            values[r, :, longest - k :] = layer.values[0, :, :k]
        layers.append((keys, values))
    return DynamicCache(layers)


def pad_id(model: PreTrainedModel) -> int | None:
    """The padding id generation uses: the pad token, else the (first) end-of-sequence token."""
    config = model.generation_config
    if config.pad_token_id is not None:
        return config.pad_token_id
    eos = config.eos_token_id
    return eos[0] if isinstance(eos, list) else eos


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
